"""Compiled accumulation of expected counts over one chunk of the emit pass
(only :mod:`flashseg.core.expected` uses this module; it imports numba).

Every value is a natural-log mantissa with an integer binary exponent per
boundary (true log = mantissa + exponent * ln 2), as the stores hold them,
so that the exponents of E (or A), B (or G) and Z cancel as integers and
each posterior term keeps full precision on long contigs.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .host_kernels import boundary_scale


LN2 = math.log(2.0)
# exp() of anything below this is 0 in float64: terms bounded by it are skipped.
_UNDERFLOW = -746.0
# The duration mirror is used where its factor F is at most e^this (see expected_chunk),
# and rebased when an entry would exceed e^_MIRROR_MAX_LOG_R times its reference.
_MIRROR_MAX_LOG_F = 600.0
_MIRROR_MAX_LOG_R = 300.0
# The linear tail sums are rebased when they exceed e^this times their reference.
_TAIL_MAX_LOG = 50.0
_TAIL_MAX = math.exp(_TAIL_MAX_LOG)


@njit(nogil=True, cache=True)
def _add_transitions(transitions, tr_lin, a_row, g_row, scale_left, factor):
    """One boundary's expected transitions from linear mantissas: A[c] Tr[c, c2] G[c2] / Z."""
    C = tr_lin.shape[0]
    for c in range(C):
        a = a_row[c] * scale_left
        if a == 0.0:
            continue
        for c2 in range(C):
            transitions[c, c2] += a * tr_lin[c, c2] * g_row[c2] * factor


