"""Numbers every backend shares: the linear fast path's floor and rescaling
thresholds, the split of ln 2, the sampler's protocol codes, and the helpers
that turn mantissa/exponent pairs into logs.

Both backends (the numba kernels and the Triton kernels) flush at the same
floor and rescale at the same thresholds, so the certificate means the same
on either (docs/algorithms.md, "Linear fast path and its certificate").
Nothing here imports numba, torch or triton.
"""
from __future__ import annotations

import math

import numpy as np

# ln 2 split so that k * LN2_HI is exact for |k| < 2**20 (exponents to logs).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
LN2 = math.log(2.0)

# Values below FLOOR (in units of 2**sexp) are flushed to zero and their mass is
# charged to the ghost accumulators. The live maximum is kept inside
# [2**-64, 2**64], so a flushed value is at least 2**-736 below it.
FLOOR = 2.0 ** -800
LOG_FLOOR = -800.0 * math.log(2.0)
RESCALE_HI = 2.0 ** 64
RESCALE_LO = 2.0 ** -64
# Per-label emission products are folded back into the ring outside this range.
P_LO = 2.0 ** -200
P_HI = 2.0 ** 200

# The exact log-space path keeps the largest of E and A inside [-LOG_RENORM,
# LOG_RENORM] (natural log) by moving multiples of ln 2 into the exponent.
LOG_RENORM = 4.0

# Finite model log-scores beyond this make the linear kernel's bounds invalid
# (a weight could overflow); such models run in exact log space instead.
LINEAR_MAX_MODEL_SCORE = 50.0
# Finite log-weights below this are stored as 0 in linear space; the loss is
# bounded by the flush accounting.
LINEAR_MIN_LOG_WEIGHT = -700.0

# What a posterior sample's walk through one chunk returns (both backends):
# it left the chunk, or it needs more uniforms, more room for segments, the
# ring entries of one label, or it met an all-zero distribution.
WALK_CHUNK_DONE, WALK_NEED_UNIFORMS, WALK_NEED_SPACE, WALK_NEED_RING, WALK_ZERO = 0, 1, 2, 3, 4


def positive_log(values: np.ndarray) -> np.ndarray:
    """log of non-negative values, -inf for zeros (no warnings)."""
    with np.errstate(divide="ignore"):
        return np.log(values)


def scaled_exp(v: np.ndarray) -> tuple[np.ndarray, int]:
    """exp(v) as mantissas times 2**k with one k (v's finite maximum near 1)."""
    finite = v[np.isfinite(v)]
    k = int(np.floor(finite.max() / math.log(2.0))) if finite.size else 0
    return np.exp(v - k * math.log(2.0)), k


def split_partition(zm: float, zexp: int) -> tuple[float, float, int]:
    """Z = zm * 2**zexp as (log Z, mantissa in [0.5, 1), exponent); (-inf, 0, 0) for Z = 0."""
    if not zm > 0.0:
        return -math.inf, 0.0, 0
    m, e = math.frexp(zm)
    zexp += e
    return math.log(m) + zexp * math.log(2.0), m, zexp
