"""Plain reference inference: whole arrays, natural-log space, unchunked.

This is the "obviously correct" implementation of docs/algorithms.md, "Recursions", that the fast
kernels are tested against. It enumerates every duration explicitly (the
geometric tail enters only through ``phi_c(d)`` for ``d > K``, never through
a tail accumulator), so it shares no recursion trick with the kernels.
Cost is O(T^2 C) time and O(T C) memory: fine for tests, never for genomes.

Conventions (all arrays natural log, ``-inf`` = impossible):

* ``E[t, c]``: log total score of every prefix ``[0, t)`` followed by the
  start of a label-``c`` segment at ``t`` (transition into ``c`` paid;
  ``E[0] = initial``). Row ``T`` is computed by the same formula.
* ``A[t, c]``: log total score of every prefix ``[0, t)`` whose last segment
  has label ``c`` and ends at ``t``. ``A[0] = -inf``.
* ``B[e, c]``: log total score of everything after a label-``c`` segment
  ending at ``e`` (``B[T] = final``). Row ``0`` is computed by the same
  formula.
* ``G[s, c]``: log total score of a label-``c`` segment starting at ``s`` and
  everything after it. ``G[T] = -inf``.

Segment emission sums are accumulated directly (each bin is added to the
running sum of every open segment), never as differences of prefix sums: a
``-inf`` emission would turn such a difference into NaN.

Everything is computed in ``np.longdouble`` (80-bit extended on x86-64
Linux, where the tests run) and returned as float64. A reference in plain
float64 carries one ulp of |logZ| into every posterior (``exp(E + G -
logZ)``), and the running sum that gives gamma random-walks those errors:
1e-10 after 5000 bins at logZ ~ 6000, the size of the tolerance the kernels
are held to. The wider mantissa keeps the reference well below that. On a
platform where longdouble is float64 the results are just float64-accurate.
"""
from __future__ import annotations

import numpy as np

from ..errors import NoValidSegmentation
from .model import SemiMarkovModel

__all__ = [
    "forward", "backward", "log_partition", "posteriors", "segment_posterior",
    "run_posterior", "viterbi", "posterior_decode", "sample", "duration_table",
]


_WORK = np.longdouble   # working precision (see the module docstring)


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) along ``axis``; all ``-inf`` or empty gives ``-inf`` (no NaN)."""
    if a.shape[axis] == 0:
        return np.full(np.delete(a.shape, axis), -np.inf, dtype=a.dtype)[()]
    m = np.max(a, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0).astype(a.dtype)
    with np.errstate(divide="ignore", under="ignore"):
        out = np.log(np.sum(np.exp(a - shift), axis=axis, keepdims=True)) + shift
    return np.squeeze(out, axis=axis)


def _check(model: SemiMarkovModel, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != model.n_labels:
        raise ValueError(f"emissions: expected shape (T, {model.n_labels}), got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError("emissions: need at least one bin")
    if np.isnan(x).any():
        raise ValueError("emissions: contain NaN")
    if np.isposinf(x).any():
        raise ValueError("emissions: contain +inf")
    return x


def duration_table(model: SemiMarkovModel, T: int) -> np.ndarray:
    """``phi[d, c]`` for ``d = 0..T`` (row 0 is ``-inf``: no empty segments), float64."""
    phi = np.full((T + 1, model.n_labels), -np.inf)
    for d in range(1, T + 1):
        phi[d] = model.log_duration(d)
    return phi


def _no_valid() -> NoValidSegmentation:
    return NoValidSegmentation("no segmentation has positive probability under the model")


class _Work:
    """The model's arrays and the emissions in working precision."""

    def __init__(self, model: SemiMarkovModel, x):
        x = _check(model, x)
        self.T, self.C = x.shape
        self.x = x.astype(_WORK)
        self.phi = duration_table(model, self.T).astype(_WORK)
        self.trans = model.transition.astype(_WORK)
        self.initial = model.initial.astype(_WORK)
        self.final = model.final.astype(_WORK)


