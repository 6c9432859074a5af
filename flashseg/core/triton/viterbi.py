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

from .common import check_contiguous, col, load_log_model, log_ring_step, ring_advance, ring_launch, ring_min, \
    ring_position, ring_tile

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
def _max2(a0, b0, a1, b1):
    return tl.maximum(a0, a1), tl.maximum(b0, b1)


@triton.jit
def _ring_max2(u, v, ROWS_AXIS: tl.constexpr):
    """(max of u, max of v) over the ring's duration axes in one pass."""
    u1, v1 = tl.reduce((u, v), ROWS_AXIS, _max2)
    return tl.reduce((u1, v1), 1, _max2)


@triton.jit
def viterbi_forward_kernel(
        x_ptr, n_ptr,
        ring_ptr, tail_ptr, tstart_ptr, A_ptr, E_ptr, t_sexp_ptr,
        phicirc_ptr, phiK_ptr, lrho_ptr, transT_ptr,
        astart_ptr, eprev_ptr,
        C, K, NMAX,
        STORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, LANES: tl.constexpr,
        ROWS_AXIS: tl.constexpr):
    b = tl.program_id(0)
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < C
    labels, slots, m3, ring_ptrs = ring_tile(ring_ptr, b, C, K, BLOCK_C, BLOCK_K, LANES, ROWS_AXIS)
    phiK, lrho, transT, has_tail, phi_ptrs = load_log_model(phiK_ptr, lrho_ptr, transT_ptr, phicirc_ptr,
                                                            labels, slots, cc, cmask, C, K)

    ring = tl.load(ring_ptrs, mask=m3, other=float("-inf"))
    tail = tl.load(tail_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    tstart = tl.load(tstart_ptr + b * C + cc, mask=cmask, other=-1)
    A = tl.load(A_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    E = tl.load(E_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    t = tl.load(t_sexp_ptr + 2 * b)
    n = tl.load(n_ptr + b).to(tl.int32)
    slot, h = ring_position(t, K)   # stepped per bin by ring_advance

    x_ptrs = x_ptr + b * NMAX * C + cc
    prow = b * (NMAX + 1) * C
    if STORE:
        tl.store(eprev_ptr + prow + cc, _prev_label_row(A, transT, cc, cmask, t, BLOCK_C).to(tl.int64),
                 mask=cmask)
        tl.store(astart_ptr + prow + cc, tl.full([BLOCK_C], -1, tl.int64), mask=cmask)

    # The next bin's scores are loaded one bin ahead, off the dependency chain.
    # (Clamped into the chunk: the last prefetch re-reads the last row, unused.)
    xc_next = tl.load(x_ptrs, mask=cmask, other=float("-inf"))
    for i in range(0, n):
        xc = xc_next
        xc_next = tl.load(x_ptrs + tl.minimum(i + 1, n - 1) * C, mask=cmask, other=float("-inf"))
        phi = tl.load(phi_ptrs + h, mask=m3, other=float("-inf"))
        is_slot = slots == slot

        new_ring, cand = log_ring_step(ring, E, xc, phi, is_slot, ROWS_AXIS)
        # One reduction gives both the start leaving the ring and the best duration.
        old, best = _ring_max2(tl.where(is_slot, ring, float("-inf")), cand, ROWS_AXIS)
        ring = new_ring

        from_new = old + phiK + lrho + xc
        from_old = tail + lrho + xc
        # Ties prefer the shorter segment: the one that just left the ring.
        take_new = (from_new >= from_old) & (from_new > float("-inf")) & has_tail
        tstart = tl.where(take_new, t - K, tstart)
        tail = tl.where(take_new, from_new,
                        tl.where(has_tail & (from_old > float("-inf")), from_old, float("-inf")))
        A = tl.maximum(best, tail)
        if STORE:
            d = tl.where(slots >= slot, slots - slot, slots - slot + K) + 1
            is_best = (cand == col(best, ROWS_AXIS)) & (cand > float("-inf")) & m3
            best_d = ring_min(tl.where(is_best, d, K + 1), ROWS_AXIS)
            use_ring = (best >= tail) & (best > float("-inf"))
            a_row = tl.where(use_ring, (t + 1 - best_d).to(tl.int64),
                             tl.where(tail > float("-inf"), tstart, -1))
            tl.store(astart_ptr + prow + (i + 1) * C + cc, a_row.to(tl.int64), mask=cmask)
        E = tl.max(transT + A[None, :], axis=1)
        t += 1
        slot, h = ring_advance(slot, h, K)
        if STORE:
            tl.store(eprev_ptr + prow + (i + 1) * C + cc,
                     _prev_label_row(A, transT, cc, cmask, t, BLOCK_C).to(tl.int64), mask=cmask)

    tl.store(ring_ptrs, ring, mask=m3)
    tl.store(tail_ptr + b * C + cc, tail, mask=cmask)
    tl.store(tstart_ptr + b * C + cc, tstart, mask=cmask)
    tl.store(A_ptr + b * C + cc, A, mask=cmask)
    tl.store(E_ptr + b * C + cc, E, mask=cmask)
    tl.store(t_sexp_ptr + 2 * b, t)


def viterbi_forward(x, n, state, model, store=None, num_warps=None):
    """Launch one Viterbi chunk for a batch of B sequences.

    x (B, NMAX, C) fp64 log scores; n (B,) int64. state: dict ring (B, C, K),
    tail, A, E (B, C) fp64, tail_start (B, C) int64, t_sexp (B, 2) int64
    (advanced in place). model: dict phicirc (C, 2K), phiK, lrho (C,),
    transT (C, C). store: None or dict a_start, e_prev (B, NMAX + 1, C) int64.
    """
    check_contiguous(x, n, state, model, store)
    B, NMAX, C, K, meta = ring_launch(x, state, num_warps)
    do_store = store is not None
    dummy = state["tail_start"]
    viterbi_forward_kernel[(B,)](
        x, n,
        state["ring"], state["tail"], state["tail_start"], state["A"], state["E"], state["t_sexp"],
        model["phicirc"], model["phiK"], model["lrho"], model["transT"],
        store["a_start"] if do_store else dummy, store["e_prev"] if do_store else dummy,
        C, K, NMAX,
        STORE=do_store, **meta)


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
        t = int(state["t_sexp"][b, 0])
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
        state["t_sexp"][b, 0] = t
