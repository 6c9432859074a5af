"""Compiled host-side steps the chunk driver runs whatever the backend (numba):
the emission factors of a chunk, the Viterbi traceback through argmax
pointers, and the inner weights of merged runs.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .numeric import LN2, LN2_HI, LN2_LO


@njit(nogil=True, cache=True)
def boundary_scale(inv_zm, k):
    """A boundary's factor 2**k / zm as (left, right) with left * right = 2**k / zm.
    Mantissas may sit far below their boundary's scale (down to FLOOR): when the
    exponent is large, it is split between the two factors so that neither a
    forward mantissa times ``left`` nor the product leaves the double range."""
    k_left = k // 2 if k > 900 else 0
    return math.ldexp(1.0, k_left), math.ldexp(inv_zm, k - k_left)


@njit(nogil=True, cache=True)
def _logaddexp(a, b):
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@njit(nogil=True, cache=True)
def emission_factors(x, f, kexp):
    """f = exp(x - k ln 2) with k = round(max_c x / ln 2) per bin, one pass.

    Returns (-1, 0) when the chunk is valid, else (local bin, code): code 1 a
    NaN, 2 a +inf, 3 a bin where every label is -inf.
    """
    n, C = x.shape
    for i in range(n):
        m = -np.inf
        for c in range(C):
            v = x[i, c]
            if v != v:
                return i, 1
            if v == np.inf:
                return i, 2
            m = max(m, v)
        if m == -np.inf:
            return i, 3
        k = int(round(m / LN2))
        kexp[i] = k
        # Cody-Waite split: k * LN2_HI is exact, so x - k ln 2 keeps x's precision.
        off_hi = k * LN2_HI
        off_lo = k * LN2_LO
        for c in range(C):
            f[i, c] = math.exp((x[i, c] - off_hi) - off_lo)
    return -1, 0


@njit(nogil=True, cache=True)
def viterbi_traceback(a_start, e_prev, t0, pos, c, phase, out_start, out_end, out_label, count):
    """Follow argmax pointers inside one chunk (pointer rows for boundaries t0, t0+1, ...).

    phase 2: a label-c segment ends at boundary ``pos`` (needs a_start there);
    phase 1: a label-c segment starts at ``pos`` (needs e_prev there).
    Segments are appended right to left to the out_* buffers from ``count``.
    Returns (pos, c, phase, count); phase 0 means the contig start was reached.
    The caller moves to another chunk (or grows full buffers) and calls again.
    """
    while True:
        if phase == 1:
            if pos < t0:
                return pos, c, 1, count
            c = e_prev[pos - t0, c]
            phase = 2
        if pos <= t0 or count == out_start.shape[0]:
            return pos, c, 2, count
        s = a_start[pos - t0, c]
        out_start[count] = s
        out_end[count] = pos
        out_label[count] = c
        count += 1
        if s == 0:
            return 0, c, 0, count
        pos = s
        phase = 1


@njit(nogil=True, cache=True)
def run_inner_logweight(n_max, phi, lrho, log_self):
    """log D(n), n = 0..n_max: all ways to cut a run of n bins of one label
    into segments joined by self-transitions (durations weighted by phi, the
    tail by lrho), emissions excluded. O(n_max * K), log space."""
    K = phi.shape[0]
    out = np.full(n_max + 1, -np.inf)
    # F[m]: log mass of cuts of the first m bins ending at a segment boundary.
    F = np.full(n_max + 1, -np.inf)
    F[0] = 0.0
    tail = -np.inf
    for m in range(1, n_max + 1):
        best = -np.inf
        terms = np.empty(K + 1)
        nt = 0
        for d in range(1, min(K, m) + 1):
            start_w = F[m - d] + (0.0 if m - d == 0 else log_self)
            v = start_w + phi[d - 1]
            terms[nt] = v
            nt += 1
            best = max(best, v)
        if lrho > -np.inf and m - K - 1 >= 0:
            j = m - K - 1
            start_w = F[j] + (0.0 if j == 0 else log_self)
            tail = _logaddexp(tail + lrho, start_w + phi[K - 1] + lrho)
        elif lrho > -np.inf:
            tail = -np.inf
        terms[nt] = tail
        nt += 1
        best = max(best, tail)
        if best > -np.inf:
            s = 0.0
            for q in range(nt):
                s += math.exp(terms[q] - best)
            F[m] = best + math.log(s)
        out[m] = F[m]
    return out


@njit(nogil=True, cache=True)
def piece_sums(x, gamma, bin_label, cut, carry_x, carry_g):
    """Sums of x and gamma over each piece [cut[p], cut[p + 1]) of a chunk, in
    each bin's own label column, added one bin at a time from left to right;
    piece 0 starts from (carry_x, carry_g), the running sums of the segment it
    continues. A segment's sums then have the same bits however the chunks
    cut it (numpy's pairwise sums would not)."""
    n_pieces = cut.shape[0]
    xs = np.empty(n_pieces)
    gs = np.empty(n_pieces)
    n = x.shape[0]
    for p in range(n_pieces):
        lo = cut[p]
        hi = cut[p + 1] if p + 1 < n_pieces else n
        ax = carry_x if p == 0 else 0.0
        ag = carry_g if p == 0 else 0.0
        for i in range(lo, hi):
            c = bin_label[i]
            ax += x[i, c]
            ag += gamma[i, c]
        xs[p] = ax
        gs[p] = ag
    return xs, gs
