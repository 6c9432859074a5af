"""Certified linear-space forward over one chunk (the fast path).

Same recursion, flush rules and ghost accounting as
``cpu_kernels.forward_linear`` (docs/algorithms.md, "Linear fast path and its certificate"):
one program per sequence walks the chunk's bins in order; the ring of each
label (the last K starts times their emission products) lives in a register
tile with the labels across warps and the durations across a warp's lanes
(and each thread's rows), so the per-bin reductions over durations never
leave a warp and are fused into one pass (see ``common.num_warps_for``).
Each bin costs O(K C + C^2): the ring is multiplied by the bin's emission
factor and read out against the rotated duration weights (the A message),
and the entering message E is one C x C matrix-vector product. The
transition is never applied per duration.

Precision: everything is fp64 with one shared power-of-two scale per bin
(``sexp``, int64). fp32 mantissas would need a private exponent per stored
value to be exact (docs/algorithms.md, "GPU kernels"); with one shared exponent fp32 would flush
anything 2**-126 below the running maximum, far more often than the fp64
floor of 2**-800, and the certificate would fail on ordinary inputs.

Rescaling is by exact powers of two (bit manipulation, no log/exp), so the
stored mantissas and exponents are those of the CPU kernel up to the order
of the K-term sums.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .common import FLOOR, FLOOR_C, LN2, LN2_C, LOG_FLOOR, LOG_FLOOR_C, RESCALE_HI, RESCALE_HI_C, RESCALE_LO, \
    RESCALE_LO_C, check_contiguous, col, exp2_int, frexp_exponent, logaddexp, ring_advance, ring_launch, \
    ring_max, ring_position, ring_sum, ring_tile


@triton.jit
def _ring_step_combine(old0, acc0, mx0, lost0, old1, acc1, mx1, lost1):
    return old0 + old1, acc0 + acc1, tl.maximum(mx0, mx1), lost0 + lost1


@triton.jit
def _sum_max(a0, b0, a1, b1):
    return a0 + a1, tl.maximum(b0, b1)


@triton.jit
def _max2(a0, b0, a1, b1):
    return tl.maximum(a0, a1), tl.maximum(b0, b1)


@triton.jit
def _ring_step_reduce(old, acc, mx, lost, ROWS_AXIS: tl.constexpr):
    """The four per-label reductions of one bin in one pass: each thread's rows, then the lanes."""
    r = tl.reduce((old, acc, mx, lost), ROWS_AXIS, _ring_step_combine)
    return tl.reduce(r, 1, _ring_step_combine)


@triton.jit
def _charge(ghost, nlost, sexp):
    """Add nlost * FLOOR * 2**sexp (per label, where nlost > 0) to the ghosts, in log space."""
    add = tl.log(tl.where(nlost > 0.0, nlost, 1.0).to(tl.float64)) + LOG_FLOOR_C + sexp.to(tl.float64) * LN2_C
    return tl.where(nlost > 0.0, logaddexp(ghost, add), ghost)


@triton.jit
def _store_row(sE_ptr, sA_ptr, sL_ptr, sG_ptr, sS_ptr, r, rs, E, A, tail, ghost, sexp, cc, cmask):
    tl.store(sE_ptr + r + cc, E, mask=cmask)
    tl.store(sA_ptr + r + cc, A, mask=cmask)
    tl.store(sL_ptr + r + cc, tail, mask=cmask)
    tl.store(sG_ptr + r + cc, ghost, mask=cmask)
    tl.store(sS_ptr + rs, sexp)


