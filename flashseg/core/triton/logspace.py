"""Exact log-space forward over one chunk (the certificate's fallback).

Same recursion as ``cpu_kernels.forward_logspace``, on the ring tile of
``linear.py`` (labels across warps, durations across lanes): the ring holds log
values, A is a log-sum-exp over the K weighted ring entries (max-shifted)
plus the tail; nothing is flushed, so nothing needs certifying. As on the
CPU (``cpu_kernels.forward_logspace``, which says why), every log value is
relative to 2**sexp: each bin's scores lose the chunk's per-bin k ln 2, the
carried values the nearest multiple of ln 2 whenever the largest of E and
A leaves [-LOG_RENORM, LOG_RENORM], and E's log-sum-exp takes log1p of
every term but the largest. Stored rows hold these logs with sexp per row,
ghosts -inf.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .common import LN2, LN2_C, LN2_HI, LN2_HI_C, LN2_LO, LN2_LO_C, LOG_RENORM, LOG_RENORM_C, check_contiguous, \
    col, load_log_model, log1p, log_ring_step, logaddexp, ring_advance, ring_launch, ring_position, ring_sum, \
    ring_tile

NEG = float("-inf")


@triton.jit
def _store_log_row(sE_ptr, sA_ptr, sL_ptr, sS_ptr, sG_ptr, r, srow_s, E, A, tail, sexp, cc, cmask):
    tl.store(sE_ptr + r + cc, E, mask=cmask)
    tl.store(sA_ptr + r + cc, A, mask=cmask)
    tl.store(sL_ptr + r + cc, tail, mask=cmask)
    tl.store(sG_ptr + r + cc, tl.full(E.shape, float("-inf"), tl.float64), mask=cmask)
    tl.store(sS_ptr + srow_s, sexp)


@triton.jit
def _shift(v, j):
    """v - j ln 2 where v is finite (j a fp64 integer, 0: v unchanged)."""
    return tl.where(v > float("-inf"), (v - j * LN2_HI_C) - j * LN2_LO_C, v)


@triton.jit
def _max3(a0, b0, c0, a1, b1, c1):
    return tl.maximum(a0, a1), tl.maximum(b0, b1), tl.maximum(c0, c1)


@triton.jit
def logspace_forward_kernel(
        x_ptr, k_ptr, n_ptr,
        ring_ptr, tail_ptr, A_ptr, E_ptr, t_sexp_ptr, status_ptr,
        phicirc_ptr, phiK_ptr, lrho_ptr, transT_ptr,
        sE_ptr, sA_ptr, sL_ptr, sS_ptr, sG_ptr,
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
    A = tl.load(A_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    E = tl.load(E_ptr + b * C + cc, mask=cmask, other=float("-inf"))
    t = tl.load(t_sexp_ptr + 2 * b)
    sexp = tl.load(t_sexp_ptr + 2 * b + 1)
    n = tl.load(n_ptr + b).to(tl.int32)
    slot, h = ring_position(t, K)   # stepped per bin by ring_advance

    x_ptrs = x_ptr + b * NMAX * C + cc
    k_ptr_b = k_ptr + b * NMAX
    srow = b * (NMAX + 1) * C
    if STORE:
        _store_log_row(sE_ptr, sA_ptr, sL_ptr, sS_ptr, sG_ptr, srow, b * (NMAX + 1), E, A, tail, sexp, cc, cmask)

    # (Clamped into the chunk: the last prefetch re-reads the last row, unused.)
    xc_next = tl.load(x_ptrs, mask=cmask, other=float("-inf"))
    status = n * 0 - 1
    for i in range(0, n):
        top = tl.maximum(tl.max(A, axis=0), tl.max(E, axis=0))
        top_safe = tl.where(top > float("-inf"), top, 0.0)
        j = tl.where(tl.abs(top_safe) > LOG_RENORM_C, tl.floor(top_safe / LN2_C + 0.5), 0.0)
        ring = _shift(ring, j)
        tail = _shift(tail, j)
        E = _shift(E, j)
        A = _shift(A, j)
        k = tl.load(k_ptr_b + i).to(tl.float64)
        sexp += (j + k).to(tl.int64)
        xc = (xc_next - k * LN2_HI_C) - k * LN2_LO_C
        xc_next = tl.load(x_ptrs + tl.minimum(i + 1, n - 1) * C, mask=cmask, other=float("-inf"))
        phi = tl.load(phi_ptrs + h, mask=m3, other=float("-inf"))
        is_slot = slots == slot

        new_ring, cand = log_ring_step(ring, E, xc, phi, is_slot, ROWS_AXIS)
        # The start leaving the ring, the max of the weighted ring and the
        # largest ring entry (is anything alive) in one reduction.
        r = tl.reduce((tl.where(is_slot, ring, float("-inf")), cand, new_ring), ROWS_AXIS, _max3)
        old, m, ring_top = tl.reduce(r, 1, _max3)
        ring = new_ring
        tl_new = logaddexp(tail, old + phiK) + lrho + xc
        tail = tl.where(has_tail & (tl_new > float("-inf")), tl_new, float("-inf"))

        m_safe = tl.where(m > float("-inf"), m, 0.0)
        s = ring_sum(tl.exp(cand - col(m_safe, ROWS_AXIS)), ROWS_AXIS)
        a = tl.where(m > float("-inf"), m_safe + tl.log(tl.where(s > 0.0, s, 1.0)), float("-inf"))
        A = logaddexp(a, tail)
        # Anything alive: a finite A, a finite weighted or unweighted ring entry.
        live = tl.maximum(tl.maximum(A, m), ring_top)
        any_alive = tl.max(live, axis=0) > float("-inf")

        v = transT + A[None, :]
        me = tl.max(v, axis=1)
        me_safe = tl.where(me > float("-inf"), me, 0.0)
        # log1p of every term but one largest (ties add exactly 1 each).
        rest_e = tl.sum(tl.where(v < me_safe[:, None], tl.exp(v - me_safe[:, None]), 0.0), axis=1) \
            + tl.sum(tl.where(v == me_safe[:, None], 1.0, 0.0), axis=1) - 1.0
        E = tl.where(me > float("-inf"), me_safe + log1p(tl.maximum(rest_e, 0.0)), float("-inf"))
        t += 1
        slot, h = ring_advance(slot, h, K)
        status = tl.where((~any_alive) & (status < 0), i, status)
        if STORE:
            _store_log_row(sE_ptr, sA_ptr, sL_ptr, sS_ptr, sG_ptr, srow + (i + 1) * C,
                           b * (NMAX + 1) + i + 1, E, A, tail, sexp, cc, cmask)

    tl.store(ring_ptrs, ring, mask=m3)
    tl.store(tail_ptr + b * C + cc, tail, mask=cmask)
    tl.store(A_ptr + b * C + cc, A, mask=cmask)
    tl.store(E_ptr + b * C + cc, E, mask=cmask)
    tl.store(t_sexp_ptr + 2 * b, t)
    tl.store(t_sexp_ptr + 2 * b + 1, sexp)
    tl.store(status_ptr + b, status.to(tl.int64))


def logspace_forward(x, k, n, state, model, store=None, num_warps=None):
    """Launch one exact log-space chunk for a batch of B sequences.

    x (B, NMAX, C) fp64; k (B, NMAX) int64 the per-bin shifts (DeviceChunk.k);
    n (B,) int64. state: dict ring (B, C, K), tail, A, E
    (B, C) fp64 log values, t_sexp (B, 2) int64 (advanced in place). model:
    dict phicirc, phiK, lrho, transT. store: None or dict E, A, L, ghost
    (B, NMAX + 1, C) fp64 and sexp (B, NMAX + 1) int64. Returns status (B,).
    """
    check_contiguous(x, k, n, state, model, store)
    B, NMAX, C, K, meta = ring_launch(x, state, num_warps)
    status = torch.empty(B, dtype=torch.int64, device=x.device)
    do_store = store is not None
    s = store if do_store else {key: x for key in ("E", "A", "L", "ghost")} | {"sexp": status}
    logspace_forward_kernel[(B,)](
        x, k, n,
        state["ring"], state["tail"], state["A"], state["E"], state["t_sexp"], status,
        model["phicirc"], model["phiK"], model["lrho"], model["transT"],
        s["E"], s["A"], s["L"], s["sexp"], s["ghost"],
        C, K, NMAX,
        STORE=do_store, **meta)
    return status


def _lse_log1p(v, dim):
    """log-sum-exp along dim as the kernels form E's: the largest term plus
    log1p of the others (ties adding exactly 1 each)."""
    m = v.max(dim=dim, keepdim=True).values
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    rest = torch.where(v < safe, torch.exp(v - safe), torch.zeros_like(v)).sum(dim=dim) \
        + (v == safe).to(v.dtype).sum(dim=dim) - 1.0
    out = safe.squeeze(dim) + torch.log1p(rest.clamp(min=0.0))
    return torch.where(torch.isfinite(m.squeeze(dim)), out, m.squeeze(dim))


def _logaddexp(a, b):
    mx, mn = torch.maximum(a, b), torch.minimum(a, b)
    gap = torch.where(mn > NEG, mn - torch.where(mn > NEG, mx, torch.zeros_like(mx)), torch.zeros_like(mn))
    return torch.where(mn > NEG, mx + torch.log1p(torch.exp(gap)), mx)


def logspace_forward_reference(x, k, n, state, model, store=None):
    """Plain torch version of :func:`logspace_forward` (same arguments and effects)."""
    B, NMAX, C = x.shape
    K = state["ring"].shape[2]
    trans = model["transT"].T
    lrho, phiK = model["lrho"], model["phiK"]
    status = torch.full((B,), -1, dtype=torch.int64, device=x.device)

    def store_row(b, r, E, A, tail, sexp):
        store["sexp"][b, r] = sexp
        store["E"][b, r], store["A"][b, r], store["L"][b, r] = E, A, tail
        store["ghost"][b, r] = NEG

    for b in range(B):
        ring, tail, A, E = state["ring"][b], state["tail"][b], state["A"][b], state["E"][b]
        t, sexp = int(state["t_sexp"][b, 0]), int(state["t_sexp"][b, 1])
        if store is not None:
            store_row(b, 0, E, A, tail, sexp)
        for i in range(int(n[b])):
            h = (t + 1) % K
            slot = (K - t % K) % K
            top = float(torch.maximum(A.max(), E.max()))
            j = math.floor(top / LN2 + 0.5) if top > NEG and abs(top) > LOG_RENORM else 0
            if j:
                ring, tail, E, A = (torch.where(v > NEG, (v - j * LN2_HI) - j * LN2_LO, v)
                                    for v in (ring, tail, E, A))
            kb = int(k[b, i])
            sexp += j + kb
            xc = (x[b, i] - kb * LN2_HI) - kb * LN2_LO
            old = ring[:, slot].clone()
            tl_new = _logaddexp(tail, old + phiK) + lrho + xc
            tail = torch.where((lrho > NEG) & (tl_new > NEG), tl_new, torch.full_like(tl_new, NEG))
            ring = ring.clone()
            ring[:, slot] = E
            ring = ring + xc[:, None]
            a = torch.logsumexp(ring + model["phicirc"][:, h:h + K], dim=1)
            A = _logaddexp(a, tail)
            alive = bool((A > NEG).any() or (ring > NEG).any())
            E = _lse_log1p(A[:, None] + trans, dim=0)
            t += 1
            if not alive and status[b] < 0:
                status[b] = i
            if store is not None:
                store_row(b, i + 1, E, A, tail, sexp)
        state["ring"][b], state["tail"][b], state["A"][b], state["E"][b] = ring, tail, A, E
        state["t_sexp"][b, 0], state["t_sexp"][b, 1] = t, sexp
    return status