def _lse_rows_inplace(buf: np.ndarray) -> np.ndarray:
    """log-sum-exp of each row of ``buf`` (C, n), overwriting ``buf``."""
    m = buf.max(axis=1)
    shift = np.where(np.isfinite(m), m, 0.0).astype(buf.dtype)
    buf -= shift[:, None]
    with np.errstate(divide="ignore", under="ignore"):
        np.exp(buf, out=buf)
        return np.log(buf.sum(axis=1)) + shift


def _forward(w: _Work, viterbi: bool = False):
    """(E, A) in working precision, each (T + 1, C). With ``viterbi``, max
    instead of log-sum-exp, plus the argmax tables (shortest duration,
    lowest previous label). Internally label-major (C, T) so that the sums
    over starts run along contiguous memory."""
    T, C = w.T, w.C
    E = np.full((C, T + 1), -np.inf, dtype=_WORK)
    A = np.full((C, T + 1), -np.inf, dtype=_WORK)
    E[:, 0] = w.initial
    best_d = np.zeros((T + 1, C), dtype=np.int64)
    best_prev = np.zeros((T + 1, C), dtype=np.int64)
    x = np.ascontiguousarray(w.x.T)
    phi_rev = np.ascontiguousarray(w.phi.T[:, ::-1])   # phi_rev[:, T - d] = phi(d)
    open_sum = np.zeros((C, T), dtype=_WORK)           # open_sum[:, s] = x[s:t].sum, s < t
    buf = np.empty((C, T), dtype=_WORK)
    for t in range(1, T + 1):
        open_sum[:, :t] += x[:, t - 1:t]                # add the bin to every open segment
        terms = buf[:, :t]                              # column s: start s, duration t - s
        np.add(E[:, :t], open_sum[:, :t], out=terms)
        terms += phi_rev[:, T - t:T]
        if viterbi:
            by_duration = terms[:, ::-1]                # column d - 1: duration d
            best_d[t] = np.argmax(by_duration, axis=1) + 1   # first maximum = shortest
            A[:, t] = np.max(terms, axis=1)
            into = A[:, t][:, None] + w.trans           # row = previous label
            best_prev[t] = np.argmax(into, axis=0)      # first maximum = lowest label
            E[:, t] = np.max(into, axis=0)
        else:
            A[:, t] = _lse_rows_inplace(terms)
            E[:, t] = _lse(A[:, t][:, None] + w.trans, axis=0)
    if viterbi:
        return E.T, A.T, best_d, best_prev
    return E.T, A.T


def _backward(w: _Work):
    """(B, G) in working precision, each (T + 1, C); label-major inside."""
    T, C = w.T, w.C
    B = np.full((C, T + 1), -np.inf, dtype=_WORK)
    G = np.full((C, T + 1), -np.inf, dtype=_WORK)
    B[:, T] = w.final
    x = np.ascontiguousarray(w.x.T)
    phi = np.ascontiguousarray(w.phi.T)
    open_sum = np.zeros((C, T + 1), dtype=_WORK)       # open_sum[:, e] = x[s:e].sum, e > s
    buf = np.empty((C, T), dtype=_WORK)
    for s in range(T - 1, -1, -1):
        open_sum[:, s + 1:] += x[:, s:s + 1]
        terms = buf[:, :T - s]                          # column d - 1: end e = s + d
        np.add(open_sum[:, s + 1:], phi[:, 1:T - s + 1], out=terms)
        terms += B[:, s + 1:]
        G[:, s] = _lse_rows_inplace(terms)
        B[:, s] = _lse(w.trans + G[:, s][None, :], axis=1)
    return B.T, G.T


def forward(model: SemiMarkovModel, x) -> tuple[np.ndarray, np.ndarray]:
    """Forward messages ``(E, A)``, each ``(T + 1, C)`` float64 (module docstring)."""
    E, A = _forward(_Work(model, x))
    return E.astype(np.float64), A.astype(np.float64)


