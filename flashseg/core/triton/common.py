"""Constants and small jit helpers shared by the kernel families.

The constants are ``flashseg.core.numeric``'s, shared with the numba
kernels: both backends flush at the same floor and rescale at the same
thresholds, so the certificate means the same thing on either.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

from ..numeric import FLOOR, LN2, LN2_HI, LN2_LO, LOG_FLOOR, LOG_RENORM, RESCALE_HI, RESCALE_LO

NEG_INF = float("-inf")

# Compiled kernels may read module globals only as constexpr (the interpreter
# does not enforce this): the kernels use these twins, the torch references
# the plain floats above.
FLOOR_C = tl.constexpr(FLOOR)
LOG_FLOOR_C = tl.constexpr(LOG_FLOOR)
RESCALE_HI_C = tl.constexpr(RESCALE_HI)
RESCALE_LO_C = tl.constexpr(RESCALE_LO)
LN2_C = tl.constexpr(LN2)
LN2_HI_C = tl.constexpr(LN2_HI)
LN2_LO_C = tl.constexpr(LN2_LO)
LOG_RENORM_C = tl.constexpr(LOG_RENORM)


def block_sizes(C: int, K: int) -> tuple[int, int]:
    """Power-of-two tile sides covering C labels and K durations (ragged edges masked)."""
    return max(2, triton.next_power_of_2(C)), max(2, triton.next_power_of_2(K))


def ring_lanes(block_k: int) -> int:
    """Lanes of a warp that span durations (the ring tile's last axis)."""
    return min(32, block_k)


def ring_launch(x, state, num_warps=None):
    """Shapes and compile-time parameters shared by the ring kernels' launchers.

    x: the chunk's (B, NMAX, C) scores; state: a dict holding the (B, C, K)
    ring. Returns B, NMAX, C, K and the keyword arguments for the launch.
    """
    B, NMAX, C = x.shape
    if NMAX == 0:
        raise ValueError("empty chunk: the kernels prefetch row 0")
    K = state["ring"].shape[2]
    BC, BK = block_sizes(C, K)
    meta = dict(BLOCK_C=BC, BLOCK_K=BK, LANES=ring_lanes(BK), ROWS_AXIS=ring_rows_axis(),
                num_warps=num_warps or num_warps_for(BC, BK))
    return B, NMAX, C, K, meta


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
    """Warps per program: one per label (up to 16; then two or more labels per warp).

    The ring tile (see ``ring_rows_axis``) has a warp's lanes on its last
    axis and the warps on the label axis, so every reduction over durations
    stays inside one warp (registers, then shuffles; no barrier) and only the
    C x C transition step crosses warps. Fewer warps than labels put several
    labels in each thread and spill (seen with ptxas -v).
    """
    return int(min(block_c, 16))


def ring_rows_axis() -> int:
    """Where the ring tile keeps each thread's rows: 0 -> (R, BLOCK_C, LANES), 1 -> (BLOCK_C, R, LANES).

    Triton orders a tile's axes by the contiguity of the pointers loaded
    through it, and both the row and the label axis have contiguity 1: up to
    3.6 the lower axis index wins the tie, later versions take the higher
    one. Putting the labels on the axis that wins keeps the warps on labels.
    """
    forced = os.environ.get("FLASHSEG_RING_ROWS_AXIS")   # for measuring both on one version
    if forced in ("0", "1"):
        return int(forced)
    version = tuple(int(part) for part in triton.__version__.split(".")[:2])
    return 1 if version <= (3, 6) else 0


@triton.jit
def ring_axes(BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, LANES: tl.constexpr, ROWS_AXIS: tl.constexpr):
    """Index tiles of the ring: labels and ring slots, broadcastable to the 3-D ring tile."""
    if ROWS_AXIS == 0:
        rows = tl.arange(0, BLOCK_K // LANES)[:, None, None]
        labels = tl.arange(0, BLOCK_C)[None, :, None]
    else:
        rows = tl.arange(0, BLOCK_K // LANES)[None, :, None]
        labels = tl.arange(0, BLOCK_C)[:, None, None]
    slots = rows * LANES + tl.arange(0, LANES)[None, None, :]
    return labels, slots


@triton.jit
def ring_tile(ring_ptr, b, C, K, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, LANES: tl.constexpr,
              ROWS_AXIS: tl.constexpr):
    """Sequence b's ring tile: (labels, slots, mask, pointers into the (B, C, K) ring state)."""
    labels, slots = ring_axes(BLOCK_C, BLOCK_K, LANES, ROWS_AXIS)
    return labels, slots, (labels < C) & (slots < K), ring_ptr + b * C * K + labels * K + slots


@triton.jit
def ring_position(t, K):
    """(slot the next start takes, rotation of the duration weights) after t bins, as int32.

    Computed once per chunk; each bin then steps them with :func:`ring_advance`
    (a 64-bit remainder per bin would be a software call on the GPU).
    """
    return ((K - t % K) % K).to(tl.int32), ((t + 1) % K).to(tl.int32)


@triton.jit
def ring_advance(slot, h, K):
    """The ring position one bin later."""
    return tl.where(slot == 0, K - 1, slot - 1), tl.where(h == K - 1, 0, h + 1)


@triton.jit
def load_log_model(phiK_ptr, lrho_ptr, transT_ptr, phicirc_ptr, labels, slots, cc, cmask, C, K):
    """The log-space model (Viterbi and the exact forward): phiK, lrho, transT, has_tail and
    the pointers of the rotating duration weights."""
    mcc = cmask[:, None] & cmask[None, :]
    phiK = tl.load(phiK_ptr + cc, mask=cmask, other=float("-inf"))
    lrho = tl.load(lrho_ptr + cc, mask=cmask, other=float("-inf"))
    transT = tl.load(transT_ptr + cc[:, None] * C + cc[None, :], mask=mcc, other=float("-inf"))
    return phiK, lrho, transT, lrho > float("-inf"), phicirc_ptr + labels * (2 * K) + slots


@triton.jit
def ring_max(v, ROWS_AXIS: tl.constexpr):
    """Max over the ring's duration axes -> (BLOCK_C,).

    Each thread's own rows first (registers), then one butterfly across the
    lanes: the other order would shuffle every row.
    """
    return tl.max(tl.max(v, axis=ROWS_AXIS), axis=1)


@triton.jit
def ring_sum(v, ROWS_AXIS: tl.constexpr):
    """Sum over the ring's duration axes: each thread's rows, then the lanes."""
    return tl.sum(tl.sum(v, axis=ROWS_AXIS), axis=1)


@triton.jit
def ring_min(v, ROWS_AXIS: tl.constexpr):
    return tl.min(tl.min(v, axis=ROWS_AXIS), axis=1)


@triton.jit
def col(v, ROWS_AXIS: tl.constexpr):
    """A (BLOCK_C,) label vector broadcast against the ring tile."""
    if ROWS_AXIS == 0:
        return v[None, :, None]
    else:
        return v[:, None, None]


@triton.jit
def log_ring_step(ring, E, xc, phi, is_slot, ROWS_AXIS: tl.constexpr):
    """One bin of a log-space ring (Viterbi and the exact forward).

    The entering message E takes the free slot, every start adds the bin's
    scores xc, and the rotated duration weights phi give the candidates
    whose max (Viterbi) or log-sum-exp (forward) is A. Returns (ring, cand).
    """
    new_ring = tl.where(is_slot, col(E, ROWS_AXIS), ring) + col(xc, ROWS_AXIS)
    return new_ring, new_ring + phi


@triton.jit
def log1p(u):
    """log(1 + u) for u >= 0 to a few ulps of the result (Goldberg's form:
    log(w) u / (w - 1) with w = 1 + u rounded), as math.log1p. A plain
    log(1 + u) is off by up to half an ulp of 1, and on data with recurring
    values the same way bin after bin: the exact pass would drift."""
    w = 1.0 + u
    d = w - 1.0
    return tl.where(d == 0.0, u, tl.log(w) * (u / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def logaddexp(a, b):
    """log(exp a + exp b) with -inf handled (no NaN from -inf - -inf)."""
    mx = tl.maximum(a, b)
    mn = tl.minimum(a, b)
    dead = mn == float("-inf")
    gap = tl.where(dead, 0.0, mn - tl.where(dead, 0.0, mx))
    return tl.where(dead, mx, mx + log1p(tl.exp(gap)))


@triton.jit
def frexp_exponent(v):
    """e with v = m * 2**e, m in [0.5, 1), for a positive normal fp64 v (math.frexp)."""
    bits = v.to(tl.int64, bitcast=True)
    return ((bits >> 52) & 0x7FF) - 1022


@triton.jit
def exp2_int(e):
    """2.0**e as fp64 for an integer e in the normal range, exactly."""
    return ((1023 + e) << 52).to(tl.float64, bitcast=True)

