"""Per-bin posteriors of one chunk from stored forward and backward rows.

The device twin of ``cpu_kernels.posterior_chunk`` (and, with ``LOG``, of
``posterior_chunk_log`` for the exact fallback's log-space rows): for each
bin i of the chunk,

    p_start[c] = E_f[i, c] G_b[i, c] 2**(s_f + s_b - zexp) / zm   (a label-c segment starts at i)
    p_end[c]   = A_f[i, c] B_b[i, c] 2**(s_f + s_b - zexp) / zm   (one ends at i)
    gamma[i]   = gamma[i - 1] + p_start - p_end, clipped to [0, 1], renormalised
    b[i]       = sum_c p_start[c],   chg[i] = sum_c (E_f - A_f Tr[c, c]) G_b ... (the inflow from other labels)

One program per sequence walks its chunk in blocks of BLOCK_N bins; inside a
block the running sum is a prefix sum (``tl.cumsum``) over the bins, so the
only sequential step is one block to the next. The CPU kernel clips and
renormalises gamma after every bin and carries the clipped value; here the
carry is clipped at block ends. The two differ only where clipping acts
(sums off by rounding), i.e. by rounding. The certificate terms are not
computed here: they need the ghost rows, which the host holds (and amends
for chunk-parallel passes); see ``gpu.GpuBackend.posterior_chunk``.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .common import LN2_C, check_contiguous, exp2_int


@triton.jit
def _ldexp_scale(e):
    """2.0**e for any integer e (0 below the subnormal range), as math.ldexp(1.0, e)."""
    hi = tl.minimum(tl.maximum(e, -1022), 1023)
    lo = tl.minimum(tl.maximum(e - hi, -1022), 0)
    return exp2_int(hi) * exp2_int(lo)


@triton.jit
def _row_offsets(rows, n_rows, REVERSED: tl.constexpr):
    """Where boundary ``rows`` lives in a stored array of n_rows rows (reversed: backward rows)."""
    if REVERSED:
        return n_rows - 1 - rows
    return rows


@triton.jit
def posterior_combine_kernel(
        Ef_ptr, Af_ptr, sf_ptr, Bb_ptr, Gb_ptr, sb_ptr,
        trdiag_ptr, trans_ptr, n_ptr, first_ptr, carry_ptr,
        gamma_ptr, boundary_ptr, change_ptr,
        inv_zm_ptr, zexp_ptr, log_zm_ptr,
        C, F_ROWS, B_ROWS, NMAX,
        B_REVERSED: tl.constexpr, LOG: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    # fp64 and int64 scalars come as one-element tensors (Triton passes Python floats as fp32).
    inv_zm = tl.load(inv_zm_ptr)
    zexp = tl.load(zexp_ptr)
    log_zm = tl.load(log_zm_ptr)
    n = tl.load(n_ptr + b)
    first = tl.load(first_ptr + b)
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < C
    trd = tl.load(trdiag_ptr + cc, mask=cmask, other=0.0)
    carry = tl.load(carry_ptr + b * C + cc, mask=cmask, other=0.0)
    for i0 in range(0, NMAX, BLOCK_N):
        rows = i0 + tl.arange(0, BLOCK_N)
        rmask = rows < n
        m2 = rmask[:, None] & cmask[None, :]
        frow = b * F_ROWS + rows
        brow = b * B_ROWS + _row_offsets(rows, B_ROWS, B_REVERSED)
        empty = float("-inf") if LOG else 0.0
        ef = tl.load(Ef_ptr + frow[:, None] * C + cc[None, :], mask=m2, other=empty)
        af = tl.load(Af_ptr + frow[:, None] * C + cc[None, :], mask=m2, other=empty)
        bb = tl.load(Bb_ptr + brow[:, None] * C + cc[None, :], mask=m2, other=empty)
        gb = tl.load(Gb_ptr + brow[:, None] * C + cc[None, :], mask=m2, other=empty)
        sf = tl.load(sf_ptr + frow, mask=rmask, other=0)
        sb = tl.load(sb_ptr + brow, mask=rmask, other=0)
        if LOG:
            # Log-space rows (the exact fallback), as cpu_kernels.posterior_chunk_log:
            # logs relative to 2**sexp per row, the exponents cancelling as integers.
            base = ((sf + sb - zexp).to(tl.float64) * LN2_C - log_zm)[:, None]
            p_start = tl.exp(ef + gb + base)
            p_end = tl.exp(af + bb + base)
            chg_terms = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float64)
            for cp in range(0, C):
                a_cp = tl.load(Af_ptr + frow * C + cp, mask=rmask, other=float("-inf"))
                t_cp = tl.load(trans_ptr + cp * C + cc, mask=cmask, other=float("-inf"))
                term = tl.exp(a_cp[:, None] + t_cp[None, :] + gb + base)
                chg_terms += tl.where((cc[None, :] != cp) & m2, term, 0.0)
        else:
            # As the CPU kernel: the scales cancel as integers; a large exponent
            # is split between the two factors so neither leaves the fp64 range.
            k = sf + sb - zexp
            k_left = tl.where(k > 900, k // 2, 0)
            scale_left = _ldexp_scale(k_left)[:, None]
            factor = (inv_zm * _ldexp_scale(k - k_left))[:, None]
            p_start = ((ef * scale_left) * gb) * factor
            p_end = ((af * scale_left) * bb) * factor
            inflow = ef - af * trd[None, :]
            chg_terms = tl.where((gb > 0.0) & (inflow > 0.0), ((inflow * scale_left) * gb) * factor, 0.0)
        step = tl.where(m2, p_start - p_end, 0.0)
        running = carry[None, :] + tl.cumsum(step, axis=0)
        clipped = tl.minimum(tl.maximum(running, 0.0), 1.0)
        clipped = tl.where(m2, clipped, 0.0)
        total = tl.sum(clipped, axis=1)
        gamma = clipped / tl.where(total > 0.0, total, 1.0)[:, None]
        tl.store(gamma_ptr + (b * NMAX + rows)[:, None] * C + cc[None, :], gamma, mask=m2)
        at_start = (first + rows) == 0
        bsum = tl.sum(tl.where(m2, p_start, 0.0), axis=1)
        chg = tl.sum(tl.where(m2, chg_terms, 0.0), axis=1)
        tl.store(boundary_ptr + b * NMAX + rows, tl.where(at_start, 1.0, tl.minimum(bsum, 1.0)), mask=rmask)
        tl.store(change_ptr + b * NMAX + rows, tl.where(at_start, 1.0, tl.minimum(chg, 1.0)), mask=rmask)
        # The next block starts from gamma of this block's last bin.
        last = tl.minimum(n - 1, i0 + BLOCK_N - 1)
        carry = tl.where(i0 < n, tl.sum(tl.where((rows == last)[:, None] & m2, gamma, 0.0), axis=0), carry)
    tl.store(carry_ptr + b * C + cc, carry, mask=cmask)


def posterior_combine(fwd, bwd, tr_diag, n, first, carry, inv_zm, zexp, b_reversed=False, block_n=128,
                      log_rows=False, trans=None, nmax=None):
    """Launch the combination for B chunks (one program each).

    fwd, bwd: dicts E, A (B, ROWS, C) fp64 and sexp (B, ROWS) int64: forward
    rows, and backward rows (reversed: row r holds boundary ROWS - 1 - r, as
    the backward pass writes them); tr_diag (C,) the self-transition weights;
    n (B,) bins; first (B,) the chunks' first boundaries; carry (B, C) gamma
    before each chunk, updated in place; Z = zm * 2**zexp, zm = 1 / inv_zm.
    Log-space rows (the exact fallback, ``log_rows``): E and A hold logs
    relative to 2**sexp, and the (C, C) log transitions ``trans`` replace
    tr_diag.
    Returns gamma (B, NMAX, C), boundary and change (B, NMAX), NMAX = n.max()
    (``nmax``, when the caller knows it, spares a device round trip).
    """
    check_contiguous(fwd, bwd, tr_diag, n, first, carry)
    Bsz, f_rows, C = fwd["E"].shape
    b_rows = bwd["E"].shape[1]
    nmax = int(n.max().item()) if nmax is None else int(nmax)
    dev = fwd["E"].device
    gamma = torch.empty((Bsz, nmax, C), dtype=torch.float64, device=dev)
    boundary = torch.empty((Bsz, nmax), dtype=torch.float64, device=dev)
    change = torch.empty((Bsz, nmax), dtype=torch.float64, device=dev)
    if nmax == 0:
        return gamma, boundary, change
    block_c = max(2, triton.next_power_of_2(C))
    is_log = bool(log_rows)
    posterior_combine_kernel[(Bsz,)](
        fwd["E"], fwd["A"], fwd["sexp"], bwd["E"], bwd["A"], bwd["sexp"],
        tr_diag, trans if is_log else tr_diag, n, first, carry, gamma, boundary, change,
        torch.tensor([float(inv_zm)], dtype=torch.float64, device=dev),
        torch.tensor([int(zexp)], dtype=torch.int64, device=dev),
        torch.tensor([-math.log(float(inv_zm)) if is_log and inv_zm > 0 else 0.0], dtype=torch.float64, device=dev),
        C, f_rows, b_rows, nmax,
        B_REVERSED=bool(b_reversed), LOG=is_log, BLOCK_N=block_n if not is_log else min(block_n, 64),
        BLOCK_C=block_c)
    return gamma, boundary, change


def posterior_combine_reference(fwd, bwd, tr_diag, n, first, carry, inv_zm, zexp, b_reversed=False,
                                log_rows=False, trans=None):
    """Plain torch version of :func:`posterior_combine`, bin by bin (as the CPU kernels)."""
    Bsz, _, C = fwd["E"].shape
    nmax = int(n.max().item())
    gamma = torch.zeros((Bsz, nmax, C), dtype=torch.float64)
    boundary = torch.zeros((Bsz, nmax), dtype=torch.float64)
    change = torch.zeros((Bsz, nmax), dtype=torch.float64)
    for b in range(Bsz):
        Bb, Gb, sb = bwd["E"][b], bwd["A"][b], bwd["sexp"][b]
        if b_reversed:
            Bb, Gb, sb = Bb.flip(0), Gb.flip(0), sb.flip(0)
        for i in range(int(n[b])):
            ef, af = fwd["E"][b, i], fwd["A"][b, i]
            if log_rows:
                base = (int(fwd["sexp"][b, i] + sb[i]) - int(zexp)) * math.log(2.0) + math.log(float(inv_zm))
                p_start = torch.exp(ef + Gb[i] + base)
                p_end = torch.exp(af + Bb[i] + base)
                terms = torch.exp(af[:, None] + trans + Gb[i][None, :] + base)
                chg = (terms.sum() - terms.diagonal().sum())
            else:
                k = int(fwd["sexp"][b, i] + sb[i]) - int(zexp)
                k_left = k // 2 if k > 900 else 0
                scale_left = math.ldexp(1.0, k_left)
                factor = math.ldexp(float(inv_zm), k - k_left)
                p_start = ((ef * scale_left) * Gb[i]) * factor
                p_end = ((af * scale_left) * Bb[i]) * factor
                inflow = ef - af * tr_diag
                chg = torch.where((Gb[i] > 0) & (inflow > 0), ((inflow * scale_left) * Gb[i]) * factor,
                                  torch.zeros_like(ef)).sum()
            carry[b] = (carry[b] + p_start - p_end).clamp(0.0, 1.0)
            tot = carry[b].sum()
            if tot > 0:
                carry[b] = carry[b] / tot
            gamma[b, i] = carry[b]
            at_start = int(first[b]) + i == 0
            boundary[b, i] = 1.0 if at_start else min(float(p_start.sum()), 1.0)
            change[b, i] = 1.0 if at_start else min(float(chg), 1.0)
    return gamma, boundary, change
