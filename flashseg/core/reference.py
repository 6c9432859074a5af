"""Plain reference inference: whole arrays, natural-log space, unchunked.

This is the "obviously correct" implementation of SPEC §2–3 that the fast
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

Segment emission sums are accumulated directly (a cumulative sum running
away from one fixed end), never as differences of prefix sums: a ``-inf``
emission would turn such a difference into NaN.
"""
from __future__ import annotations

import numpy as np

from ..errors import NoValidSegmentation
from .model import SemiMarkovModel

__all__ = [
    "forward", "backward", "log_partition", "posteriors", "segment_posterior",
    "run_posterior", "viterbi", "posterior_decode", "sample", "duration_table",
]


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) along ``axis``; all ``-inf`` or empty gives ``-inf`` (no NaN)."""
    if a.shape[axis] == 0:
        return np.full(np.delete(a.shape, axis), -np.inf)[()]
    m = np.max(a, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
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
    """``phi[d, c]`` for ``d = 0..T`` (row 0 is ``-inf``: no empty segments)."""
    phi = np.full((T + 1, model.n_labels), -np.inf)
    for d in range(1, T + 1):
        phi[d] = model.log_duration(d)
    return phi


def _no_valid() -> NoValidSegmentation:
    return NoValidSegmentation("no segmentation has positive probability under the model")


def forward(model: SemiMarkovModel, x) -> tuple[np.ndarray, np.ndarray]:
    """Forward messages ``(E, A)``, each ``(T + 1, C)`` (see module docstring)."""
    x = _check(model, x)
    T, C = x.shape
    phi = duration_table(model, T)
    E = np.full((T + 1, C), -np.inf)
    A = np.full((T + 1, C), -np.inf)
    E[0] = model.initial
    for t in range(1, T + 1):
        # sums[d - 1] = x[t - d : t].sum(axis=0), accumulated right to left
        sums = np.cumsum(x[t - 1::-1], axis=0)
        starts = t - np.arange(1, t + 1)
        A[t] = _lse(E[starts] + sums + phi[1:t + 1], axis=0)
        E[t] = _lse(A[t][:, None] + model.transition, axis=0)
    return E, A


def backward(model: SemiMarkovModel, x) -> tuple[np.ndarray, np.ndarray]:
    """Backward messages ``(B, G)``, each ``(T + 1, C)`` (see module docstring)."""
    x = _check(model, x)
    T, C = x.shape
    phi = duration_table(model, T)
    B = np.full((T + 1, C), -np.inf)
    G = np.full((T + 1, C), -np.inf)
    B[T] = model.final
    for s in range(T - 1, -1, -1):
        # sums[d - 1] = x[s : s + d].sum(axis=0), accumulated left to right
        sums = np.cumsum(x[s:], axis=0)
        ends = s + np.arange(1, T - s + 1)
        G[s] = _lse(sums + phi[1:T - s + 1] + B[ends], axis=0)
        B[s] = _lse(model.transition + G[s][None, :], axis=1)
    return B, G


def _logz_from(model, A) -> float:
    return float(_lse(A[-1] + model.final, axis=0))


def log_partition(model: SemiMarkovModel, x) -> float:
    """logZ; raises :class:`NoValidSegmentation` when every path is forbidden."""
    _, A = forward(model, x)
    logz = _logz_from(model, A)
    if logz == -np.inf:
        raise _no_valid()
    return logz


def _messages(model, x):
    x = _check(model, x)
    E, A = forward(model, x)
    B, G = backward(model, x)
    logz = _logz_from(model, A)
    if logz == -np.inf:
        raise _no_valid()
    return x, E, A, B, G, logz


def posteriors(model: SemiMarkovModel, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gamma (T, C), boundary (T,), change (T,))`` per SPEC §3.

    ``boundary[0] = change[0] = 1``: the contig start is a boundary.
    """
    x, E, A, B, G, logz = _messages(model, x)
    T, C = x.shape
    with np.errstate(under="ignore"):
        p_start = np.exp(E[:T] + G[:T] - logz)      # segment of label c starts at s = 0..T-1
        p_end = np.exp(A[1:] + B[1:] - logz)        # segment of label c ends at e = 1..T
        # bin i is covered by c iff a c-segment started at s <= i and none ended at e <= i
        ended_by = np.vstack([np.zeros((1, C)), np.cumsum(p_end[:T - 1], axis=0)])
        gamma = np.cumsum(p_start, axis=0) - ended_by
        boundary = p_start.sum(axis=1)
        switch = np.where(np.eye(C, dtype=bool), -np.inf, model.transition)
        change = np.empty(T)
        for i in range(1, T):
            change[i] = np.exp(A[i][:, None] + switch + G[i][None, :] - logz).sum()
    boundary[0] = 1.0
    change[0] = 1.0
    return gamma, boundary, change


def _check_segment(s, e, c, T, C):
    if not (0 <= s < e <= T and 0 <= c < C):
        raise ValueError(f"segment ({s}, {e}, {c}) outside 0 <= s < e <= {T}, 0 <= c < {C}")


