"""Posterior sampling on the device: many samples' backward walks in one launch.

The device twin of ``cpu_kernels.sample_walk`` (docs/algorithms.md, "Sampling"
posterior sampling"), with the same resumable protocol: one program per
sample advances its walk through one chunk [a, b) from the chunk's forward
rows (natural logs, true scale) until the walk leaves the chunk, or until
it needs something only the host has. The program then stores its state
and a code saying what: more uniforms (the sample's random stream, drawn on
the host from the sample's own generator, in order), room for more
segments, or the ring entries of the chunk's checkpoint for one label.
The host supplies it and launches again; samples that have left the chunk
return at once.

Every draw consumes the same uniform as on the CPU, in the same order, so
both devices draw the same samples from the same seed; only sums are
associated differently (``tl.cumsum`` is a scan), which can move a draw
that falls within rounding of a boundary between two outcomes.

Inside a program the draws are vectorised: a label over BLOCK_C labels, a
duration over BLOCK_K durations (the emission sums as a prefix sum), and a
tail's walk back BLOCK_T bins at a time (the survival product as a prefix
sum of logs, stopping at the first bin where it falls to the uniform).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ..numeric import WALK_CHUNK_DONE, WALK_NEED_RING, WALK_NEED_SPACE, WALK_NEED_UNIFORMS, WALK_ZERO
from .common import check_contiguous

# Module globals reach compiled kernels only as constexpr.
_DONE = tl.constexpr(WALK_CHUNK_DONE)
_NEED_UNIFORMS = tl.constexpr(WALK_NEED_UNIFORMS)
_NEED_SPACE = tl.constexpr(WALK_NEED_SPACE)
_NEED_RING = tl.constexpr(WALK_NEED_RING)
_ZERO = tl.constexpr(WALK_ZERO)
_RUNNING = tl.constexpr(-1)


@triton.jit
def _draw_index(logw, valid, u):
    """As cpu_kernels._draw_from_logs: the first index whose running sum of
    exp(logw) exceeds u times the total (the last valid one if rounding lets
    none), -1 if every weight is 0. ``valid`` must be a prefix of the block."""
    m = tl.max(tl.where(valid, logw, float("-inf")), axis=0)
    live = valid & (logw > float("-inf"))
    w = tl.where(live, tl.exp(logw - tl.where(m > float("-inf"), m, 0.0)), 0.0)
    total = tl.sum(w, axis=0)
    running = tl.cumsum(w, axis=0)
    below = tl.sum((valid & (running <= u * total)).to(tl.int32), axis=0)
    n_valid = tl.sum(valid.to(tl.int32), axis=0)
    return tl.where(total > 0.0, tl.minimum(below, n_valid - 1), -1)


@triton.jit
def _log_uniform(u):
    """log u, -inf for u = 0 (as the host walk; the inner where keeps log(0) out)."""
    return tl.where(u > 0.0, tl.log(tl.where(u > 0.0, u, 1.0)), float("-inf"))


@triton.jit
def _emit_segment(out_s_ptr, out_e_ptr, out_c_ptr, at, start, end, label, n_out):
    """Write one segment at flat index ``at`` of the sample's output; returns the new count."""
    tl.store(out_s_ptr + at, start)
    tl.store(out_e_ptr + at, end)
    tl.store(out_c_ptr + at, label.to(tl.int64))
    return n_out + 1