@triton.jit
def linear_forward_kernel(
        x_ptr, f_ptr, k_ptr, n_ptr,
        ring_ptr, tail_ptr, A_ptr, E_ptr, ghost_ptr, t_sexp_ptr, status_ptr,
        wcirc_ptr, wpos_ptr, wK_ptr, phiKf_ptr, rho_ptr, TrT_ptr, trposT_ptr,
        sE_ptr, sA_ptr, sL_ptr, sS_ptr, sG_ptr,
        C, K, NMAX,
        STORE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, LANES: tl.constexpr,
        ROWS_AXIS: tl.constexpr):
    b = tl.program_id(0)
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < C
    mcc = cmask[:, None] & cmask[None, :]
    labels, slots, m3, ring_ptrs = ring_tile(ring_ptr, b, C, K, BLOCK_C, BLOCK_K, LANES, ROWS_AXIS)

    # --- model (read once; the rotating duration weights are re-read per bin from cache)
    wK = tl.load(wK_ptr + cc, mask=cmask, other=0.0)
    phiKf = tl.load(phiKf_ptr + cc, mask=cmask, other=0) != 0
    rho = tl.load(rho_ptr + cc, mask=cmask, other=0.0)
    TrT = tl.load(TrT_ptr + cc[:, None] * C + cc[None, :], mask=mcc, other=0.0)
    trposT = tl.load(trposT_ptr + cc[:, None] * C + cc[None, :], mask=mcc, other=0) != 0
    has_tail = rho > 0.0
    w_ptrs = wcirc_ptr + labels * (2 * K) + slots
    wpos_ptrs = wpos_ptr + labels * (2 * K) + slots

    # --- state of this sequence
    ring = tl.load(ring_ptrs, mask=m3, other=0.0)
    tail = tl.load(tail_ptr + b * C + cc, mask=cmask, other=0.0)
    A = tl.load(A_ptr + b * C + cc, mask=cmask, other=0.0)
    E = tl.load(E_ptr + b * C + cc, mask=cmask, other=0.0)
    ghost = tl.load(ghost_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    t = tl.load(t_sexp_ptr + 2 * b)
    sexp = tl.load(t_sexp_ptr + 2 * b + 1)
    n = tl.load(n_ptr + b).to(tl.int32)
    slot, h = ring_position(t, K)   # stepped per bin by ring_advance

    x_ptrs = x_ptr + b * NMAX * C + cc
    f_ptrs = f_ptr + b * NMAX * C + cc
    k_ptr_b = k_ptr + b * NMAX
    srow = b * (NMAX + 1) * C
    if STORE:
        _store_row(sE_ptr, sA_ptr, sL_ptr, sG_ptr, sS_ptr, srow, b * (NMAX + 1), E, A, tail, ghost, sexp,
                   cc, cmask)

    # The next bin's inputs are loaded one bin ahead, off the dependency chain.
    # (Row indices are clamped into the chunk instead of masked: the last
    # prefetch re-reads the last row and is never used.)
    fc_next = tl.load(f_ptrs, mask=cmask, other=0.0)
    xc_next = tl.load(x_ptrs, mask=cmask, other=float("-inf"))
    k_next = tl.load(k_ptr_b)
    status = n * 0 - 1
    for i in range(0, n):
        fc, xc, kb = fc_next, xc_next, k_next
        nxt = tl.minimum(i + 1, n - 1)
        fc_next = tl.load(f_ptrs + nxt * C, mask=cmask, other=0.0)
        xc_next = tl.load(x_ptrs + nxt * C, mask=cmask, other=float("-inf"))
        k_next = tl.load(k_ptr_b + nxt)
        sexp += kb
        w = tl.load(w_ptrs + h, mask=m3, other=0.0)
        is_slot = slots == slot

        # The start K bins back leaves the ring (duration K -> K + 1) for the
        # tail; the new start enters its slot; every live start takes this
        # bin's factor; products below the floor are flushed and counted.
        entered = tl.where(is_slot, col(E, ROWS_AXIS), ring)
        v = entered * col(fc, ROWS_AXIS)
        flushed = v < FLOOR_C
        new_ring = tl.where(flushed, 0.0, v)
        old, acc, mx, nflushed = _ring_step_reduce(
            tl.where(is_slot, ring, 0.0), new_ring * w, new_ring,
            tl.where(flushed & (entered > 0.0), 1.0, 0.0), ROWS_AXIS)
        ring = new_ring

        tl_new = (tail + old * wK) * (rho * fc)
        tl_flush = tl_new < FLOOR_C
        nlost = nflushed + tl.where(has_tail & tl_flush & ((tail > 0.0) | ((old > 0.0) & phiKf)), 1.0, 0.0)
        tail = tl.where(has_tail & (~tl_flush), tl_new, 0.0)

        a = acc + tail
        a_flush = a < FLOOR_C
        # A flushed A is charged K + 1 only if some live start has a really
        # positive weight (mass may be alive only at durations whose weight
        # underflowed). That test needs another pass over the ring; it is
        # made below, in the rare bins that lose something, from this upper
        # bound's candidates.
        a_lost = a_flush & ((mx > 0.0) | (tail > 0.0) | (a > 0.0))
        nlost += tl.where(a_lost, K + 1.0, 0.0)
        A = tl.where(a_flush, 0.0, a)
        h_bin = h

        # Entering message: E[c] = sum_c' A[c'] Tr[c', c] (the factored transition).
        e, feeds = tl.reduce((TrT * A[None, :], tl.where((A[None, :] > 0.0) & trposT, 1, 0)), 1,
                             _sum_max)
        e_flush = e < FLOOR_C
        nlost += tl.where(e_flush & ((e > 0.0) | (feeds > 0)), C * 1.0, 0.0)
        E = tl.where(e_flush, 0.0, e)
        t += 1
        slot, h = ring_advance(slot, h, K)
        # One reduction across the labels (warps) per bin: the largest live
        # value (rescaling, vanished mass) and whether anything was lost.
        live_max, lost_max = tl.reduce((tl.maximum(tl.maximum(mx, tail), tl.maximum(A, E)), nlost), 0, _max2)

        # Ghosts: earlier losses continue through this bin; add this bin's
        # (the log is paid only in bins that lose something).
        ghost = tl.where(ghost > float("-inf"), ghost + xc, ghost)
        if lost_max > 0.0:
            wp = tl.load(wpos_ptrs + h_bin, mask=m3, other=0) != 0
            live = ring_max(tl.where((ring > 0.0) & wp, 1, 0), ROWS_AXIS)
            nlost -= tl.where(a_lost & (tail <= 0.0) & (live == 0), K + 1.0, 0.0)
            ghost = _charge(ghost, nlost, sexp)

        status = tl.where((live_max == 0.0) & (status < 0), i, status)
        if (live_max > RESCALE_HI_C) | ((live_max < RESCALE_LO_C) & (live_max > 0.0)):
            # Rescale by an exact power of two; values pushed below the
            # floor are flushed and charged like any other loss.
            shift = frexp_exponent(live_max)
            scale = exp2_int(-shift)
            sexp += shift
            rv = ring * scale
            rf = rv < FLOOR_C
            nl = ring_sum(tl.where(rf & (ring > 0.0), 1.0, 0.0), ROWS_AXIS)
            ring = tl.where(rf, 0.0, rv)
            tv = tail * scale
            nl += tl.where((tv < FLOOR_C) & (tail > 0.0), 1.0, 0.0)
            tail = tl.where(tv < FLOOR_C, 0.0, tv)
            av = A * scale
            nl += tl.where((av < FLOOR_C) & (A > 0.0), K + 1.0, 0.0)
            A = tl.where(av < FLOOR_C, 0.0, av)
            ev = E * scale
            nl += tl.where((ev < FLOOR_C) & (E > 0.0), C * 1.0, 0.0)
            E = tl.where(ev < FLOOR_C, 0.0, ev)
            ghost = _charge(ghost, nl, sexp)
        if STORE:
            _store_row(sE_ptr, sA_ptr, sL_ptr, sG_ptr, sS_ptr, srow + (i + 1) * C, b * (NMAX + 1) + i + 1,
                       E, A, tail, ghost, sexp, cc, cmask)

    tl.store(ring_ptrs, ring, mask=m3)
    tl.store(tail_ptr + b * C + cc, tail, mask=cmask)
    tl.store(A_ptr + b * C + cc, A, mask=cmask)
    tl.store(E_ptr + b * C + cc, E, mask=cmask)
    tl.store(ghost_ptr + b * C + cc, ghost, mask=cmask)
    tl.store(t_sexp_ptr + 2 * b, t)
    tl.store(t_sexp_ptr + 2 * b + 1, sexp)
    tl.store(status_ptr + b, status.to(tl.int64))


def linear_forward(x, f, k, n, state, model, store=None, num_warps=None):
    """Launch one chunk for a batch of B sequences (all tensors on one device).

    x, f (B, NMAX, C) fp64; k (B, NMAX) int64; n (B,) int64 bins per sequence.
    state: dict ring (B, C, K), tail, A, E, ghost (B, C) fp64, t_sexp (B, 2)
    int64 [t, sexp] — advanced in place. model: dict wcirc, wpos, wK, phiKf,
    rho, TrT, trposT (see ``flashseg.core.gpu.DeviceModel``). store: None or
    dict E, A, L, ghost (B, NMAX + 1, C) fp64 and sexp (B, NMAX + 1) int64.
    Returns status (B,) int64: -1, or the first chunk-local bin at which all
    mass vanished.
    """
    check_contiguous(x, f, k, n, state, model, store)
    B, NMAX, C, K, meta = ring_launch(x, state, num_warps)
    status = torch.empty(B, dtype=torch.int64, device=x.device)
    do_store = store is not None
    s = store if do_store else {key: x for key in ("E", "A", "L", "ghost")} | {"sexp": k}
    linear_forward_kernel[(B,)](
        x, f, k, n,
        state["ring"], state["tail"], state["A"], state["E"], state["ghost"], state["t_sexp"], status,
        model["wcirc"], model["wpos"], model["wK"], model["phiKf"], model["rho"], model["TrT"],
        model["trposT"],
        s["E"], s["A"], s["L"], s["sexp"], s["ghost"],
        C, K, NMAX,
        STORE=do_store, **meta)
    return status


def linear_forward_reference(x, f, k, n, state, model, store=None):
    """Plain torch version of :func:`linear_forward` (same arguments, same effects).

    Vectorised over labels and durations, one Python step per bin; for tests.
    """
    B, NMAX, C = x.shape
    K = state["ring"].shape[2]
    Tr = model["TrT"].T
    trpos = model["trposT"].T != 0
    wpos_all = model["wpos"] != 0
    phiKf = model["phiKf"] != 0
    rho, wK = model["rho"], model["wK"]
    status = torch.full((B,), -1, dtype=torch.int64, device=x.device)
    for b in range(B):
        ring, tail = state["ring"][b], state["tail"][b]
        A, E, ghost = state["A"][b], state["E"][b], state["ghost"][b]
        t, sexp = int(state["t_sexp"][b, 0]), int(state["t_sexp"][b, 1])
        if store is not None:
            store["E"][b, 0], store["A"][b, 0], store["L"][b, 0] = E, A, tail
            store["ghost"][b, 0], store["sexp"][b, 0] = ghost, sexp
        for i in range(int(n[b])):
            sexp += int(k[b, i])
            h = (t + 1) % K
            slot = (K - t % K) % K
            fc, xc = f[b, i], x[b, i]
            old = ring[:, slot].clone()
            tl_new = (tail + old * wK) * (rho * fc)
            lost = ((rho > 0) & (tl_new < FLOOR) & ((tail > 0) | ((old > 0) & phiKf))).double()
            tail = torch.where((rho > 0) & (tl_new >= FLOOR), tl_new, torch.zeros_like(tl_new))
            ring[:, slot] = E
            v = ring * fc[:, None]
            lost += ((v < FLOOR) & (ring > 0)).sum(1).double()
            ring = torch.where(v < FLOOR, torch.zeros_like(v), v)
            w = model["wcirc"][:, h:h + K]
            a = (ring * w).sum(1) + tail
            mx = ring.max(1).values
            alive = (tail > 0) | ((ring > 0) & wpos_all[:, h:h + K]).any(1)
            lost += ((a < FLOOR) & ((mx > 0) | (tail > 0) | (a > 0)) & alive).double() * (K + 1)
            A = torch.where(a < FLOOR, torch.zeros_like(a), a)
            e = A @ Tr
            feeds = ((A[:, None] > 0) & trpos).any(0)
            lost += ((e < FLOOR) & ((e > 0) | feeds)).double() * C
            E = torch.where(e < FLOOR, torch.zeros_like(e), e)
            live_max = max(float(mx.max()), float(tail.max()), float(A.max()), float(E.max()))
            t += 1
            ghost = torch.where(ghost > -torch.inf, ghost + xc, ghost)
            add = torch.log(lost.clamp(min=1.0)) + LOG_FLOOR + sexp * LN2
            ghost = torch.where(lost > 0, torch.logaddexp(ghost, add), ghost)
            if live_max == 0.0:
                if status[b] < 0:
                    status[b] = i
            elif live_max > RESCALE_HI or live_max < RESCALE_LO:
                shift = math.frexp(live_max)[1]
                scale = 2.0 ** -shift
                sexp += shift
                nl = torch.zeros(C, dtype=torch.float64, device=x.device)
                parts = []
                for arr, weight in ((ring, 1.0), (tail, 1.0), (A, K + 1.0), (E, float(C))):
                    sv = arr * scale
                    cnt = ((sv < FLOOR) & (arr > 0)).double() * weight
                    nl += cnt.sum(1) if cnt.dim() == 2 else cnt
                    parts.append(torch.where(sv < FLOOR, torch.zeros_like(sv), sv))
                ring, tail, A, E = parts
                add2 = torch.log(nl.clamp(min=1.0)) + LOG_FLOOR + sexp * LN2
                ghost = torch.where(nl > 0, torch.logaddexp(ghost, add2), ghost)
            if store is not None:
                store["E"][b, i + 1], store["A"][b, i + 1], store["L"][b, i + 1] = E, A, tail
                store["ghost"][b, i + 1], store["sexp"][b, i + 1] = ghost, sexp
        state["ring"][b], state["tail"][b], state["A"][b], state["E"][b] = ring, tail, A, E
        state["ghost"][b] = ghost
        state["t_sexp"][b, 0], state["t_sexp"][b, 1] = t, sexp
    return status