def backward(model: SemiMarkovModel, x) -> tuple[np.ndarray, np.ndarray]:
    """Backward messages ``(B, G)``, each ``(T + 1, C)`` float64 (module docstring)."""
    B, G = _backward(_Work(model, x))
    return B.astype(np.float64), G.astype(np.float64)


def _logz(w: _Work, A) -> np.floating:
    logz = _lse(A[-1] + w.final, axis=0)
    if logz == -np.inf:
        raise _no_valid()
    return logz


def log_partition(model: SemiMarkovModel, x) -> float:
    """logZ; raises :class:`NoValidSegmentation` when every path is forbidden."""
    w = _Work(model, x)
    _, A = _forward(w)
    return float(_logz(w, A))


def _messages(model, x):
    w = _Work(model, x)
    E, A = _forward(w)
    logz = _logz(w, A)
    B, G = _backward(w)
    return w, E, A, B, G, logz


def posteriors(model: SemiMarkovModel, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gamma (T, C), boundary (T,), change (T,))`` (docs/algorithms.md, "Notation"), float64.

    ``boundary[0] = change[0] = 1``: the contig start is a boundary.
    """
    w, E, A, B, G, logz = _messages(model, x)
    T, C = w.T, w.C
    with np.errstate(under="ignore"):
        p_start = np.exp(E[:T] + G[:T] - logz)      # a label-c segment starts at s = 0..T-1
        p_end = np.exp(A[1:] + B[1:] - logz)        # a label-c segment ends at e = 1..T
        # bin i lies in a c-segment iff one started at s <= i and has not ended at e <= i
        ended_by = np.vstack([np.zeros((1, C), dtype=_WORK), np.cumsum(p_end[:T - 1], axis=0)])
        gamma = np.cumsum(p_start, axis=0) - ended_by
        boundary = p_start.sum(axis=1)
        # label c' ends at i and a different label c starts there
        switch = np.where(np.eye(C, dtype=bool), -np.inf, w.trans)
        change = np.ones(T, dtype=_WORK)
        change[1:] = np.exp(A[1:T, :, None] + switch[None] + G[1:T, None, :] - logz).sum(axis=(1, 2))
    boundary[0] = 1.0
    return gamma.astype(np.float64), boundary.astype(np.float64), change.astype(np.float64)


def _check_segment(s, e, c, T, C):
    if not (0 <= s < e <= T and 0 <= c < C):
        raise ValueError(f"segment ({s}, {e}, {c}) outside 0 <= s < e <= {T}, 0 <= c < {C}")


def segment_posterior(model: SemiMarkovModel, x, segments) -> np.ndarray:
    """P(segment ``(s, e, c)`` is one of the path's segments), for each triple."""
    w, E, A, B, G, logz = _messages(model, x)
    out = np.empty(len(segments))
    for k, (s, e, c) in enumerate(segments):
        _check_segment(s, e, c, w.T, w.C)
        score = E[s, c] + np.sum(w.x[s:e, c]) + w.phi[e - s, c] + B[e, c]
        out[k] = np.exp(score - logz)
    return out


def _run_inner(w: _Work, s: int, e: int, c: int):
    """log sum over ways to cut the run [s, e) of label c into c-segments
    joined by ``trans[c, c]``: a one-label semi-Markov forward over the run."""
    n = e - s
    stay = w.trans[c, c]
    enter = np.full(n + 1, -np.inf, dtype=_WORK)    # a c-segment starts at s + u
    end = np.full(n + 1, -np.inf, dtype=_WORK)      # a c-segment ends at s + u
    enter[0] = 0.0
    open_sum = np.zeros(n, dtype=_WORK)
    for u in range(1, n + 1):
        open_sum[:u] += w.x[s + u - 1, c]
        end[u] = _lse(enter[:u] + open_sum[:u] + w.phi[u:0:-1, c], axis=0)
        enter[u] = end[u] + stay
    return end[n]


def run_posterior(model: SemiMarkovModel, x, runs) -> np.ndarray:
    """P(label changes at s and at e, and every bin of [s, e) has label c)
    for each merged run ``(s, e, c)``; contig ends count as changes."""
    w, E, A, B, G, logz = _messages(model, x)
    T, C = w.T, w.C
    out = np.empty(len(runs))
    for k, (s, e, c) in enumerate(runs):
        _check_segment(s, e, c, T, C)
        others = np.arange(C) != c
        if s == 0:
            ein = w.initial[c]
        else:   # enter c from a different label
            ein = _lse(A[s, others] + w.trans[others, c], axis=0)
        if e == T:
            bout = w.final[c]
        else:   # leave c for a different label
            bout = _lse(w.trans[c, others] + G[e, others], axis=0)
        out[k] = np.exp(ein + _run_inner(w, s, e, c) + bout - logz)
    return out


def viterbi(model: SemiMarkovModel, x) -> tuple[float, list[tuple[int, int, int]]]:
    """MAP score and segments ``(s, e, c)`` in ascending order.

    Exact ties, traced back from the contig end: lowest label at the end,
    shortest duration at a segment's end, lowest previous label at its start.
    """
    w = _Work(model, x)
    _, A, best_d, best_prev = _forward(w, viterbi=True)
    last = A[w.T] + w.final
    c = int(np.argmax(last))                     # first maximum = lowest label
    score = float(last[c])
    if score == -np.inf:
        raise _no_valid()
    segments = []
    e = w.T
    while e > 0:
        s = e - int(best_d[e, c])
        segments.append((s, e, c))
        if s > 0:
            c = int(best_prev[s, c])
        e = s
    segments.reverse()
    return score, segments


def _runs_of(labels: np.ndarray) -> list[tuple[int, int, int]]:
    out = []
    s = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[s]:
            out.append((s, i, int(labels[s])))
            s = i
    return out


def posterior_decode(model: SemiMarkovModel, x) -> list[tuple[int, int, int]]:
    """Per-bin argmax of gamma (ties: lowest label), runs merged into segments."""
    gamma, _, _ = posteriors(model, x)
    return _runs_of(np.argmax(gamma, axis=1))


def _draw(rng: np.random.Generator, logw: np.ndarray) -> int:
    """Index k with probability proportional to exp(logw[k]); never a -inf one."""
    with np.errstate(under="ignore"):
        weights = np.exp((logw - np.max(logw)).astype(np.float64))
    cdf = np.cumsum(weights)
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def sample(model: SemiMarkovModel, x, n: int,
           rng: np.random.Generator) -> list[list[tuple[int, int, int]]]:
    """``n`` segmentations drawn exactly from P (forward filtering, backward
    sampling), each a list of ``(s, e, c)`` in ascending order."""
    w = _Work(model, x)
    E, A = _forward(w)
    _logz(w, A)
    # label-major copies: every draw reads one label's row
    E_by_label = np.ascontiguousarray(E.T)
    x_by_label = np.ascontiguousarray(w.x.T)
    phi_rev = np.ascontiguousarray(w.phi.T[:, ::-1])   # phi_rev[:, T - d] = phi(d)
    T = w.T
    out = []
    for _ in range(n):
        segments = []
        c = _draw(rng, A[T] + w.final)
        e = T
        while e > 0:
            # the terms of A[e, c]: start s = 0..e-1, duration e - s
            sums = np.cumsum(x_by_label[c, e - 1::-1])[::-1]    # sums[s] = x[s:e, c].sum()
            s = _draw(rng, E_by_label[c, :e] + sums + phi_rev[c, T - e:T])
            segments.append((s, e, c))
            if s > 0:
                c = _draw(rng, A[s] + w.trans[:, c])     # the terms of E[s, c]
            e = s
        segments.reverse()
        out.append(segments)
    return out