def segment_posterior(model: SemiMarkovModel, x, segments) -> np.ndarray:
    """P(segment ``(s, e, c)`` is one of the path's segments), for each triple."""
    x, E, A, B, G, logz = _messages(model, x)
    T, C = x.shape
    out = np.empty(len(segments))
    for k, (s, e, c) in enumerate(segments):
        _check_segment(s, e, c, T, C)
        score = E[s, c] + np.sum(x[s:e, c]) + model.log_duration(e - s)[c] + B[e, c]
        out[k] = np.exp(score - logz)
    return out


def _run_inner(model: SemiMarkovModel, xc: np.ndarray, c: int) -> float:
    """log sum over ways to cut one run of label c (emissions ``xc``) into
    c-segments joined by ``trans[c, c]``: a one-label semi-Markov forward."""
    n = len(xc)
    phi = np.array([-np.inf] + [model.log_duration(d)[c] for d in range(1, n + 1)])
    stay = model.transition[c, c]
    enter = np.full(n + 1, -np.inf)     # a c-segment starts at u (relative), u = 0..n
    end = np.full(n + 1, -np.inf)       # a c-segment ends at u
    enter[0] = 0.0
    for u in range(1, n + 1):
        sums = np.cumsum(xc[u - 1::-1])
        starts = u - np.arange(1, u + 1)
        end[u] = _lse(enter[starts] + sums + phi[1:u + 1], axis=0)
        enter[u] = end[u] + stay
    return float(end[n])


def run_posterior(model: SemiMarkovModel, x, runs) -> np.ndarray:
    """P(label changes at s and at e, and every bin of [s, e) has label c)
    for each merged run ``(s, e, c)``; contig ends count as changes."""
    x, E, A, B, G, logz = _messages(model, x)
    T, C = x.shape
    out = np.empty(len(runs))
    for k, (s, e, c) in enumerate(runs):
        _check_segment(s, e, c, T, C)
        others = np.arange(C) != c
        if s == 0:
            ein = model.initial[c]
        else:
            ein = _lse(A[s, others] + model.transition[others, c], axis=0)
        if e == T:
            bout = model.final[c]
        else:
            bout = _lse(model.transition[c, others] + G[e, others], axis=0)
        inner = _run_inner(model, x[s:e, c], c)
        out[k] = np.exp(ein + inner + bout - logz)
    return out


def viterbi(model: SemiMarkovModel, x) -> tuple[float, list[tuple[int, int, int]]]:
    """MAP score and segments ``(s, e, c)`` in ascending order.

    Exact ties, traced back from the contig end: lowest label at the end,
    shortest duration at a segment's end, lowest previous label at its start.
    """
    x = _check(model, x)
    T, C = x.shape
    phi = duration_table(model, T)
    VE = np.full((T + 1, C), -np.inf)
    VA = np.full((T + 1, C), -np.inf)
    best_d = np.zeros((T + 1, C), dtype=np.int64)
    best_prev = np.zeros((T + 1, C), dtype=np.int64)
    VE[0] = model.initial
    for t in range(1, T + 1):
        sums = np.cumsum(x[t - 1::-1], axis=0)
        starts = t - np.arange(1, t + 1)
        terms = VE[starts] + sums + phi[1:t + 1]       # row d - 1: duration d
        best_d[t] = np.argmax(terms, axis=0) + 1        # first maximum = shortest d
        VA[t] = np.max(terms, axis=0)
        into = VA[t][:, None] + model.transition        # row = previous label
        best_prev[t] = np.argmax(into, axis=0)          # first maximum = lowest label
        VE[t] = np.max(into, axis=0)
    last = VA[T] + model.final
    c = int(np.argmax(last))
    score = float(last[c])
    if score == -np.inf:
        raise _no_valid()
    segments = []
    e = T
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
    w = np.exp(logw - np.max(logw))
    cdf = np.cumsum(w)
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def sample(model: SemiMarkovModel, x, n: int,
           rng: np.random.Generator) -> list[list[tuple[int, int, int]]]:
    """``n`` segmentations drawn exactly from P (forward filtering, backward
    sampling), each a list of ``(s, e, c)`` in ascending order."""
    x = _check(model, x)
    T, C = x.shape
    E, A = forward(model, x)
    if _logz_from(model, A) == -np.inf:
        raise _no_valid()
    phi = duration_table(model, T)
    out = []
    for _ in range(n):
        segments = []
        c = _draw(rng, A[T] + model.final)
        e = T
        while e > 0:
            # terms of A[e, c] over starts s = e-1 down to 0 (duration d = e - s)
            sums = np.cumsum(x[e - 1::-1, c])
            starts = e - np.arange(1, e + 1)
            s = int(starts[_draw(rng, E[starts, c] + sums + phi[1:e + 1, c])])
            segments.append((s, e, c))
            if s > 0:
                c = _draw(rng, A[s] + model.transition[:, c])
            e = s
        segments.reverse()
        out.append(segments)
    return out