@triton.jit
def sample_walk_kernel(
        st_i_ptr, st_f_ptr, u_ptr, u_len_ptr, u_pos_ptr,
        out_s_ptr, out_e_ptr, out_c_ptr, n_out_ptr, code_ptr, need_ptr,
        x_ptr, lE_ptr, lA_ptr, lL_ptr, ring_ptr, ready_ptr,
        phicirc_ptr, lrho_ptr, transT_ptr, final_ptr, ab_ptr,
        C, K, UCAP, OCAP,
        BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr):
    s = tl.program_id(0)
    a = tl.load(ab_ptr)
    b = tl.load(ab_ptr + 1)
    # State as cpu_kernels.sample_walk: [phase, pos, label, tail end], [log u, log survival].
    phase = tl.load(st_i_ptr + s * 4).to(tl.int32)
    pos = tl.load(st_i_ptr + s * 4 + 1)
    c = tl.load(st_i_ptr + s * 4 + 2).to(tl.int32)
    tail_end = tl.load(st_i_ptr + s * 4 + 3)
    log_u = tl.load(st_f_ptr + s * 2)
    log_s = tl.load(st_f_ptr + s * 2 + 1)
    u_row = u_ptr + s * UCAP
    u_len = tl.load(u_len_ptr + s)
    u_pos = tl.load(u_pos_ptr + s)
    n_out = tl.load(n_out_ptr + s)
    need = tl.full([], -1, tl.int32)
    code = tl.full([], _RUNNING, tl.int32)
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < C
    dd = tl.arange(0, BLOCK_K) + 1
    steps = tl.arange(0, BLOCK_T)
    while code == _RUNNING:
        in_range = (((phase == 2) | (phase == 3)) & (a < pos) & (pos <= b)) | (
            (phase == 1) & (a <= pos) & (pos <= b))
        r = pos - a
        if in_range == 0:
            code = _DONE
        elif u_pos + 2 > u_len:
            code = _NEED_UNIFORMS
        elif n_out >= OCAP:
            code = _NEED_SPACE
        elif (phase == 2) & (c < 0):
            # Contig end: the last label.
            logs = (tl.load(lA_ptr + r * C + cc, mask=cmask, other=float("-inf"))
                    + tl.load(final_ptr + cc, mask=cmask, other=float("-inf")))
            idx = _draw_index(logs, cmask, tl.load(u_row + u_pos))
            u_pos += 1
            if idx < 0:
                code = _ZERO
            else:
                c = idx
        elif phase == 2:
            dmax = tl.minimum(pos, K)
            inside = tl.minimum(dmax, r)
            if (dmax > inside) & (tl.load(ready_ptr + c) == 0):
                code = _NEED_RING
                need = c
            else:
                lrho_c = tl.load(lrho_ptr + c)
                lA_c = tl.load(lA_ptr + r * C + c)
                lL_c = tl.load(lL_ptr + r * C + c)
                tail_first = 0
                if lrho_c > float("-inf"):
                    # Drawn whenever label c has a tail at all (see driver.sample).
                    into_tail = _log_uniform(tl.load(u_row + u_pos)) + lA_c < lL_c
                    u_pos += 1
                    if into_tail:
                        tail_first = 1
                        phase = 3
                        tail_end = pos
                        log_u = _log_uniform(tl.load(u_row + u_pos))
                        log_s = lrho_c * 0.0   # fp64 zero (lrho_c is finite here)
                        u_pos += 1
                if tail_first == 0:
                    # Durations 1..inside start in this chunk, longer ones in the
                    # ring of the chunk's checkpoint.
                    here = dd <= inside
                    allowed = dd <= dmax
                    row = r - dd
                    xs = tl.cumsum(tl.load(x_ptr + row * C + c, mask=here, other=0.0), axis=0)
                    from_chunk = tl.load(lE_ptr + row * C + c, mask=here, other=float("-inf"))
                    slot = ((dd - pos) % K + K) % K
                    from_ring = tl.load(ring_ptr + c * K + slot, mask=allowed & (dd > inside),
                                        other=float("-inf"))
                    phi = tl.load(phicirc_ptr + c * (2 * K) + dd, mask=allowed, other=float("-inf"))
                    logs = tl.where(here, from_chunk, from_ring) + xs + phi
                    idx = _draw_index(logs, allowed, tl.load(u_row + u_pos))
                    u_pos += 1
                    if idx < 0:
                        code = _ZERO
                    else:
                        d = idx + 1
                        n_out = _emit_segment(out_s_ptr, out_e_ptr, out_c_ptr, s * OCAP + n_out, pos - d, pos, c,
                                              n_out)
                        phase = 1
                        pos = pos - d
        elif phase == 3:
            # Tail: walk back while the L recursion says "started even earlier",
            # BLOCK_T bins at a time; one uniform per tail inverts the survival product.
            lrho_c = tl.load(lrho_ptr + c)
            t = pos
            stopped = 0
            while (t > a) & (stopped == 0):
                ti = t - steps
                valid = ti > a
                prev = tl.load(lL_ptr + (ti - 1 - a) * C + c, mask=valid, other=float("-inf"))
                cur = tl.load(lL_ptr + (ti - a) * C + c, mask=valid, other=0.0)
                # Where prev is -inf the factor is -inf whatever cont is: keep
                # -inf - -inf (NaN) out of it.
                cont = (prev + lrho_c + tl.load(x_ptr + (ti - 1 - a) * C + c, mask=valid, other=0.0)
                        - tl.where(prev > float("-inf"), cur, 0.0))
                factor = tl.where(prev > float("-inf"), tl.minimum(cont, 0.0), float("-inf"))
                survival = log_s + tl.cumsum(tl.where(valid, factor, 0.0), axis=0)
                first = tl.min(tl.where(valid & (log_u >= survival), steps, BLOCK_T), axis=0)
                if first < BLOCK_T:
                    stopped = 1
                    log_s = tl.where(first > 0, tl.sum(tl.where(steps == first - 1, survival, 0.0), axis=0), log_s)
                    t = t - first
                else:
                    n_valid = tl.sum(valid.to(tl.int32), axis=0)
                    log_s = tl.sum(tl.where(steps == n_valid - 1, survival, 0.0), axis=0)
                    t = t - n_valid
            pos = t
            if stopped == 0:
                code = _DONE
            else:
                start = t - 1 - K
                n_out = _emit_segment(out_s_ptr, out_e_ptr, out_c_ptr, s * OCAP + n_out, start, tail_end, c, n_out)
                phase = 1
                pos = start
        else:
            # phase 1: a label-c segment starts at pos; draw the previous label.
            if pos == 0:
                phase = 0
                code = _DONE
            else:
                logs = (tl.load(lA_ptr + r * C + cc, mask=cmask, other=float("-inf"))
                        + tl.load(transT_ptr + c * C + cc, mask=cmask, other=float("-inf")))
                idx = _draw_index(logs, cmask, tl.load(u_row + u_pos))
                u_pos += 1
                if idx < 0:
                    code = _ZERO
                else:
                    phase = 2
                    c = idx
    tl.store(st_i_ptr + s * 4, phase.to(tl.int64))
    tl.store(st_i_ptr + s * 4 + 1, pos)
    tl.store(st_i_ptr + s * 4 + 2, c.to(tl.int64))
    tl.store(st_i_ptr + s * 4 + 3, tail_end)
    tl.store(st_f_ptr + s * 2, log_u)
    tl.store(st_f_ptr + s * 2 + 1, log_s)
    tl.store(u_pos_ptr + s, u_pos)
    tl.store(n_out_ptr + s, n_out)
    tl.store(code_ptr + s, code.to(tl.int64))
    tl.store(need_ptr + s, need.to(tl.int64))


