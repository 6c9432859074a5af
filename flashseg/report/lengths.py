"""The segment-length law a model implies, to set against the lengths of the calls (docs/report.md).

Reuses the core's duration law exactly as inference uses it
(:meth:`flashseg.core.model.SemiMarkovModel.log_duration`: the table for
``d <= K`` and its geometric tail beyond), normalised over table and tail.

Calls that are maximal runs of a label (a plain HMM's runs, ``--merge-adjacent``,
ChromHMM's segments) join every segment that a self-transition continues,
so their lengths follow the *run* law: with ``a`` the label's
self-transition probability and ``p`` its duration law, a run is ``n``
segments with ``P(n) = (1 - a) a^(n - 1)``, i.e.::

    R(d) = (1 - a) p(d) + a * sum_{k=1}^{d-1} p(k) R(d - k)

which is ``p`` itself when ``a = 0`` (and a geometric law for a plain HMM).
"""
from __future__ import annotations

import numpy as np


def duration_pmf(model, max_length: int) -> np.ndarray:
    """(max_length, C) P(d) for d = 1..max_length of each label's duration law, tail included."""
    K = model.max_duration
    d = np.arange(1, int(max_length) + 1)
    log_rho = model.tail_or_none()
    table = model.duration
    with np.errstate(invalid="ignore"):
        log_p = np.where((d <= K)[:, None], table[np.minimum(d, K) - 1],
                         table[K - 1][None, :] + (d - K)[:, None] * log_rho[None, :])
    top = np.max(table, axis=0)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rho = np.exp(log_rho)
        weights = np.exp(table - shift)
        mass = weights.sum(axis=0) + np.where(rho > 0, weights[K - 1] * rho / (1 - rho), 0.0)
        out = np.exp(log_p - shift) / mass
    return np.where(np.isfinite(out), out, 0.0)


def self_transition(model) -> np.ndarray:
    """(C,) probability that a segment of a label is followed by another of the same label."""
    transition = np.exp(model.transition)
    rows = transition.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(rows > 0, np.diag(transition) / np.where(rows > 0, rows, 1.0), 0.0)
    return np.clip(a, 0.0, 1.0)


def run_pmf(model, max_length: int) -> np.ndarray:
    """(max_length, C) P(run length = d) for d = 1..max_length (see the module doc)."""
    p = duration_pmf(model, max_length)
    a = self_transition(model)
    out = p * (1.0 - a)
    D = int(max_length)
    for c in np.flatnonzero(a > 0):
        r = out[:, c]
        pc = p[:, c]
        for i in range(1, D):           # r[i] is d = i + 1; its sum runs over k = 1..d-1
            r[i] += a[c] * np.dot(pc[:i], r[i - 1::-1])
    return out
