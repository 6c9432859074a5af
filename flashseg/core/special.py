"""Special functions in log space, for the duration laws (durations.py):
regularized incomplete gamma and beta functions (continued fractions and
series) and log erfc, so that normalising a law over an unbounded range
needs no truncated sum and scipy is no runtime dependency.
"""
from __future__ import annotations

import math

import numpy as np

NEG_INF = -math.inf
_EPS = 1e-16
_TINY = 1e-300
_MAX_ITER = 1_000_000


def log1mexp(x: float) -> float:
    """log(1 - exp(x)) for x <= 0, accurate on both ends."""
    if x > 0:
        raise ValueError("log1mexp needs x <= 0")
    if x == 0:
        return NEG_INF
    if x > -math.log(2.0):
        return math.log(-math.expm1(x))
    return math.log1p(-math.exp(x))


def log_diff(a: float, b: float) -> float:
    """log(exp(a) - exp(b)); -inf when b >= a (nothing left)."""
    if b == NEG_INF:
        return a
    if b >= a:
        return NEG_INF
    return a + log1mexp(b - a)


def logsumexp(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return NEG_INF
    top = float(arr.max())
    if top == NEG_INF:
        return NEG_INF
    return top + math.log(float(np.exp(arr - top).sum()))


_LOG_SQRT_PI = 0.5 * math.log(math.pi)


def log_erfc(t: float) -> float:
    """log(erfc(t)) without underflow for large t (asymptotic series)."""
    if t < 26.0:
        return math.log(math.erfc(t))
    # erfc(t) = exp(-t^2) / (t sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2t^2)^k;
    # at t >= 26 the terms fall by >= 1/1352 each: 8 terms reach 1e-20.
    inv = 1.0 / (2.0 * t * t)
    term, total = 1.0, 1.0
    for k in range(1, 9):
        term *= -(2 * k - 1) * inv
        total += term
    return -t * t - math.log(t) - _LOG_SQRT_PI + math.log(total)


def log_gamma_inc(a: float, x: float) -> tuple[float, float]:
    """(log P(a, x), log Q(a, x)): regularized lower / upper incomplete gamma.

    Series for P when x < a + 1, Lentz continued fraction for Q otherwise
    (each converges fast in its region); the other one via log1mexp, which
    is accurate there because that one is not close to 0.
    """
    if x <= 0:
        return NEG_INF, 0.0
    if math.isinf(x):
        return 0.0, NEG_INF
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        ap, term = a, 1.0 / a
        total = term
        for _ in range(_MAX_ITER):
            ap += 1.0
            term *= x / ap
            total += term
            if term < total * _EPS:
                break
        else:  # pragma: no cover - the ratio x/ap < 1 always converges
            raise ArithmeticError(f"incomplete gamma series did not converge (a={a}, x={x})")
        log_p = log_prefactor + math.log(total)
        return log_p, log1mexp(min(log_p, 0.0))
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    else:  # pragma: no cover
        raise ArithmeticError(f"incomplete gamma fraction did not converge (a={a}, x={x})")
    log_q = log_prefactor + math.log(h)
    return log1mexp(min(log_q, 0.0)), log_q


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge (a={a}, b={b}, x={x})")  # pragma: no cover


def log_beta_inc(a: float, b: float, log_x: float, log_y: float) -> tuple[float, float]:
    """(log I_x(a, b), log (1 - I_x(a, b))) with y = 1 - x given separately.

    Passing log x and log(1 - x) keeps full precision when x is close to 1.
    """
    if log_x == NEG_INF:
        return NEG_INF, 0.0
    if log_y == NEG_INF:
        return 0.0, NEG_INF
    x, y = math.exp(log_x), math.exp(log_y)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * log_x + b * log_y)
    if x < (a + 1.0) / (a + b + 2.0):
        log_i = log_front + math.log(_beta_cf(a, b, x)) - math.log(a)
        return log_i, log1mexp(min(log_i, 0.0))
    log_j = log_front + math.log(_beta_cf(b, a, y)) - math.log(b)
    return log1mexp(min(log_j, 0.0)), log_j
