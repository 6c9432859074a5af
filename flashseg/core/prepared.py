"""The model's arrays in the layouts the kernels read, for one orientation
(the backward pass reads the reversed model's). Both backends start from
these; the driver's trackers and sampler read them too.
"""
from __future__ import annotations

import numpy as np

from .model import SemiMarkovModel
from .numeric import LINEAR_MAX_MODEL_SCORE, LINEAR_MIN_LOG_WEIGHT, scaled_exp


class PreparedModel:
    """Model arrays in the layouts the kernels read (one orientation)."""

    def __init__(self, model: SemiMarkovModel):
        self.model = model
        K, C = model.duration.shape
        self.K, self.C = K, C
        phi = model.duration.T.copy()                          # (C, K), phi[c, d-1]
        m_idx = (np.arange(2 * K) - 1) % K
        self.phicirc = np.ascontiguousarray(phi[:, m_idx])     # (C, 2K)
        self.phiK = np.ascontiguousarray(phi[:, K - 1])
        self.lrho = np.ascontiguousarray(model.tail_or_none())
        self.trans = np.ascontiguousarray(model.transition)
        self.initial = model.initial
        self.final = model.final

        scores = np.concatenate([model.duration.ravel(), model.transition.ravel(),
                                 model.initial, model.final, self.lrho])
        finite = scores[np.isfinite(scores)]
        self.linear_ok = bool(finite.size == 0 or finite.max() <= LINEAR_MAX_MODEL_SCORE)

        def lin(v):
            out = np.exp(v)
            out[v < LINEAR_MIN_LOG_WEIGHT] = 0.0
            return out

        w = lin(phi)
        self.wcirc = np.ascontiguousarray(w[:, m_idx])
        self.wpos = np.ascontiguousarray(np.isfinite(phi)[:, m_idx])
        self.wK = np.ascontiguousarray(w[:, K - 1])
        self.phiK_finite = np.isfinite(self.phiK)
        self.rho = np.where(np.isfinite(self.lrho), np.exp(self.lrho), 0.0)
        self.Tr = np.ascontiguousarray(lin(model.transition))
        self.TrT = np.ascontiguousarray(self.Tr.T)   # column reads made contiguous
        self.trpos = np.ascontiguousarray(np.isfinite(model.transition))
        # An upper bound of every transition weight, none lost to underflow: the
        # certificate bounds how losses spread with it (kept off zero where finite).
        with np.errstate(under="ignore"):
            self.tr_up = np.ascontiguousarray(np.where(np.isfinite(model.transition),
                                                       np.maximum(np.exp(model.transition), 1e-300), 0.0))
        # Bound on how much any duration weight can multiply a lost value.
        wmax = np.where(np.isfinite(phi), phi, -np.inf).max(axis=1)
        self.max_weight = np.maximum(1.0, np.exp(np.minimum(wmax, 700.0)))
        self.init_m, self.init_k = scaled_exp(model.initial)
        self.final_m, self.final_k = scaled_exp(model.final)