@njit(nogil=True, cache=True)
def expected_chunk(x, first, n_rows, T, lE, lA, xf, lB, lG, xb, linear, mA, mB, mG, phi, lrho, trans,
                   log_zm, zexp, ring, ring_exp, mirror, ref, tail_ref, tail_u, tail_v, tail_exp,
                   initial, transitions, durations, tail_n, tail_x):
    """Accumulate the counts of boundaries first .. first + n_rows - 1.

    Row i is boundary t = first + i; x[i] is bin t (absent for t = T).
    ring[s % (K+1)] holds lE[s] + S(s, t) for the last K + 1 starts s, with
    exponent ring_exp[s % (K+1)]. The open segments longer than K have total
    weight tail_u and excess-weighted weight tail_v, held linearly relative to
    a log reference tail_ref (exponent tail_exp): a bin multiplies every one
    of them by rho e^x, which goes into the reference, so a bin costs one exp
    for the entry that joins them instead of three log-additions. tail_u stays
    in [1, e^50] (renormalised beyond), so tail_v / tail_u <= T and a term's
    product never loses more than e^-695 to underflow.

    With ``linear`` (the fast path's stores), ``mA, mB, mG`` are the linear
    mantissas of A, B and G (lA and lG are not read): the end test, first
    labels and transitions are products with one exact power of two per
    boundary, as in the posterior combination, instead of exps.

    ``mirror`` holds the same entries linearly, relative to a per-label log
    reference ``ref`` (the largest entry when it arrived, plus the bins since:
    every entry of a label grows by the same e^x per bin, so their ratios never
    change; an entry above e^300 of it rebases the label). A boundary's K duration terms then cost one
    exp and K products instead of K exps, wherever the factor F that turns
    mirror entries into probabilities is at most e^600 (else the log ring is
    used): an entry lost below e^-708 then drops at most e^-58 from a term.
    """
    K, C = phi.shape
    W = K + 1
    tr_lin = np.exp(trans)
    linear_trans = True
    for c in range(C):
        for c2 in range(C):
            if trans[c, c2] > 0.0:
                linear_trans = False
    g = np.empty(C)
    inv_zm = math.exp(-log_zm)
    scale_left = 1.0
    factor = 0.0
    phi_lin = np.exp(phi)
    # the mirror is used for labels whose duration scores stay below e^50 (no overflow)
    mirror_ok = np.ones(C, dtype=np.bool_)
    for c in range(C):
        for d in range(K):
            if phi[d, c] > 50.0:
                mirror_ok[c] = False
    # durations accumulate label-major (contiguous in d), added to (K, C) at the end
    dur_t = np.zeros((C, K))
    phi_lin_t = np.ascontiguousarray(phi_lin.T)
    for i in range(n_rows):
        t = first + i
        pos_t = (W - t % W) % W
        if linear:
            # the boundary's factor 2**(sf + sb - zexp) / zm, split as in posterior_chunk
            scale_left, factor = boundary_scale(inv_zm, int(xf[i] + xb[i] - zexp))
        if t > 0:
            for c in range(C):
                # Every term ending here is at most P(a label-c segment ends at t).
                if linear:
                    if (mA[i, c] * scale_left) * mB[i, c] * factor == 0.0:
                        continue
                elif lA[i, c] + lB[i, c] + (xf[i] + xb[i] - zexp) * LN2 - log_zm < _UNDERFLOW:
                    continue
                dmax = K if t >= K else t
                log_f = ref[c] + lB[i, c] + (xb[i] - zexp) * LN2 - log_zm
                # Every term is a probability, so with F <= e^600 (and duration scores
                # <= 50) a mirror entry that underflowed or went subnormal (below e^-708)
                # drops at most e^-58 from its term: negligible beside the certificate's 1e-13.
                if mirror_ok[c] and log_f <= _MIRROR_MAX_LOG_F:
                    if log_f > _UNDERFLOW - _MIRROR_MAX_LOG_R - 50.0:   # else every term is 0
                        f = math.exp(log_f)
                        base = pos_t + 1           # starts t-1, t-2, ... lie at base, base+1, ...
                        row = mirror[c]
                        acc = dur_t[c]
                        ph = phi_lin_t[c]
                        for d in range(dmax):
                            acc[d] += row[base + d] * ph[d] * f
                else:
                    for d in range(1, dmax + 1):
                        slot = (t - d) % W
                        w = ring[slot, c]
                        if w == -np.inf or phi[d - 1, c] == -np.inf:
                            continue
                        v = w + phi[d - 1, c] + lB[i, c] + ((ring_exp[slot] + xb[i] - zexp) * LN2 - log_zm)
                        if v > _UNDERFLOW:
                            durations[d - 1, c] += math.exp(v)
                if tail_ref[c] > -np.inf:
                    w = tail_ref[c] + (tail_exp[c] + xb[i] - zexp) * LN2 - log_zm + lB[i, c]
                    if w > _UNDERFLOW - _TAIL_MAX_LOG:
                        w = math.exp(w)
                        tail_n[c] += tail_u[c] * w
                        tail_x[c] += tail_v[c] * w
        if t == T:
            break
        if t == 0:
            for c in range(C):
                if linear:
                    initial[c] += (math.exp(lE[i, c]) * scale_left) * mG[i, c] * factor
                    continue
                v = lE[i, c] + lG[i, c] + (xf[i] + xb[i] - zexp) * LN2 - log_zm
                if v > _UNDERFLOW:
                    initial[c] += math.exp(v)
        elif linear:   # the fast path runs only for model scores <= 50: exp(trans) is finite
            _add_transitions(transitions, tr_lin, mA[i], mG[i], scale_left, factor)
        else:
            scale = (xf[i] + xb[i] - zexp) * LN2 - log_zm
            # Linear split: a_c = e^(A_c - max A) <= 1 and g_c2 = e^(G_c2 + scale + max A);
            # when no g exceeds e^300 (and no transition score is positive), an a that
            # underflows only drops terms below e^-445, so C^2 products replace C^2 exps.
            amax = -np.inf
            for c in range(C):
                if lA[i, c] > amax:
                    amax = lA[i, c]
            if amax == -np.inf:
                pass
            else:
                gmax = -np.inf
                for c2 in range(C):
                    v = lG[i, c2] + scale + amax
                    if v > gmax:
                        gmax = v
                if linear_trans and gmax <= 300.0:
                    for c2 in range(C):
                        v = lG[i, c2] + scale + amax
                        g[c2] = math.exp(v) if v > _UNDERFLOW else 0.0
                    for c in range(C):
                        a = lA[i, c] - amax
                        if a < _UNDERFLOW:
                            continue
                        a = math.exp(a)
                        for c2 in range(C):
                            transitions[c, c2] += a * tr_lin[c, c2] * g[c2]
                else:
                    for c in range(C):
                        if lA[i, c] + lB[i, c] + scale < _UNDERFLOW:
                            continue
                        for c2 in range(C):
                            v = lA[i, c] + trans[c, c2] + lG[i, c2] + scale
                            if v > _UNDERFLOW:
                                transitions[c, c2] += math.exp(v)
        # a segment may start at t
        slot = t % W
        for c in range(C):
            ring[slot, c] = lE[i, c]
        ring_exp[slot] = xf[i]
        pos = (W - slot) % W          # this start's place in the mirror (and pos + W)
        for c in range(C):
            if lE[i, c] == -np.inf:
                mirror[c, pos] = 0.0
                mirror[c, pos + W] = 0.0
                continue
            w_new = lE[i, c] + xf[i] * LN2 - ref[c]
            if ref[c] == -np.inf or w_new > _MIRROR_MAX_LOG_R:
                # an entry far above the reference: rebase the label's mirror on it
                rebase = 0.0 if ref[c] == -np.inf else math.exp(-w_new)
                for sl in range(2 * W):
                    mirror[c, sl] *= rebase
                ref[c] = lE[i, c] + xf[i] * LN2
                mirror[c, pos] = 1.0
                mirror[c, pos + W] = 1.0
            else:
                v = math.exp(w_new) if w_new > _UNDERFLOW else 0.0
                mirror[c, pos] = v
                mirror[c, pos + W] = v
        # bin t: the segment that started K bins ago becomes a tail segment (d = K + 1)
        old = t - K
        if old >= 0:
            oslot = old % W
            for c in range(C):
                if lrho[c] == -np.inf:
                    continue
                step = lrho[c] + x[i, c]
                entry = ring[oslot, c] + phi[K - 1, c] + step
                ring[oslot, c] = -np.inf
                if tail_ref[c] > -np.inf:
                    # into the new entry's exponent frame, one bin on (a step -inf ends them all)
                    tail_ref[c] += (tail_exp[c] - ring_exp[oslot]) * LN2 + step
                    tail_exp[c] = ring_exp[oslot]
                    if tail_ref[c] == -np.inf:
                        tail_u[c] = 0.0
                        tail_v[c] = 0.0
                        continue
                    rel = entry - tail_ref[c]
                    if rel > _TAIL_MAX_LOG:
                        # an entry far above the sums: rebase on it
                        down = math.exp(-rel)
                        tail_v[c] = (tail_v[c] + tail_u[c]) * down + 1.0
                        tail_u[c] = tail_u[c] * down + 1.0
                        tail_ref[c] = entry
                        continue
                    e = math.exp(rel) if rel > _UNDERFLOW else 0.0
                    tail_v[c] += tail_u[c] + e      # each old excess grows by 1, the entry's is 1
                    tail_u[c] += e
                    if tail_u[c] > _TAIL_MAX:
                        # rebase on the sum (one log now and then, where u has grown by e^50)
                        lu = math.log(tail_u[c])
                        tail_ref[c] += lu
                        tail_v[c] /= tail_u[c]
                        tail_u[c] = 1.0
                elif entry > -np.inf:
                    tail_ref[c] = entry
                    tail_exp[c] = ring_exp[oslot]
                    tail_u[c] = 1.0
                    tail_v[c] = 1.0      # excess 1
        if old >= 0:
            for c in range(C):
                mirror[c, (W - old % W) % W] = 0.0
                mirror[c, (W - old % W) % W + W] = 0.0
        for c in range(C):
            if x[i, c] == -np.inf:       # no open segment of c survives this bin
                ref[c] = -np.inf
                for sl in range(2 * W):
                    mirror[c, sl] = 0.0
            elif ref[c] > -np.inf:
                ref[c] += x[i, c]
        # every slot: the one just moved to the tail and those never filled hold -inf,
        # which stays -inf (no branch, so the adds vectorise)
        for sl in range(W):
            for c in range(C):
                ring[sl, c] += x[i, c]
    for c in range(C):
        for d in range(K):
            durations[d, c] += dur_t[c, d]


@njit(nogil=True, cache=True)
def expected_chunk_hmm(first, n_rows, T, mE, xf, mA, mB, mG, xb, trans, log_zm, zexp,
                       initial, transitions, durations):
    """:func:`expected_chunk` for K = 1 without a tail on the fast path's linear
    stores: every segment is one bin, so there is no ring, mirror or tail to
    carry, and each boundary costs C products for the segment ends and C^2
    for the transitions (no exp per bin): this is the Baum-Welch E-step."""
    C = trans.shape[0]
    tr_lin = np.exp(trans)
    inv_zm = math.exp(-log_zm)
    for i in range(n_rows):
        t = first + i
        scale_left, factor = boundary_scale(inv_zm, int(xf[i] + xb[i] - zexp))
        if t > 0:
            for c in range(C):
                durations[0, c] += (mA[i, c] * scale_left) * mB[i, c] * factor
        if t == T:
            break
        if t == 0:
            for c in range(C):
                initial[c] += (mE[i, c] * scale_left) * mG[i, c] * factor
            continue
        _add_transitions(transitions, tr_lin, mA[i], mG[i], scale_left, factor)
