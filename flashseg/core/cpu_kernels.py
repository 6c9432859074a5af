"""Compiled CPU kernels (numba): one chunk of one pass at a time.

Every kernel advances a state in place over the bins of one chunk. The chunk
driver (``driver.py``) owns the order of passes, the checkpoints and the
consumers; these functions only do arithmetic.

Three forward recursions share one ring layout (docs/algorithms.md, "Recursions"):

* :func:`forward_linear` — the fast path. Linear space, one shared binary
  exponent per bin (``sexp``), values flushed to 0 below ``FLOOR`` with the
  lost mass carried in per-label "ghost" accumulators that the driver turns
  into an a-posteriori certificate.
* :func:`forward_logspace` — exact log-space recursion (K exps per bin and
  label), the fallback when a certificate fails.
* :func:`viterbi_forward` — the max-plus recursion (log space, nothing to
  certify), optionally recording argmax pointers for the traceback.

Ring layout: the entry of the segment that started at bin ``s`` lives in
slot ``(-s) mod K``. At boundary ``t`` (after bins ``0..t-1``) the slot ``j``
holds a start with duration ``d = ((j + t - 1) mod K) + 1``, so the weight
of slot ``j`` is ``wcirc[c, j + (t mod K)]`` with
``wcirc[c, m] = w[c, (m - 1) mod K]``: a contiguous, vectorisable read.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .host_kernels import _logaddexp, boundary_scale
from .numeric import (FLOOR, LN2, LN2_HI, LN2_LO, LOG_FLOOR, LOG_RENORM, P_HI, P_LO, RESCALE_HI, RESCALE_LO, WALK_CHUNK_DONE,  # noqa: F401
                      WALK_NEED_RING, WALK_NEED_SPACE, WALK_NEED_UNIFORMS, WALK_ZERO)

# Linear-space kernels may reassociate sums (vectorised dot products) but must
# keep IEEE semantics for zeros and infinities: no 'nnan'/'ninf'.
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _dot(u, w):
    # Both operands contiguous and equally long: LLVM vectorises this.
    acc = 0.0
    for j in range(u.shape[0]):
        acc += u[j] * w[j]
    return acc


@njit(nogil=True, cache=True)
def _rebase(u, factor):
    """u *= factor, flushing what falls below FLOOR. Returns (flushed count, new max)."""
    lost = 0
    mx = 0.0
    for j in range(u.shape[0]):
        uo = u[j]
        if uo > 0.0:
            v = uo * factor
            if v < FLOOR:
                lost += 1
                v = 0.0
            u[j] = v
            mx = max(mx, v)
    return lost, mx


@njit(nogil=True, cache=True, inline="always")
def _any_finite(v):
    for c in range(v.shape[0]):
        if v[c] > -np.inf:
            return True
    return False


@njit(nogil=True, cache=True, inline="always")
def _store_row(row, E, A, tail, sexp, ghost, ghost_live, store_tail, sE, sA, sL, sS, sG, sGflag):
    """One boundary of a linear-space store (ghost rows only where mass was lost)."""
    sE[row, :] = E
    sA[row, :] = A
    if store_tail:
        sL[row, :] = tail
    sS[row] = sexp
    if ghost_live:
        sG[row, :] = ghost
        sGflag[row] = 1


@njit(nogil=True, cache=True, inline="always")
def _entering(A, TrT, trpos, E, lost):
    """E[c] = sum_c' A[c'] Tr[c', c], flushed below FLOOR (losses charged to lost[c]).

    Returns the largest E.
    """
    C = A.shape[0]
    top = 0.0
    for c in range(C):
        e = _dot(A, TrT[c])
        if e < FLOOR:
            if e > 0.0:
                lost[c] += C
            else:
                for cp in range(C):
                    if A[cp] > 0.0 and trpos[cp, c]:
                        lost[c] += C
                        break
            e = 0.0
        E[c] = e
        top = max(top, e)
    return top


@njit(nogil=True, cache=True, inline="always")
def _carry_ghosts(ghost, ghost_live, x_row, lost, sexp):
    """Carry earlier losses through one bin (same label), then add this bin's.

    Returns whether any ghost is finite afterwards.
    """
    C = ghost.shape[0]
    live = False
    if ghost_live:
        for c in range(C):
            g = ghost[c]
            if g > -np.inf:
                g += x_row[c]
                ghost[c] = g
                if g > -np.inf:
                    live = True
    for c in range(C):
        if lost[c] > 0.0:
            ghost[c] = _logaddexp(ghost[c], math.log(lost[c]) + LOG_FLOOR + sexp * LN2)
            live = True
    return live


@njit(nogil=True, cache=True, inline="always")
def _rescale_messages(tail, A, E, ghost, scale, sexp, K):
    """tail, A, E *= scale (a power of two), flushing and charging what falls
    below FLOOR. Returns whether a ghost was charged."""
    C = A.shape[0]
    charged = False
    for c in range(C):
        nl = 0.0
        tv = tail[c] * scale
        if tv < FLOOR:
            if tail[c] > 0.0:
                nl += 1.0
            tv = 0.0
        tail[c] = tv
        av = A[c] * scale
        if av < FLOOR:
            if A[c] > 0.0:
                nl += K + 1.0
            av = 0.0
        A[c] = av
        ev = E[c] * scale
        if ev < FLOOR:
            if E[c] > 0.0:
                nl += C
            ev = 0.0
        E[c] = ev
        if nl > 0.0:
            ghost[c] = _logaddexp(ghost[c], math.log(nl) + LOG_FLOOR + sexp * LN2)
            charged = True
    return charged


@njit(nogil=True, cache=True)
def _forward_linear_k1(x, f, kexp, reverse, ring, tail, A, E, ghost, t_sexp, w1, wpos1, TrT, trpos,
                       do_store, store_tail, sE, sA, sL, sS, sG, sGflag):
    """:func:`forward_linear` for K = 1 without tails (an HMM): same state,
    same flush and ghost accounting, none of the ring bookkeeping."""
    n, C = x.shape
    t = t_sexp[0]
    sexp = t_sexp[1]
    lost = np.zeros(C)
    ghost_live = _any_finite(ghost)
    if do_store:
        _store_row(0, E, A, tail, sexp, ghost, ghost_live, store_tail, sE, sA, sL, sS, sG, sGflag)
    for step in range(n):
        i = n - 1 - step if reverse else step
        sexp += kexp[i]
        live_max = 0.0
        for c in range(C):
            e = E[c]
            v = e * f[i, c]
            nl = 0.0
            if v < FLOOR:
                if e > 0.0 and x[i, c] > -np.inf:
                    nl = 1.0
                v = 0.0
            ring[c, 0] = v
            a = v * w1[c]
            if a < FLOOR:
                if v > 0.0 and wpos1[c]:
                    nl += 2.0
                a = 0.0
            A[c] = a
            lost[c] = nl
            live_max = max(live_max, v)
        live_max = max(live_max, _entering(A, TrT, trpos, E, lost))
        t += 1
        ghost_live = _carry_ghosts(ghost, ghost_live, x[i], lost, sexp)
        if live_max == 0.0:
            t_sexp[0] = t
            t_sexp[1] = sexp
            return step
        if live_max > RESCALE_HI or live_max < RESCALE_LO:
            shift = math.frexp(live_max)[1]
            scale = math.ldexp(1.0, -shift)
            sexp += shift
            # The single ring entry takes the scale directly (no per-label product).
            for c in range(C):
                rv = ring[c, 0] * scale
                if rv < FLOOR:
                    if ring[c, 0] > 0.0:
                        ghost[c] = _logaddexp(ghost[c], LOG_FLOOR + sexp * LN2)
                        ghost_live = True
                    rv = 0.0
                ring[c, 0] = rv
            if _rescale_messages(tail, A, E, ghost, scale, sexp, 1):
                ghost_live = True
        if do_store:
            _store_row(step + 1, E, A, tail, sexp, ghost, ghost_live, store_tail, sE, sA, sL, sS, sG, sGflag)
    t_sexp[0] = t
    t_sexp[1] = sexp
    return -1


@njit(nogil=True, cache=True)
def forward_linear(x, f, kexp, reverse, ring, P, umax, tail, A, E, ghost, t_sexp,
                   wcirc, wpos, wK, phiK_finite, rho, TrT, trpos,
                   do_store, store_tail, sE, sA, sL, sS, sG, sGflag):
    """Advance the certified linear-space forward over the bins of one chunk.

    x (n, C) emissions (log), f (n, C) = exp(x - kexp * ln2), kexp (n,) int64;
    with ``reverse`` the rows are read last to first (the backward pass is
    this recursion on the reversed problem, without copying the chunk).
    State (mutated): ring (C, K) and P (C,): the entry of start s is
    ring[c, slot(s)] * P[c] (every entry of a label takes the same emission
    factors, so they live in one per-label product P and the hot loop is a
    read-only dot product); umax (C,) an upper bound of ring[c]; tail (C,),
    A (C,), E (C,) at the current boundary; ghost (C,) natural-log absolute
    lost mass; t_sexp = [t, sexp]: true values are these times 2**sexp.
    With do_store, rows 0..n of sE, sA (C columns) and sS (sexp) receive the
    state at boundaries t..t+n, and sL the tail when ``store_tail`` (only
    sampling reads it). Ghost rows go to sG only where some ghost is finite,
    flagged in sGflag (the caller zeroes it): most chunks lose nothing and
    should not pay for writing -inf.

    Returns -1, or the chunk-local bin at which all mass vanished.
    """
    n, C = x.shape
    K = ring.shape[1]
    if K == 1 and rho.max() == 0.0:
        return _forward_linear_k1(x, f, kexp, reverse, ring, tail, A, E, ghost, t_sexp, wcirc[:, 0],
                                  wpos[:, 0], TrT, trpos, do_store, store_tail, sE, sA, sL, sS, sG, sGflag)
    t = t_sexp[0]
    sexp = t_sexp[1]
    lost = np.zeros(C)
    inv_P = np.empty(C)
    for c in range(C):
        inv_P[c] = 1.0 / P[c]
    ghost_live = _any_finite(ghost)
    if do_store:
        _store_row(0, E, A, tail, sexp, ghost, ghost_live, store_tail, sE, sA, sL, sS, sG, sGflag)
    for step in range(n):
        i = n - 1 - step if reverse else step
        sexp += kexp[i]
        h = (t + 1) % K
        slot = (K - t % K) % K
        live_max = 0.0
        for c in range(C):
            fc = f[i, c]
            pc = P[c]
            old = ring[c, slot] * pc  # started at t - K: leaves the ring (duration K -> K + 1)
            nlost = 0.0
            tl = 0.0
            if rho[c] > 0.0:
                tl_old = tail[c]
                tl = (tl_old + old * wK[c]) * (rho[c] * fc)
                if tl < FLOOR:
                    if tl_old > 0.0 or (old > 0.0 and phiK_finite[c]):
                        nlost += 1.0
                    tl = 0.0
                tail[c] = tl
            u_new = E[c] * inv_P[c]
            ring[c, slot] = u_new
            if u_new > umax[c]:
                umax[c] = u_new
            if x[i, c] == -np.inf:
                # An impossible bin ends every label-c segment exactly: no loss.
                # (A factor that merely underflowed is a loss: see _rebase.)
                ring[c, :] = 0.0
                umax[c] = 0.0
                pc = 1.0
            elif K == 1:
                # A single entry (an HMM): fold the factor in at once and keep
                # P at 1, which spares a division per label and bin.
                v = E[c] * fc
                if v < FLOOR:
                    if E[c] > 0.0:
                        nlost += 1.0
                    v = 0.0
                ring[c, 0] = v
                umax[c] = v
                pc = 1.0
            else:
                pc *= fc
                if pc < P_LO or pc > P_HI:
                    nl, mx = _rebase(ring[c], pc)
                    nlost += nl
                    umax[c] = mx
                    pc = 1.0
            if pc != P[c]:
                P[c] = pc
                inv_P[c] = 1.0 / pc
            if K <= 4:
                acc = 0.0
                for j in range(K):
                    acc += ring[c, j] * wcirc[c, h + j]
            else:
                acc = _dot(ring[c], wcirc[c, h:h + K])
            a = acc * pc + tl
            if a < FLOOR:
                if umax[c] > 0.0 or tl > 0.0 or a > 0.0:
                    # Mass may be alive but only at durations whose weight
                    # underflowed; charge it only if some weight is really > 0.
                    alive = tl > 0.0
                    if not alive:
                        for j in range(K):
                            if ring[c, j] > 0.0 and wpos[c, j + h]:
                                alive = True
                                break
                    if alive:
                        nlost += K + 1.0
                a = 0.0
            A[c] = a
            lost[c] = nlost
            live_max = max(live_max, umax[c] * pc, tl, a)
        live_max = max(live_max, _entering(A, TrT, trpos, E, lost))
        t += 1
        ghost_live = _carry_ghosts(ghost, ghost_live, x[i], lost, sexp)
        if live_max == 0.0:
            t_sexp[0] = t
            t_sexp[1] = sexp
            return step
        if live_max > RESCALE_HI or live_max < RESCALE_LO:
            # Rescale by an exact power of two. Ring entries follow through
            # P alone; values pushed below FLOOR are flushed and charged.
            shift = math.frexp(live_max)[1]
            scale = math.ldexp(1.0, -shift)
            sexp += shift
            for c in range(C):
                P[c] *= scale
                inv_P[c] = 1.0 / P[c]
            if _rescale_messages(tail, A, E, ghost, scale, sexp, K):
                ghost_live = True
        if do_store:
            _store_row(step + 1, E, A, tail, sexp, ghost, ghost_live, store_tail, sE, sA, sL, sS, sG, sGflag)
    t_sexp[0] = t
    t_sexp[1] = sexp
    return -1


@njit(nogil=True, cache=True)
def _shift_logs(v, k):
    """v - k ln 2 for the finite entries of v, as (v - k LN2_HI) - k LN2_LO."""
    hi = k * LN2_HI
    lo = k * LN2_LO
    for j in range(v.shape[0]):
        if v[j] > -np.inf:
            v[j] = (v[j] - hi) - lo


@njit(nogil=True, cache=True)
def forward_logspace(x, kexp, reverse, ring, tail, A, E, t_sexp, phicirc, phiK, lrho, trans,
                     do_store, store_tail, sE, sA, sL, sS):
    """Exact log-space forward over one chunk (the certificate's fallback).

    Same ring layout as :func:`forward_linear`. Every log value is relative
    to ``2**sexp`` (t_sexp[1], an integer like the linear path's exponent),
    moved two ways. Each bin's scores lose ``kexp[i] ln 2``, the chunk's
    per-bin ``round(max_c x / ln 2)``: a function of the bin alone, so the
    forward and backward passes add identical shifted scores and their
    rounding cancels in E B / Z (a shift that depended on the state would
    round differently in the two passes, and on data with recurring values,
    such as binarized marks, the difference adds up bin after bin). And when
    the largest of E and A leaves [-RENORM, RENORM], every carried value
    loses the nearest multiple of ln 2, so the values that matter stay near
    0 and round at eps rather than at eps * |log Z| (absolute logs drifted
    by ~1e-7 over 10**5 bins). Stores hold these logs (values far below a
    boundary's maximum may still matter, which one shared exponent of
    mantissas could not hold) with sexp per row, no ghosts.
    Returns -1, or the chunk-local bin at which all mass vanished.
    """
    n, C = x.shape
    K = ring.shape[1]
    t = t_sexp[0]
    sexp = t_sexp[1]
    flat = ring.reshape(C * K)
    if do_store:
        sE[0, :] = E
        sA[0, :] = A
        if store_tail:
            sL[0, :] = tail
        sS[0] = sexp
    for step in range(n):
        i = n - 1 - step if reverse else step
        top = -np.inf
        for c in range(C):
            top = max(top, A[c], E[c])
        if top > -np.inf and abs(top) > LOG_RENORM:
            j = int(math.floor(top / LN2 + 0.5))
            _shift_logs(flat, j)
            _shift_logs(tail, j)
            _shift_logs(E, j)
            _shift_logs(A, j)
            sexp += j
        k = kexp[i]
        sexp += k
        hi = k * LN2_HI
        lo = k * LN2_LO
        h = (t + 1) % K
        slot = (K - t % K) % K
        any_alive = False
        for c in range(C):
            # As emission_factors shifts the linear path's scores.
            xc = (x[i, c] - hi) - lo
            old = ring[c, slot]
            tl = -np.inf
            if lrho[c] > -np.inf:
                tl = _logaddexp(tail[c], old + phiK[c]) + lrho[c] + xc
                if not tl > -np.inf:
                    tl = -np.inf
            tail[c] = tl
            ring[c, slot] = E[c]
            m = -np.inf
            for j in range(K):
                v = ring[c, j] + xc
                ring[c, j] = v
                m = max(m, v + phicirc[c, j + h])
            a = -np.inf
            if m > -np.inf:
                # A plain log of the sum: it mostly holds several comparable
                # terms (E's, below, usually one dominant term: log1p).
                s = 0.0
                for j in range(K):
                    s += math.exp(ring[c, j] + phicirc[c, j + h] - m)
                a = m + math.log(s)
            a = _logaddexp(a, tl)
            A[c] = a
            if a > -np.inf or m > -np.inf:
                any_alive = True
            for j in range(K):
                if ring[c, j] > -np.inf:
                    any_alive = True
                    break
        for c in range(C):
            m = -np.inf
            for cp in range(C):
                m = max(m, A[cp] + trans[cp, c])
            e = -np.inf
            if m > -np.inf:
                # The largest term (and any tie) is exactly 1: log1p of the
                # rest, as 1 + rest would round at eps the same way bin after
                # bin on recurring data (a drift; ChromHMM's binarized marks).
                rest = 0.0
                ties = 0.0
                for cp in range(C):
                    w = A[cp] + trans[cp, c]
                    if w < m:
                        rest += math.exp(w - m)
                    else:
                        ties += 1.0
                e = m + math.log1p(rest + (ties - 1.0))
            E[c] = e
        t += 1
        if not any_alive:
            t_sexp[0] = t
            t_sexp[1] = sexp
            return step
        if do_store:
            sE[step + 1, :] = E
            sA[step + 1, :] = A
            if store_tail:
                sL[step + 1, :] = tail
            sS[step + 1] = sexp
    t_sexp[0] = t
    t_sexp[1] = sexp
    return -1


# Max-plus never produces NaN (no +inf enters, -inf + x stays -inf), so
# 'nnan' is safe and lets LLVM vectorise max; 'ninf' is not.
_FASTMATH_MAX = {"nnan", "nsz", "contract", "arcp", "reassoc"}


@njit(nogil=True, cache=True, fastmath=_FASTMATH_MAX)
def _max_plus(r, phi):
    # Four independent running maxima: LLVM vectorises this form.
    n = r.shape[0]
    b0 = b1 = b2 = b3 = -np.inf
    j = 0
    while j + 4 <= n:
        v0 = r[j] + phi[j]
        v1 = r[j + 1] + phi[j + 1]
        v2 = r[j + 2] + phi[j + 2]
        v3 = r[j + 3] + phi[j + 3]
        b0 = v0 if v0 > b0 else b0
        b1 = v1 if v1 > b1 else b1
        b2 = v2 if v2 > b2 else b2
        b3 = v3 if v3 > b3 else b3
        j += 4
    while j < n:
        v = r[j] + phi[j]
        b0 = v if v > b0 else b0
        j += 1
    return max(max(b0, b1), max(b2, b3))


@njit(nogil=True, cache=True)
def viterbi_forward(x, ring, off, tail, tail_start, A, E, t_sexp, phicirc, phiK, lrho, trans,
                    do_store, a_start, e_prev):
    """Max-plus forward over one chunk; with do_store, argmax pointers per boundary.

    The entry of start s is ring[c, slot(s)] + off[c]: every entry of a label
    takes the same emission scores, so they are added once to ``off`` (folded
    back into the ring every K bins, on a schedule fixed by t alone so chunk
    size never changes a bit).
    a_start[r, c]: start bin of the best label-c segment ending at boundary
    t0 + r (shortest duration on exact ties; -1 if impossible).
    e_prev[r, c]: best previous label for a label-c segment starting at
    boundary t0 + r (lowest label on ties; -2 at the contig start; -1 if
    impossible). Row 0 is the incoming boundary (only e_prev is filled there).
    """
    n, C = x.shape
    K = ring.shape[1]
    t = t_sexp[0]
    if do_store:
        _viterbi_prev_row(0, t, A, E, trans, e_prev)
        for c in range(C):
            a_start[0, c] = -1
    for i in range(n):
        h = (t + 1) % K
        slot = (K - t % K) % K
        fold = (t + 1) % K == 0
        for c in range(C):
            xc = x[i, c]
            oc = off[c]
            old = ring[c, slot] + oc
            tl = -np.inf
            if lrho[c] > -np.inf:
                from_new = old + phiK[c] + lrho[c] + xc
                from_old = tail[c] + lrho[c] + xc
                # Ties prefer the shorter segment: the one that just left the ring.
                if from_new >= from_old and from_new > -np.inf:
                    tl = from_new
                    tail_start[c] = t - K
                elif from_old > -np.inf:
                    tl = from_old
            tail[c] = tl
            ring[c, slot] = E[c] - oc
            if xc == -np.inf:
                ring[c, :] = -np.inf
                oc = 0.0
            else:
                oc += xc
                if fold:
                    for j in range(K):
                        ring[c, j] += oc
                    oc = 0.0
            off[c] = oc
            best = _max_plus(ring[c], phicirc[c, h:h + K])
            if do_store:
                best_d = K + 1
                if best > -np.inf:
                    for d in range(1, K + 1):
                        j = (d - 1 - t) % K
                        if ring[c, j] + phicirc[c, j + h] == best:
                            best_d = d
                            break
                best += oc
                if best >= tl and best > -np.inf:
                    A[c] = best
                    a_start[i + 1, c] = t + 1 - best_d
                elif tl > -np.inf:
                    A[c] = tl
                    a_start[i + 1, c] = tail_start[c]
                else:
                    A[c] = -np.inf
                    a_start[i + 1, c] = -1
            else:
                A[c] = max(best + oc, tl)
        for c in range(C):
            m = -np.inf
            for cp in range(C):
                m = max(m, A[cp] + trans[cp, c])
            E[c] = m
        t += 1
        if do_store:
            _viterbi_prev_row(i + 1, t, A, E, trans, e_prev)
    t_sexp[0] = t
    return -1


@njit(nogil=True, cache=True)
def _viterbi_prev_row(row, t, A, E, trans, e_prev):
    C = A.shape[0]
    for c in range(C):
        if t == 0:
            e_prev[row, c] = -2
            continue
        best = -np.inf
        arg = -1
        for cp in range(C):
            v = A[cp] + trans[cp, c]
            if v > best:
                best = v
                arg = cp
        e_prev[row, c] = arg


@njit(nogil=True, cache=True)
def _times_exp(m, v):
    """m * e^v for a mantissa m > 0 without a log, where e^v is a normal double."""
    if -700.0 < v < 700.0:
        return m * math.exp(v)
    return math.exp(v + math.log(m))


# A boundary's loss terms below e^this (all together) are charged at their bound.
_LOSS_BOUND_LOG = -200.0


@njit(nogil=True, cache=True)
def _loss_terms(g, other, s_other, log_z, max_weight):
    """sum_c mw_c e^g[c] other[c] 2**s_other / Z: one boundary's losses ``g``
    (natural logs) of one pass times the other pass's computed continuation
    (mantissas ``other``, exponent ``s_other``). Where even C times the
    largest loss times the largest weighted continuation stays below
    e^-200, that bound is charged instead (one exp instead of C: the
    certificate only has to stay below its tolerance, and T such bounds are
    below 1e-80)."""
    C = g.shape[0]
    g_top = -np.inf
    o_top = 0.0
    for c in range(C):
        if g[c] > g_top:
            g_top = g[c]
        o = max_weight[c] * other[c]
        if o > o_top:
            o_top = o
    if g_top == -np.inf or o_top == 0.0:
        return 0.0
    bound = g_top + math.log(C * o_top) + s_other * LN2 - log_z
    if bound < _LOSS_BOUND_LOG:
        return math.exp(bound)
    terms = 0.0
    for c in range(C):
        if g[c] > -np.inf and other[c] > 0.0:
            terms += max_weight[c] * _times_exp(other[c], g[c] + s_other * LN2 - log_z)
    return terms


@njit(nogil=True, cache=True)
def _ghost_inflow_log_ratio(g, log_mw, tr_up, tr_max, transpose, M, s, w):
    """max over labels c2 of log(sum_c mw_c e^g[c] Tr[c, c2] / (M[c2] 2**s)):
    how the losses of one boundary, entering the next segments, compare with
    the entering messages M computed there (Tr transposed for the reversed
    model; ``tr_up`` an upper bound of exp(trans), ``w`` scratch). +inf where
    losses enter a label whose computed message is 0."""
    C = g.shape[0]
    top = -np.inf
    low = np.inf
    for c in range(C):
        v = g[c] + log_mw[c]
        if v > top:
            top = v
        if M[c] < low:
            low = M[c]
    if top == -np.inf:
        return -np.inf
    # A cheap bound first (every inflow is at most C e^top tr_max, every
    # message at least the smallest): when it is already negligible, it is
    # the answer; most rows stop here.
    if low > 0.0 and tr_max > 0.0:
        crude = top + math.log(C * tr_max) - math.log(low) - s * LN2
        if crude < -200.0:
            return crude
    for c in range(C):
        v = g[c] + log_mw[c]
        w[c] = math.exp(v - top) if v > -np.inf else 0.0
    # the largest ratio linearly (messages are normal doubles, inflows at most C
    # tr_max), then one log: the row's logs cost 2 instead of 2C
    worst = 0.0
    for c2 in range(C):
        acc = 0.0
        for c in range(C):
            acc += w[c] * (tr_up[c2, c] if transpose else tr_up[c, c2])
        if acc <= 0.0:
            continue
        if M[c2] <= 0.0:
            return np.inf
        r = acc / M[c2]
        if r > worst:
            worst = r
    if worst == 0.0:
        return -np.inf
    if worst == np.inf:   # a subnormal message: the ratio in logs
        worst = -np.inf
        for c2 in range(C):
            acc = 0.0
            for c in range(C):
                acc += w[c] * (tr_up[c2, c] if transpose else tr_up[c, c2])
            if acc > 0.0:
                worst = max(worst, math.log(acc) - math.log(M[c2]))
        return top + worst - s * LN2
    return top + math.log(worst) - s * LN2


@njit(nogil=True, cache=True)
def posterior_chunk(Ef, Af, sf, gf, gf_flag, Bb, Gb, sb, gb, gb_flag, Tr, tr_up, max_weight, inv_zm, zexp,
                    log_z, carry, first_boundary, n, with_last, gamma, boundary, change):
    """Per-bin posteriors for boundaries 0..n-1 of a chunk, and its certificate terms.

    Forward rows (E, A, sexp, ghost) and backward rows (B, G, sexp, ghost) are
    aligned on the same boundaries. Each boundary's factor
    2**(sf + sb - zexp) / zm is exact: the scales cancel as integers, so the
    running gamma sum does not random-walk on rounding of large logs.
    ``carry`` holds gamma of the previous bin and is updated in place.

    Returns (terms, log_ratio) of docs/algorithms.md, "Linear fast path and
    its certificate": the chunk's sum of losses times the other pass's
    computed continuations, plus twice the losses met by losses at one
    boundary; and the largest log ratio of losses entering a label to the
    entering message computed there (either pass), which the driver turns
    into the factor that covers paths both passes lost.
    """
    C = Ef.shape[1]
    cert = 0.0
    log_ratio = -np.inf
    log_mw = np.log(max_weight)
    w = np.empty(C)
    tr_max = tr_up.max()
    rows = n + 1 if with_last else n
    for i in range(rows):
        # Forward losses continue at most like B; backward losses like E.
        if gf_flag[i]:
            cert += _loss_terms(gf[i], Bb[i], sb[i], log_z, max_weight)
            r = _ghost_inflow_log_ratio(gf[i], log_mw, tr_up, tr_max, False, Ef[i], sf[i], w)
            if r > log_ratio:
                log_ratio = r
        if gb_flag[i]:
            cert += _loss_terms(gb[i], Ef[i], sf[i], log_z, max_weight)
            r = _ghost_inflow_log_ratio(gb[i], log_mw, tr_up, tr_max, True, Bb[i], sb[i], w)
            if r > log_ratio:
                log_ratio = r
            if gf_flag[i]:
                # Losses of both passes at one boundary: the part of E (and of
                # B) that the other side flushed right here.
                for c in range(C):
                    if gf[i, c] > -np.inf and gb[i, c] > -np.inf:
                        cert += 2.0 * max_weight[c] * math.exp(gf[i, c] + gb[i, c] - log_z)
        if i == n:
            break
        scale_left, factor = boundary_scale(inv_zm, int(sf[i] + sb[i] - zexp))
        bsum = 0.0
        chg = 0.0
        for c in range(C):
            p_start = (Ef[i, c] * scale_left) * Gb[i, c] * factor
            p_end = (Af[i, c] * scale_left) * Bb[i, c] * factor
            carry[c] += p_start - p_end
            bsum += p_start
            if Gb[i, c] > 0.0:
                # E = sum over every previous label of A * Tr (as the forward
                # formed it), so the inflow from other labels is E minus the
                # self-transition term: O(C) per bin instead of O(C^2). The
                # difference can cancel, but only to ~1e-16 absolute in chg.
                inflow = Ef[i, c] - Af[i, c] * Tr[c, c]
                if inflow > 0.0:
                    chg += (inflow * scale_left) * Gb[i, c] * factor
        # Identity sum_c gamma = 1: clip and renormalise the carried sums.
        tot = 0.0
        for c in range(C):
            v = carry[c]
            if v < 0.0:
                v = 0.0
            elif v > 1.0:
                v = 1.0
            carry[c] = v
            tot += v
        if tot > 0.0:
            for c in range(C):
                carry[c] /= tot
        for c in range(C):
            gamma[i, c] = carry[c]
        if first_boundary + i == 0:
            boundary[i] = 1.0
            change[i] = 1.0
        else:
            boundary[i] = min(bsum, 1.0)
            change[i] = min(chg, 1.0)
    return cert, log_ratio


@njit(nogil=True, cache=True)
def posterior_chunk_log(lE, lA, sf, lB, lG, sb, trans, log_zm, zexp, carry, first_boundary, n,
                        gamma, boundary, change):
    """:func:`posterior_chunk` for log-space stores (the exact fallback): logs
    relative to 2**sexp per row, Z = exp(log_zm) * 2**zexp; the exponents
    cancel as integers, as in the linear combination."""
    C = lE.shape[1]
    for i in range(n):
        base = (sf[i] + sb[i] - zexp) * LN2 - log_zm
        bsum = 0.0
        chg = 0.0
        for c in range(C):
            p_start = math.exp(lE[i, c] + lG[i, c] + base) if lE[i, c] + lG[i, c] > -np.inf else 0.0
            p_end = math.exp(lA[i, c] + lB[i, c] + base) if lA[i, c] + lB[i, c] > -np.inf else 0.0
            carry[c] += p_start - p_end
            bsum += p_start
            for cp in range(C):
                if cp != c:
                    v = lA[i, cp] + trans[cp, c] + lG[i, c]
                    if v > -np.inf:
                        chg += math.exp(v + base)
        tot = 0.0
        for c in range(C):
            v = min(max(carry[c], 0.0), 1.0)
            carry[c] = v
            tot += v
        if tot > 0.0:
            for c in range(C):
                carry[c] /= tot
        for c in range(C):
            gamma[i, c] = carry[c]
        if first_boundary + i == 0:
            boundary[i] = 1.0
            change[i] = 1.0
        else:
            boundary[i] = min(bsum, 1.0)
            change[i] = min(chg, 1.0)


@njit(nogil=True, cache=True)
def _draw_from_logs(logw, n, u):
    """Index i < n drawn with probability exp(logw[i]) / sum, for the uniform u
    (the first whose running sum of weights exceeds u times the total); -1 if
    every weight is 0."""
    m = -np.inf
    for i in range(n):
        m = max(m, logw[i])
    w = np.empty(n)
    total = 0.0
    for i in range(n):
        w[i] = math.exp(logw[i] - m)
        total += w[i]
    if not total > 0.0:
        return -1
    target = u * total
    acc = 0.0
    for i in range(n):
        acc += w[i]
        if acc > target:
            return i
    return n - 1


# sample_walk's return codes (the caller supplies what was missing and calls again)


@njit(nogil=True, cache=True)
def sample_walk(st_i, st_f, a, b, x, lE, lA, lL, ring_log, ring_ready, phicirc, lrho, trans, final, K,
                u, u_pos, out_s, out_e, out_c, n_out, logs):
    """Advance one posterior sample's backward walk through the chunk [a, b).

    st_i = [phase, pos, label, tail end] (phase 2: a segment of ``label`` ends
    at pos, or the contig end if label < 0; 3: inside a tail; 1: a segment
    starts at pos; 0: done), st_f = [log u, log survival] of the current tail.
    lE, lA, lL: (b - a + 1, C) logs of the forward rows of the chunk (true
    scale); ring_log[c]: logs of the ring entries of the chunk's checkpoint,
    valid where ring_ready[c]. Uniforms u[u_pos:] are consumed in order, as
    the random stream; segments go to out_*[n_out:].

    Returns (code, u_pos, n_out, label): WALK_CHUNK_DONE when the walk left
    the chunk (or ended), else what the caller must supply before calling
    again (more uniforms; more output space; ring_log[label]); WALK_ZERO on
    an all-zero distribution. Every step checks its needs before it draws.
    """
    C = x.shape[1]
    while st_i[0] != 0:
        phase, pos, c = st_i[0], st_i[1], st_i[2]
        if phase == 2 or phase == 3:
            if not (a < pos <= b):
                return WALK_CHUNK_DONE, u_pos, n_out, -1
        elif not (a <= pos <= b):
            return WALK_CHUNK_DONE, u_pos, n_out, -1
        r = pos - a
        if u_pos + 2 > u.shape[0]:
            return WALK_NEED_UNIFORMS, u_pos, n_out, -1
        if n_out >= out_s.shape[0]:
            return WALK_NEED_SPACE, u_pos, n_out, -1
        if phase == 2 and c < 0:
            # Contig end: the last label.
            for k in range(C):
                logs[k] = lA[r, k] + final[k]
            idx = _draw_from_logs(logs, C, u[u_pos])
            u_pos += 1
            if idx < 0:
                return WALK_ZERO, u_pos, n_out, -1
            st_i[2] = idx
            continue
        if phase == 2:
            dmax = min(K, pos)
            inside = min(dmax, r)
            if dmax > inside and not ring_ready[c]:
                return WALK_NEED_RING, u_pos, n_out, c
            if lrho[c] > -np.inf:
                # Drawn whenever label c has a tail at all (see driver.sample).
                uu = u[u_pos]
                u_pos += 1
                log_uu = math.log(uu) if uu > 0.0 else -np.inf
                if log_uu + lA[r, c] < lL[r, c]:
                    st_i[0], st_i[3] = 3, pos
                    uu = u[u_pos]
                    u_pos += 1
                    st_f[0] = math.log(uu) if uu > 0.0 else -np.inf
                    st_f[1] = 0.0
                    continue
            # Durations 1..inside start in this chunk, longer ones in the
            # ring of the chunk's checkpoint.
            xs = 0.0
            for d in range(1, inside + 1):
                xs += x[r - d, c]
                logs[d - 1] = lE[r - d, c] + xs + phicirc[c, d]
            for d in range(inside + 1, dmax + 1):
                logs[d - 1] = ring_log[c, (d - pos) % K] + xs + phicirc[c, d]
            idx = _draw_from_logs(logs, dmax, u[u_pos])
            u_pos += 1
            if idx < 0:
                return WALK_ZERO, u_pos, n_out, -1
            d = idx + 1
            out_s[n_out], out_e[n_out], out_c[n_out] = pos - d, pos, c
            n_out += 1
            st_i[0], st_i[1] = 1, pos - d
            continue
        if phase == 3:
            # Tail: walk back while the L recursion says "started even
            # earlier"; one uniform per tail inverts the survival product.
            t = pos
            log_u, log_s = st_f[0], st_f[1]
            stopped = False
            while t > a:
                lp = lL[t - 1 - a, c]
                if lp > -np.inf:
                    cont = lp + lrho[c] + x[t - 1 - a, c] - lL[t - a, c]
                    log_new = log_s + min(cont, 0.0)
                else:
                    log_new = -np.inf
                if log_u >= log_new:
                    stopped = True
                    break
                log_s = log_new
                t -= 1
            st_i[1] = t
            st_f[1] = log_s
            if not stopped:
                return WALK_CHUNK_DONE, u_pos, n_out, -1
            s = t - 1 - K
            out_s[n_out], out_e[n_out], out_c[n_out] = s, st_i[3], c
            n_out += 1
            st_i[0], st_i[1] = 1, s
            continue
        # phase 1: a label-c segment starts at pos; draw the previous label.
        if pos == 0:
            st_i[0] = 0
            return WALK_CHUNK_DONE, u_pos, n_out, -1
        for k in range(C):
            logs[k] = lA[r, k] + trans[k, c]
        idx = _draw_from_logs(logs, C, u[u_pos])
        u_pos += 1
        if idx < 0:
            return WALK_ZERO, u_pos, n_out, -1
        st_i[0], st_i[2] = 2, idx
    return WALK_CHUNK_DONE, u_pos, n_out, -1
