"""Max-plus (Viterbi) forward over one chunk, optionally with argmax pointers.

Same recursion and tie rules as ``cpu_kernels.viterbi_forward``: log space
(max and add need no exp, nothing to certify); ring of the last K starts per
label in a register tile, the tail accumulator with the start it carries,
and the factored entering message E[c] = max_c' A[c'] + trans[c', c].

Pointers (STORE): a_start[r, c] is the start bin of the best label-c segment
ending at boundary t0 + r — the shortest duration on exact ties, the ring
(d <= K) before the tail on ties; e_prev[r, c] the best previous label of a
label-c segment starting at t0 + r — the lowest label on ties, -2 at the
contig start, -1 if impossible. Ties are resolved with exact comparisons and
min-reductions over integer keys, so they do not depend on reduction order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import check_contiguous, block_sizes, num_warps_for

NEG = float("-inf")


@triton.jit
def _prev_label_row(A, transT, cc, cmask, t, BLOCK_C: tl.constexpr):
    """Argmax over c' of A[c'] + trans[c', c] per c (lowest c' on ties; -1 if all -inf)."""
    v = transT + A[None, :]
    best = tl.max(v, axis=1)
    cand = tl.where((v == best[:, None]) & (v > float("-inf")), cc[None, :], BLOCK_C)
    arg = tl.min(cand, axis=1)
    arg = tl.where(best > float("-inf"), arg, -1)
    return tl.where(t == 0, -2, arg)


@triton.jit
def viterbi_forward_kernel(
        x_ptr, n_ptr,
        ring_ptr, tail_ptr, tstart_ptr, A_ptr, E_ptr, istate_ptr,
        phicirc_ptr, phiK_ptr, lrho_ptr, transT_ptr,
        astart_ptr, eprev_ptr,
        C, K, NMAX,
        STORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    b = tl.program_id(0)
    cc = tl.arange(0, BLOCK_C)
    jj = tl.arange(0, BLOCK_K)
    cmask = cc < C
    kmask = jj < K
    m2 = cmask[:, None] & kmask[None, :]
    mcc = cmask[:, None] & cmask[None, :]

    phiK = tl.load(phiK_ptr + cc, mask=cmask, other=float("-inf"))
    lrho = tl.load(lrho_ptr + cc, mask=cmask, other=float("-inf"))
    transT = tl.load(transT_ptr + cc[:, None] * C + cc[None, :], mask=mcc, other=float("-inf"))
    has_tail = lrho > float("-inf")

    ring_off = b * C * K + cc[:, None] * K + jj[None, :]
    ring = tl.load(ring_ptr + ring_off, mask=m2, other=float("-inf"))
    tail = tl.load(tail_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    tstart = tl.load(tstart_ptr + b * C + cc, mask=cmask, other=-1)
    A = tl.load(A_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    E = tl.load(E_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    t = tl.load(istate_ptr + 2 * b)
    n = tl.load(n_ptr + b)

    xrow = x_ptr + b * NMAX * C
    prow = b * (NMAX + 1) * C
    if STORE:
        tl.store(eprev_ptr + prow + cc, _prev_label_row(A, transT, cc, cmask, t, BLOCK_C).to(tl.int64),
                 mask=cmask)
        tl.store(astart_ptr + prow + cc, tl.full([BLOCK_C], -1, tl.int64), mask=cmask)

    for i in range(0, n):
        h = (t + 1) % K
        slot = (K - t % K) % K
        xc = tl.load(xrow + i * C + cc, mask=cmask, other=float("-inf"))
        is_slot = (jj == slot)[None, :] & m2

        old = tl.max(tl.where(is_slot, ring, float("-inf")), axis=1)
        from_new = old + phiK + lrho + xc
        from_old = tail + lrho + xc
        # Ties prefer the shorter segment: the one that just left the ring.
        take_new = (from_new >= from_old) & (from_new > float("-inf")) & has_tail
        tstart = tl.where(take_new, t - K, tstart)
        tail = tl.where(take_new, from_new,
                        tl.where(has_tail & (from_old > float("-inf")), from_old, float("-inf")))

        ring = tl.where(is_slot, E[:, None], ring) + xc[:, None]
        ring = tl.where(m2, ring, float("-inf"))
        phi = tl.load(phicirc_ptr + cc[:, None] * (2 * K) + jj[None, :] + h, mask=m2,
                      other=float("-inf"))
        cand = ring + phi
        best = tl.max(cand, axis=1)
        A = tl.maximum(best, tail)
        if STORE:
            d = ((jj + t) % K) + 1
            best_d = tl.min(tl.where((cand == best[:, None]) & (cand > float("-inf")) & m2,
                                     d[None, :], K + 1), axis=1)
            use_ring = (best >= tail) & (best > float("-inf"))
            a_row = tl.where(use_ring, (t + 1 - best_d).to(tl.int64),
                             tl.where(tail > float("-inf"), tstart, -1))
            tl.store(astart_ptr + prow + (i + 1) * C + cc, a_row.to(tl.int64), mask=cmask)
        E = tl.max(transT + A[None, :], axis=1)
        t += 1
        if STORE:
            tl.store(eprev_ptr + prow + (i + 1) * C + cc,
                     _prev_label_row(A, transT, cc, cmask, t, BLOCK_C).to(tl.int64), mask=cmask)

    tl.store(ring_ptr + ring_off, ring, mask=m2)
    tl.store(tail_ptr + b * C + cc, tail, mask=cmask)
    tl.store(tstart_ptr + b * C + cc, tstart, mask=cmask)
    tl.store(A_ptr + b * C + cc, A, mask=cmask)
    tl.store(E_ptr + b * C + cc, E, mask=cmask)
    tl.store(istate_ptr + 2 * b, t)


def viterbi_forward(x, n, state, model, store=None, num_warps=None):
    """Launch one Viterbi chunk for a batch of B sequences.

    x (B, NMAX, C) fp64 log scores; n (B,) int64. state: dict ring (B, C, K),
    tail, A, E (B, C) fp64, tail_start (B, C) int64, istate (B, 2) int64
    (advanced in place). model: dict phicirc (C, 2K), phiK, lrho (C,),
    transT (C, C). store: None or dict a_start, e_prev (B, NMAX + 1, C) int64.
    """
    check_contiguous(x, n, state, model, store)
    B, NMAX, C = x.shape
    K = state["ring"].shape[2]
    BC, BK = block_sizes(C, K)
    do_store = store is not None
    dummy = state["tail_start"]
    viterbi_forward_kernel[(B,)](
        x, n,
        state["ring"], state["tail"], state["tail_start"], state["A"], state["E"], state["istate"],
        model["phicirc"], model["phiK"], model["lrho"], model["transT"],
        store["a_start"] if do_store else dummy, store["e_prev"] if do_store else dummy,
        C, K, NMAX,
        STORE=do_store, BLOCK_C=BC, BLOCK_K=BK, num_warps=num_warps or num_warps_for(BC, BK))


def viterbi_forward_reference(x, n, state, model, store=None):
    """Plain torch version of :func:`viterbi_forward` (same arguments and effects)."""
    B, NMAX, C = x.shape
    K = state["ring"].shape[2]
    trans = model["transT"].T
    lrho, phiK = model["lrho"], model["phiK"]
    labels = torch.arange(C, device=x.device)
    durations = torch.arange(K, device=x.device)

    def prev_row(A, t):
        v = A[:, None] + trans                      # [c', c]
        best = v.max(0).values
        idx = torch.where((v == best[None, :]) & (v > NEG), labels[:, None], C).min(0).values
        idx = torch.where(best > NEG, idx, -1)
        return torch.full_like(idx, -2) if t == 0 else idx

    for b in range(B):
        ring, tail, tstart = state["ring"][b], state["tail"][b], state["tail_start"][b]
        A, E = state["A"][b], state["E"][b]
        t = int(state["istate"][b, 0])
        if store is not None:
            store["e_prev"][b, 0] = prev_row(A, t)
            store["a_start"][b, 0] = -1
        for i in range(int(n[b])):
            h = (t + 1) % K
            slot = (K - t % K) % K
            xc = x[b, i]
            old = ring[:, slot].clone()
            from_new = old + phiK + lrho + xc
            from_old = tail + lrho + xc
            take_new = (from_new >= from_old) & (from_new > NEG) & (lrho > NEG)
            tstart = torch.where(take_new, torch.full_like(tstart, t - K), tstart)
            tail = torch.where(take_new, from_new,
                               torch.where((lrho > NEG) & (from_old > NEG), from_old,
                                           torch.full_like(from_old, NEG)))
            ring[:, slot] = E
            ring = ring + xc[:, None]
            cand = ring + model["phicirc"][:, h:h + K]
            best = cand.max(1).values
            A = torch.maximum(best, tail)
            if store is not None:
                d = (durations + t) % K + 1
                best_d = torch.where((cand == best[:, None]) & (cand > NEG), d[None, :], K + 1).min(1).values
                use_ring = (best >= tail) & (best > NEG)
                store["a_start"][b, i + 1] = torch.where(
                    use_ring, t + 1 - best_d, torch.where(tail > NEG, tstart, torch.full_like(tstart, -1)))
            E = (A[:, None] + trans).max(0).values
            t += 1
            if store is not None:
                store["e_prev"][b, i + 1] = prev_row(A, t)
        state["ring"][b], state["tail"][b], state["tail_start"][b] = ring, tail, tstart
        state["A"][b], state["E"][b] = A, E
        state["istate"][b, 0] = t
