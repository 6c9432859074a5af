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
    """Enough warps that the (C, K) ring tile stays in registers (<= 32 fp64 per thread)."""
    elems = block_c * block_k
    return int(min(16, max(1, triton.next_power_of_2(-(-elems // (32 * 32))))))


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

