"""Constants and small jit helpers shared by the kernel families.

The constants are the CPU kernels' (``flashseg.core.cpu_kernels``): both
backends flush at the same floor and rescale at the same thresholds, so the
certificate means the same thing on either.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..cpu_kernels import FLOOR, LOG_FLOOR, RESCALE_HI, RESCALE_LO, LN2

NEG_INF = float("-inf")

# Compiled kernels may read module globals only as constexpr (the interpreter
# does not enforce this): the kernels use these twins, the torch references
# the plain floats above.
FLOOR_C = tl.constexpr(FLOOR)
LOG_FLOOR_C = tl.constexpr(LOG_FLOOR)
RESCALE_HI_C = tl.constexpr(RESCALE_HI)
RESCALE_LO_C = tl.constexpr(RESCALE_LO)
LN2_C = tl.constexpr(LN2)


def block_sizes(C: int, K: int) -> tuple[int, int]:
    """Power-of-two tile sides covering C labels and K durations (ragged edges masked)."""
    return max(2, triton.next_power_of_2(C)), max(2, triton.next_power_of_2(K))


def ring_lanes(block_k: int) -> int:
    """Lanes of a warp that span durations: the ring tile is (BLOCK_K // LANES, BLOCK_C, LANES)."""
    return min(32, block_k)


def check_contiguous(*groups) -> None:
    """The kernels index with row-major strides they compute themselves.

    groups: tensors or dicts of tensors (None skipped).
    """
    for g in groups:
        items = g.items() if isinstance(g, dict) else [("tensor", g)]
        for name, t in items:
            if t is not None and not t.is_contiguous():
                raise ValueError(f"{name} must be contiguous")


def num_warps_for(block_c: int, block_k: int) -> int:
    """Warps per program: about 16 ring values per thread, at most one warp per label.

    The ring tile is laid out (BLOCK_K // LANES, BLOCK_C, LANES): Triton puts
    a warp's lanes on the last axis and the warps on the label axis, so every
    reduction over durations stays inside one warp (shuffles, no barrier) and
    only the C x C transition step crosses warps.
    """
    per_thread = 16
    return int(max(1, min(block_c, 16, triton.next_power_of_2(-(-block_c * block_k // (32 * per_thread))))))


@triton.jit
def ring_axes(BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, LANES: tl.constexpr):
    """Index tiles of the ring: labels (1, BLOCK_C, 1) and ring slots (BLOCK_K // LANES, 1, LANES)."""
    rows = tl.arange(0, BLOCK_K // LANES)[:, None, None]
    labels = tl.arange(0, BLOCK_C)[None, :, None]
    slots = rows * LANES + tl.arange(0, LANES)[None, None, :]
    return labels, slots


@triton.jit
def ring_max(v):
    """Max over the ring's duration axes: (R, BLOCK_C, LANES) -> (BLOCK_C,).

    Each thread's own rows first (registers), then one butterfly across the
    lanes: the other order would shuffle every row.
    """
    return tl.max(tl.max(v, axis=0), axis=1)


@triton.jit
def ring_sum(v):
    """Sum over the ring's duration axes: each thread's rows, then the lanes."""
    return tl.sum(tl.sum(v, axis=0), axis=1)


@triton.jit
def ring_min(v):
    return tl.min(tl.min(v, axis=0), axis=1)


@triton.jit
def col(v):
    """A (BLOCK_C,) label vector broadcast against the ring tile."""
    return v[None, :, None]


@triton.jit
def logaddexp(a, b):
    """log(exp a + exp b) with -inf handled (no NaN from -inf - -inf).

    log(1 + u) instead of log1p(u): the difference is below one ulp of the
    result for every u in [0, 1].
    """
    mx = tl.maximum(a, b)
    mn = tl.minimum(a, b)
    dead = mn == float("-inf")
    gap = tl.where(dead, 0.0, mn - tl.where(dead, 0.0, mx))
    return tl.where(dead, mx, mx + tl.log(1.0 + tl.exp(gap)))


@triton.jit
def frexp_exponent(v):
    """e with v = m * 2**e, m in [0.5, 1), for a positive normal fp64 v (math.frexp)."""
    bits = v.to(tl.int64, bitcast=True)
    return ((bits >> 52) & 0x7FF) - 1022


@triton.jit
def exp2_int(e):
    """2.0**e as fp64 for an integer e in the normal range, exactly."""
    return ((1023 + e) << 52).to(tl.float64, bitcast=True)