def sample_walk(walk, rows, ring, ready, model, a: int, b: int, block_t: int = 128):
    """Launch one program per sample to advance its walk through chunk [a, b).

    walk: dict of the samples' device state, updated in place: st_i (S, 4)
    int64 and st_f (S, 2) fp64 (as cpu_kernels.sample_walk), uniforms u
    (S, UCAP) fp64 with u_len and u_pos (S,) int64, segments out_s, out_e,
    out_c (S, OCAP) int64 after n_out (S,) int64; code (S,) gets each
    sample's WALK_* code and need (S,) the label whose ring is wanted.
    rows: x (n, C) scores and lE, lA, lL (n + 1, C) forward rows (natural
    logs, true scale); ring (C, K) ring entries' logs, valid where ready (C,)
    int64 is 1; model: the DeviceModel's log dict plus ``final`` (C,).
    """
    check_contiguous(walk, rows, ring, ready, model)
    S = walk["st_i"].shape[0]
    C, K = ring.shape
    block_c = max(2, triton.next_power_of_2(C))
    block_k = max(2, triton.next_power_of_2(K))
    ab = torch.tensor([a, b], dtype=torch.int64, device=ring.device)
    sample_walk_kernel[(S,)](
        walk["st_i"], walk["st_f"], walk["u"], walk["u_len"], walk["u_pos"],
        walk["out_s"], walk["out_e"], walk["out_c"], walk["n_out"], walk["code"], walk["need"],
        rows["x"], rows["lE"], rows["lA"], rows["lL"], ring, ready,
        model["phicirc"], model["lrho"], model["transT"], model["final"], ab,
        C, K, walk["u"].shape[1], walk["out_s"].shape[1],
        BLOCK_C=block_c, BLOCK_K=block_k, BLOCK_T=block_t, num_warps=4)


def sample_walk_reference(walk, rows, ring, ready, model, a: int, b: int):
    """:func:`sample_walk` by the host's compiled walk (cpu_kernels.sample_walk),
    sample by sample on the same tensors (CPU tensors: they are updated in place
    through numpy views)."""
    from .. import cpu_kernels as kern

    view = {key: v.numpy() for key, v in walk.items()}
    C, K = ring.shape
    x, lE, lA, lL = (rows[key].numpy() for key in ("x", "lE", "lA", "lL"))
    trans = np.ascontiguousarray(model["transT"].numpy().T)
    logs = np.empty(max(K, C))
    for s in range(view["st_i"].shape[0]):
        u = view["u"][s, :view["u_len"][s]]
        code, u_pos, n_out, label = kern.sample_walk(
            view["st_i"][s], view["st_f"][s], a, b, x, lE, lA, lL, ring.numpy(), ready.numpy().astype(bool),
            model["phicirc"].numpy(), model["lrho"].numpy(), trans, model["final"].numpy(), K,
            u, int(view["u_pos"][s]), view["out_s"][s], view["out_e"][s], view["out_c"][s],
            int(view["n_out"][s]), logs)
        view["code"][s], view["u_pos"][s], view["n_out"][s], view["need"][s] = code, u_pos, n_out, label
