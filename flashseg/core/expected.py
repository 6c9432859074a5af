"""Expected sufficient statistics of a contig under the posterior
(docs/algorithms.md, "Expected counts"): what EM's M-step needs, and the
exact gradient of log Z with respect to the model's log scores.

For a model with log scores init, trans, phi (durations) and emissions x,

    d log Z / d init[c]        = initial[c]        expected first labels
    d log Z / d trans[c, c2]   = transitions[c, c2] expected c -> c2 boundaries
    d log Z / d phi_c(d)       = durations[d-1, c]  expected label-c segments of d <= K bins
    d log Z / d x[t, c]        = gamma[t, c]        (per bin, to the consumer)

and for the geometric tail, ``tail_segments[c]`` (expected label-c segments
longer than K) and ``tail_excess[c]`` (their expected total length beyond
K), so that d log Z / d log rho_c = tail_excess[c].

:class:`ExpectedCountsTracker` is fed by the emit pass like the segment
trackers (the forward and backward rows of every chunk, in order), keeps
O(K C) state between chunks and adds each term once, in the order of the
boundaries, so chunk sizes change nothing beyond rounding. Its terms are
posteriors of events, so the fast path's certificate bounds each of them
as it bounds gamma (an expected count over T boundaries by T times it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ExpectedCounts:
    """Expected counts of one or more contigs (sums over contigs add)."""

    log_partition: float
    initial: np.ndarray          # (C,)
    transitions: np.ndarray      # (C, C) row = from
    durations: np.ndarray        # (K, C) durations[d - 1, c]
    tail_segments: np.ndarray    # (C,)
    tail_excess: np.ndarray      # (C,)
    n_bins: int = 0

    @classmethod
    def zeros(cls, K: int, C: int) -> "ExpectedCounts":
        return cls(0.0, np.zeros(C), np.zeros((C, C)), np.zeros((K, C)), np.zeros(C), np.zeros(C), 0)

    def __add__(self, other: "ExpectedCounts") -> "ExpectedCounts":
        return ExpectedCounts(self.log_partition + other.log_partition, self.initial + other.initial,
                              self.transitions + other.transitions, self.durations + other.durations,
                              self.tail_segments + other.tail_segments, self.tail_excess + other.tail_excess,
                              self.n_bins + other.n_bins)

    @property
    def segments(self) -> np.ndarray:
        """(C,) expected segments per label."""
        return self.durations.sum(axis=0) + self.tail_segments


def _rows(store, rows):
    """A store's first ``rows`` rows with its offsets removed: (log mantissas of E,
    linear mantissas of E or None, A, integer exponents), where true log value =
    log mantissa + exponent * ln 2. A is linear on the fast path's linear stores
    (the kernel multiplies mantissas there) and logs on log-space stores."""
    k, r = store.log_offset
    exps = np.ascontiguousarray(store.sexp[:rows] - k, dtype=np.int64)
    E, A = store.E[:rows], store.A[:rows]
    if store.is_log:
        return np.ascontiguousarray(E - r), None, np.ascontiguousarray(A - r), exps
    if r:
        E, A = E * math.exp(-r), A * math.exp(-r)
    with np.errstate(divide="ignore"):
        log_e = np.log(E)
    return log_e, np.ascontiguousarray(E), np.ascontiguousarray(A), exps


class _Snapshot:
    """A copy of the first rows of a pass's store (what _rows reads)."""

    def __init__(self, store, rows):
        self.E = store.E[:rows].copy()
        self.A = store.A[:rows].copy()
        self.sexp = store.sexp[:rows].copy()
        self.log_offset = store.log_offset
        self.is_log = store.is_log


class ExpectedCountsTracker:
    """Accumulates :class:`ExpectedCounts` over the emit pass of one contig."""

    def __init__(self, pm, T: int):
        self.pm = pm
        self.T = int(T)
        K, C = pm.K, pm.C
        self.phi = np.ascontiguousarray(pm.model.duration)
        self.ring = np.full((K + 1, C), -np.inf)
        self.ring_exp = np.zeros(K + 1, dtype=np.int64)
        self.mirror = np.zeros((C, 2 * (K + 1)))   # each entry twice: K in a row from any start
        self.ref = np.full(C, -np.inf)
        self.tail_ref = np.full(C, -np.inf)
        self.tail_u = np.zeros(C)
        self.tail_v = np.zeros(C)
        self.tail_exp = np.zeros(C, dtype=np.int64)
        self.counts = ExpectedCounts.zeros(K, C)
        # an HMM (one-bin segments, no tail) needs none of the carried state
        self.hmm = K == 1 and not np.isfinite(pm.lrho).any()
        self._z = None

    def begin(self, log_z: float, zm: float, zexp: int) -> None:
        self._z = (math.log(zm), int(zexp))

    def feed(self, a, b, x, gamma, boundary, change, fstore, bstore):
        self.accumulate(a, b, x, fstore, bstore)

    def prepare(self, a, b, x, fstore, bstore):
        """What :meth:`accumulate` takes for this chunk, none of it a view of the
        pass's buffers (which the next chunk's rows overwrite), so that it can run
        on another thread. Only copies: the conversions run in accumulate."""
        rows = b - a + (1 if b == self.T else 0)
        return a, b, np.array(x, dtype=np.float64), _Snapshot(fstore, rows), _Snapshot(bstore, rows)

    def accumulate(self, a, b, x, fstore, bstore):
        """Add one chunk's terms (chunks in order), from the pass's stores or snapshots of them."""
        from . import expected_kernels

        rows = b - a + (1 if b == self.T else 0)
        linear = not fstore.is_log
        x = np.ascontiguousarray(x, dtype=np.float64)
        c = self.counts
        if linear and self.hmm:
            # the stores' scale offsets go into one factor per chunk (every term is
            # a forward value times a backward one), not into scaled copies of the rows
            (kf, rf), (kb, rb) = fstore.log_offset, bstore.log_offset
            xf = np.ascontiguousarray(fstore.sexp[:rows] - kf, dtype=np.int64)
            xb = np.ascontiguousarray(bstore.sexp[:rows] - kb, dtype=np.int64)
            expected_kernels.expected_chunk_hmm(
                a, rows, self.T, np.ascontiguousarray(fstore.E[:rows]), xf, np.ascontiguousarray(fstore.A[:rows]),
                np.ascontiguousarray(bstore.E[:rows]), np.ascontiguousarray(bstore.A[:rows]), xb, self.pm.trans,
                self._z[0] + rf + rb, self._z[1], c.initial, c.transitions, c.durations)
            return
        lE, _, A, xf = _rows(fstore, rows)
        lB, mB, G, xb = _rows(bstore, rows)   # the backward store's E is B, its A is G
        unused = np.zeros((0, 0))
        if linear:
            mA, mG, lA, lG = A, G, unused, unused
        else:
            mA, mB, mG, lA, lG = unused, unused, unused, A, G
        expected_kernels.expected_chunk(
            x, a, rows, self.T, lE, lA, xf, lB, lG, xb,
            linear, mA, mB, mG, self.phi, self.pm.lrho, self.pm.trans, self._z[0], self._z[1],
            self.ring, self.ring_exp, self.mirror, self.ref, self.tail_ref, self.tail_u, self.tail_v, self.tail_exp,
            c.initial, c.transitions, c.durations, c.tail_segments, c.tail_excess)

    def finish(self, log_z, zm, zexp):
        self.counts.log_partition = float(log_z)
        self.counts.n_bins = self.T
