"""Duration laws: each family a law on d >= 1 bins, truncated to [min, max]
and renormalised there, and the K-table with its geometric tail that the
core's model holds (docs/model.md, "Durations" and "Tails").

All arithmetic is in log space: ``log P(K+1)`` of a Poisson duration with
mean 3 at K = 256 is about -1100, far below the smallest double, yet it sets
the geometric tail. Normalising over an unbounded ``[min, inf)`` uses closed
forms (special.py), never a truncated sum: the survival functions of the
discrete families are regularized incomplete beta / gamma functions, and the
discretised continuous laws telescope (``sum_d F(d+1/2) - F(d-1/2)``).

The YAML ``duration:`` mapping is read and validated by
``flashseg.io.durations``; errors name its key path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .special import NEG_INF, log1mexp, log_beta_inc, log_diff, log_erfc, log_gamma_inc, logsumexp

# Finite ranges up to this many bins are normalised by a direct sum of the
# pmf (exact, no cancellation); longer ones by the closed-form CDF.
_DIRECT_SUM_MAX = 4096
# Half-width (bins) of the windows where the mean of a discretised continuous
# law is summed term by term (see _Continuous.log_mean_mass).
_MEAN_WINDOW = 1024


def _err(key: str, msg: str, label: str | None) -> DataError:
    where = f" (label {label})" if label else ""
    return DataError(f"{key}: {msg}{where}")


class _Law:
    """An untruncated duration law on d = 1, 2, ...

    ``log_pmf(d)`` is log P(d); ``log_mass(lo, hi)`` is log sum_{d=lo}^{hi}
    P(d) (hi may be inf); ``mean_over(lo, hi, log_z)`` is
    sum_{d=lo}^{hi} d P(d) / exp(log_z).
    """

    support_end: float = math.inf  # last d with P(d) > 0

    def log_pmf(self, d: int) -> float:
        raise NotImplementedError

    def log_mass(self, lo: int, hi: float) -> float:
        raise NotImplementedError

    def mean_over(self, lo: int, hi: float, log_z: float) -> float:
        raise NotImplementedError

    def _direct(self, lo: int, hi: int) -> np.ndarray:
        return np.array([self.log_pmf(d) for d in range(lo, hi + 1)], dtype=np.float64)


class _PointMass(_Law):
    """All mass at d = 1 (a discrete family with mean 1)."""

    support_end = 1

    def log_pmf(self, d):
        return 0.0 if d == 1 else NEG_INF

    def log_mass(self, lo, hi):
        return 0.0 if lo <= 1 <= hi else NEG_INF

    def mean_over(self, lo, hi, log_z):
        return 1.0


class _Discrete(_Law):
    """d - 1 = X for a law X on 0, 1, ... with closed-form CDF and survival."""

    def log_pmf_x(self, k: int) -> float:
        raise NotImplementedError

    def log_cdf_sf(self, k: int) -> tuple[float, float]:
        """(log P(X <= k), log P(X > k))."""
        raise NotImplementedError

    def size_biased(self) -> tuple["_Discrete", float]:
        """(law of X', m) with k P(X = k) = m P(X' = k - 1)."""
        raise NotImplementedError

    def log_pmf(self, d):
        return self.log_pmf_x(d - 1) if d >= 1 else NEG_INF

    def _log_mass_x(self, a: int, b: float) -> float:
        """log P(a <= X <= b)."""
        a = max(a, 0)
        if b < a:
            return NEG_INF
        if not math.isinf(b) and b - a < _DIRECT_SUM_MAX:
            return logsumexp([self.log_pmf_x(k) for k in range(a, int(b) + 1)])
        cdf_lo, sf_lo = self.log_cdf_sf(a - 1) if a > 0 else (NEG_INF, 0.0)
        cdf_hi, sf_hi = self.log_cdf_sf(int(b)) if not math.isinf(b) else (0.0, NEG_INF)
        # Subtract on the side where the terms are smaller: less cancellation.
        if cdf_hi <= sf_lo:
            return log_diff(cdf_hi, cdf_lo)
        return log_diff(sf_lo, sf_hi)

    def log_mass(self, lo, hi):
        return self._log_mass_x(lo - 1, hi - 1)

    def mean_over(self, lo, hi, log_z):
        a, b = max(lo - 1, 0), hi - 1
        if not math.isinf(b) and b - a < _DIRECT_SUM_MAX:
            ks = np.arange(a, int(b) + 1, dtype=np.float64)
            logs = np.array([self.log_pmf_x(int(k)) for k in ks])
            return float(((ks + 1.0) * np.exp(logs - log_z)).sum())
        # E[D; a <= X <= b] = P(a <= X <= b) + m P(a-1 <= X' <= b-1)
        biased, m = self.size_biased()
        return (math.exp(self._log_mass_x(a, b) - log_z)
                + m * math.exp(biased._log_mass_x(a - 1, b - 1) - log_z))


class _NegativeBinomial(_Discrete):
    """X ~ NB(r, p): P(X = k) = C(k + r - 1, k) p^r q^k, mean r q / p."""

    def __init__(self, r: float, log_p: float, log_q: float):
        self.r, self.log_p, self.log_q = r, log_p, log_q
        self._lgamma_r = math.lgamma(r)

    @classmethod
    def from_mean(cls, m: float, r: float) -> "_NegativeBinomial":
        # p = r / (r + m), q = m / (r + m): variance m + m^2 / r
        log_rm = math.log(r + m)
        return cls(r, math.log(r) - log_rm, math.log(m) - log_rm)

    def log_pmf_x(self, k):
        if k < 0:
            return NEG_INF
        return (math.lgamma(k + self.r) - self._lgamma_r - math.lgamma(k + 1.0)
                + self.r * self.log_p + k * self.log_q)

    def log_cdf_sf(self, k):
        if k < 0:
            return NEG_INF, 0.0
        # P(X <= k) = I_p(r, k + 1)
        return log_beta_inc(self.r, k + 1.0, self.log_p, self.log_q)

    def size_biased(self):
        m = self.r * math.exp(self.log_q - self.log_p)
        return _NegativeBinomial(self.r + 1.0, self.log_p, self.log_q), m


class _Geometric(_NegativeBinomial):
    """NB with r = 1, with the exact closed-form survival q^(k+1)."""

    def __init__(self, m: float):
        log_mean = math.log1p(m)
        super().__init__(1.0, -log_mean, math.log(m) - log_mean)

    def log_pmf_x(self, k):
        return self.log_p + k * self.log_q if k >= 0 else NEG_INF

    def log_cdf_sf(self, k):
        if k < 0:
            return NEG_INF, 0.0
        log_sf = (k + 1.0) * self.log_q
        return log1mexp(log_sf), log_sf


class _Poisson(_Discrete):
    def __init__(self, lam: float):
        self.lam = lam
        self.log_lam = math.log(lam)

    def log_pmf_x(self, k):
        if k < 0:
            return NEG_INF
        return k * self.log_lam - self.lam - math.lgamma(k + 1.0)

    def log_cdf_sf(self, k):
        if k < 0:
            return NEG_INF, 0.0
        # P(X <= k) = Q(k + 1, lam), P(X > k) = P(k + 1, lam)
        log_p, log_q = log_gamma_inc(k + 1.0, self.lam)
        return log_q, log_p

    def size_biased(self):
        return self, self.lam


class _Continuous(_Law):
    """A continuous law F on (0, inf), discretised (docs/model.md, "Durations"):
    P(1) = F(3/2), P(d) = F(d + 1/2) - F(d - 1/2) for d >= 2."""

    def log_cdf_sf(self, x: float) -> tuple[float, float]:
        raise NotImplementedError

    def log_density(self, x: float) -> float:
        raise NotImplementedError

    def size_biased(self) -> tuple["_Continuous", float]:
        """(law G, log c) with x f(x) = c g(x)."""
        raise NotImplementedError

    def centre(self) -> float:
        raise NotImplementedError

    @staticmethod
    def _edges(lo: int, hi: float) -> tuple[float, float]:
        return (0.0 if lo <= 1 else lo - 0.5), (math.inf if math.isinf(hi) else hi + 0.5)

    def log_interval(self, u: float, v: float) -> float:
        """log (F(v) - F(u))."""
        if v <= u:
            return NEG_INF
        cdf_u, sf_u = self.log_cdf_sf(u)
        cdf_v, sf_v = self.log_cdf_sf(v)
        if cdf_v <= sf_u:
            return log_diff(cdf_v, cdf_u)
        return log_diff(sf_u, sf_v)

    def log_pmf(self, d):
        if d < 1:
            return NEG_INF
        return self.log_interval(*self._edges(d, d))

    def log_mass(self, lo, hi):
        if hi < lo:
            return NEG_INF
        return self.log_interval(*self._edges(lo, hi))

    def mean_over(self, lo, hi, log_z):
        """sum_{d=lo}^{hi} d P(d) / Z.

        Term by term inside two windows (from ``lo``, and around the law's
        centre), where rounding x to the nearest bin matters. Over each gap
        [a, b] between them the sum is the partial mean of the continuous
        law plus the Euler-Maclaurin correction of rounding,
        sum_{d=a}^{b} d P(d) = int_{a-1/2}^{b+1/2} x f(x) dx
                               + (f(a - 1/2) - f(b + 1/2)) / 12 + O(f'''),
        where f varies on scales of many bins, so O(f''') is negligible.
        """
        windows = [(lo, min(hi, lo + _MEAN_WINDOW))]
        c = int(round(self.centre()))
        w2 = (max(lo, c - _MEAN_WINDOW), min(hi, c + _MEAN_WINDOW))
        if w2[0] <= w2[1]:
            windows.append(w2)
        windows.sort()
        merged = [list(windows[0])]
        for a, b in windows[1:]:
            if a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        total = 0.0
        for a, b in merged:
            total += self._window_sum(int(a), int(b), log_z)
        gaps = [(merged[i][1] + 1, merged[i + 1][0] - 1) for i in range(len(merged) - 1)]
        if merged[-1][1] < hi:
            gaps.append((merged[-1][1] + 1, hi))
        biased, log_c = self.size_biased()
        for a, b in gaps:
            u, v = a - 0.5, (math.inf if math.isinf(b) else b + 0.5)
            total += math.exp(log_c + biased.log_interval(u, v) - log_z)
            f_u = math.exp(self.log_density(u) - log_z)
            f_v = 0.0 if math.isinf(v) else math.exp(self.log_density(v) - log_z)
            total += (f_u - f_v) / 12.0
        return total

    def _window_sum(self, a: int, b: int, log_z: float) -> float:
        edges = [0.0 if a <= 1 else a - 0.5] + [d + 0.5 for d in range(a, b + 1)]
        cdf_sf = [self.log_cdf_sf(x) for x in edges]
        total = 0.0
        for i, d in enumerate(range(a, b + 1)):
            (cdf_u, sf_u), (cdf_v, sf_v) = cdf_sf[i], cdf_sf[i + 1]
            lp = log_diff(cdf_v, cdf_u) if cdf_v <= sf_u else log_diff(sf_u, sf_v)
            total += d * math.exp(lp - log_z)
        return total


_LOG_HALF = math.log(0.5)
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class _LogNormal(_Continuous):
    def __init__(self, mu: float, sigma: float):
        self.mu, self.sigma = mu, sigma

    def log_cdf_sf(self, x):
        if x <= 0:
            return NEG_INF, 0.0
        if math.isinf(x):
            return 0.0, NEG_INF
        t = (math.log(x) - self.mu) / (self.sigma * _SQRT2)
        return _LOG_HALF + log_erfc(-t), _LOG_HALF + log_erfc(t)

    def log_density(self, x):
        if x <= 0:
            return NEG_INF
        z = (math.log(x) - self.mu) / self.sigma
        return -0.5 * z * z - math.log(x * self.sigma) - _LOG_SQRT_2PI

    def size_biased(self):
        s2 = self.sigma * self.sigma
        return _LogNormal(self.mu + s2, self.sigma), self.mu + 0.5 * s2

    def centre(self):
        return math.exp(min(self.mu, 700.0))


class _Gamma(_Continuous):
    def __init__(self, shape: float, scale: float):
        self.shape, self.scale = shape, scale

    def log_cdf_sf(self, x):
        if x <= 0:
            return NEG_INF, 0.0
        return log_gamma_inc(self.shape, x / self.scale)

    def log_density(self, x):
        if x <= 0:
            return NEG_INF
        a = self.shape
        return ((a - 1.0) * math.log(x) - x / self.scale - math.lgamma(a)
                - a * math.log(self.scale))

    def size_biased(self):
        return _Gamma(self.shape + 1.0, self.scale), math.log(self.shape * self.scale)

    def centre(self):
        return self.shape * self.scale


class _Uniform(_Law):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        self.support_end = hi
        self._log_p = -math.log(hi - lo + 1)

    def log_pmf(self, d):
        return self._log_p if self.lo <= d <= self.hi else NEG_INF

    def log_mass(self, lo, hi):
        a, b = max(lo, self.lo), min(hi, self.hi)
        return self._log_p + math.log(b - a + 1) if b >= a else NEG_INF

    def mean_over(self, lo, hi, log_z):
        a, b = max(lo, self.lo), min(hi, self.hi)
        return (a + b) / 2.0 * math.exp(self._log_p + math.log(b - a + 1) - log_z)


class _Table(_Law):
    """Explicit table: entry i is log P(d = i + 1); zero beyond its end."""

    def __init__(self, log_values: np.ndarray):
        self.log_values = log_values
        finite = np.flatnonzero(log_values > NEG_INF)
        self.support_end = int(finite[-1]) + 1 if finite.size else 0

    def log_pmf(self, d):
        return float(self.log_values[d - 1]) if 1 <= d <= len(self.log_values) else NEG_INF

    def _slice(self, lo, hi):
        end = len(self.log_values) if math.isinf(hi) else min(int(hi), len(self.log_values))
        return max(lo, 1), self.log_values[max(lo, 1) - 1:end]

    def log_mass(self, lo, hi):
        return logsumexp(self._slice(lo, hi)[1])

    def mean_over(self, lo, hi, log_z):
        start, values = self._slice(lo, hi)
        ds = np.arange(start, start + len(values), dtype=np.float64)
        return float((ds * np.exp(values - log_z)).sum())


def family_law(family: str, dmin: int, dmax: float, *, mean=None, dispersion=None, mu=None, sigma=None,
               shape=None, table=None) -> "_Law":
    """The untruncated law of one family from its (validated) parameters:
    geometric, negative_binomial and poisson are laws of d - 1 with mean
    ``mean - 1``; lognormal and gamma are discretised continuous laws; uniform
    covers [dmin, dmax]; table holds the given log weights of d = 1, 2, ..."""
    if family in ("geometric", "negative_binomial", "poisson"):
        m = mean - 1.0
        if m == 0:
            return _PointMass()
        if family == "geometric":
            return _Geometric(m)
        if family == "negative_binomial":
            return _NegativeBinomial.from_mean(m, dispersion)
        return _Poisson(m)
    if family == "lognormal":
        return _LogNormal(mu, sigma)
    if family == "gamma":
        return _Gamma(shape, mean / shape)
    if family == "uniform":
        return _Uniform(dmin, int(dmax))
    if family == "table":
        return _Table(table)
    raise ValueError(f"unknown duration family {family!r}")


@dataclass(frozen=True)
class DurationLaw:
    """A parsed ``duration:`` mapping: family law truncated to [min, max]."""

    family: str
    params: dict
    min: int
    max: float               # math.inf when unbounded
    tail_rho: float | None   # explicit tail_rho, or None
    key: str                 # key path, e.g. "labels[2].duration"
    label: str | None
    law: _Law = field(repr=False)
    log_z: float = field(repr=False)       # subtracted from log P(d): log mass of [min, max]
    mean_log_z: float = field(repr=False)  # the mass of [min, max], which the mean divides by
    log_scores: bool = False               # table given as raw log scores (used as given)

    @property
    def support_end(self) -> float:
        return min(self.max, self.law.support_end)

    def log_prob(self, d: int) -> float:
        """log P(d) of the truncated, renormalised law."""
        if d < self.min or d > self.max:
            return NEG_INF
        return self.law.log_pmf(d) - self.log_z

    def log_mass(self, lo: int, hi: float) -> float:
        """log P(lo <= d <= hi) under the truncated law (normalised)."""
        a, b = max(lo, self.min), min(hi, self.max)
        return self.law.log_mass(a, b) - self.mean_log_z if b >= a else NEG_INF

    def mean(self) -> float:
        """Mean duration in bins of the truncated law (raw log tables: of exp(scores), normalised)."""
        return self.law.mean_over(self.min, self.max, self.mean_log_z)


@dataclass(frozen=True)
class DurationTable:
    """What the core needs from one label's duration law.

    log_prob  (K,) log P(d) for d = 1..K
    log_rho   log of the geometric tail ratio; -inf when the label has no
              tail (support ends at or before K, or ``tail: none``)
    mean      mean duration in bins of the truncated law
    warnings  messages for the caller to log
    """

    log_prob: np.ndarray
    log_rho: float
    mean: float
    support_end: float
    warnings: tuple[str, ...] = ()

    @property
    def has_tail(self) -> bool:
        return self.log_rho > NEG_INF


def duration_table(law: DurationLaw, max_duration: int, tail: str = "geometric") -> DurationTable:
    """log P(d) for d = 1..K and the tail of one label (docs/model.md, "Tails")."""
    K = int(max_duration)
    key, label = law.key, law.label
    log_prob = np.array([law.log_prob(d) for d in range(1, K + 1)], dtype=np.float64)
    warnings: list[str] = []
    where = f" (label {label})" if label else ""
    continues = law.support_end > K
    log_rho = NEG_INF
    if tail == "none":
        if law.tail_rho is not None:
            warnings.append(f"{key}.tail_rho: ignored with tail: none{where}")
        if continues:
            lost = law.log_mass(K + 1, math.inf)
            if lost > math.log(1e-6):
                warnings.append(
                    f"{key}: tail: none forbids durations > max_duration={K}, "
                    f"which carry {math.exp(lost):.3g} of this law's probability{where}")
    elif tail == "geometric" and law.family == "table" and law.tail_rho is not None:
        # An explicit tail_rho on a table is the tail as given (what `flashseg fit`
        # writes): dur(d) = dur(K) + (d - K) log rho for every d > K, even where the
        # table ends at K, and an empty tail (not an error) where dur(K) = -inf.
        log_rho = math.log(law.tail_rho)
        if law.support_end > K and not math.isinf(law.max):
            warnings.append(f"{key}.max: the geometric tail beyond max_duration={K} "
                            f"does not stop at max={int(law.max)}{where}")
        elif law.support_end > K:
            warnings.append(f"{key}: the geometric tail beyond max_duration={K} replaces the table's "
                            f"entries beyond it{where}")
    elif tail == "geometric":
        if not continues:
            if law.tail_rho is not None:
                warnings.append(f"{key}.tail_rho: ignored, the support ends at "
                                f"{int(law.support_end)} <= max_duration={K}{where}")
        else:
            hint = "use a larger max_duration or give tail_rho"
            log_pk = float(log_prob[K - 1])
            if log_pk == NEG_INF:
                raise _err(key, f"P(d=K={K}) = 0 but durations > K are possible: no geometric "
                           f"tail can represent that; {hint}", label)
            if law.tail_rho is not None:
                log_rho = math.log(law.tail_rho)
            else:
                log_pk1 = law.log_prob(K + 1)
                if log_pk1 == NEG_INF:
                    raise _err(key, f"P(d=K+1={K + 1}) = 0 but longer durations are possible: "
                               f"no geometric tail can represent that; {hint}", label)
                log_rho = log_pk1 - log_pk
                if log_rho >= 0:
                    raise _err(key, f"geometric tail ratio rho = P(K+1)/P(K) = "
                               f"{math.exp(min(log_rho, 700.0)):.6g} >= 1 at max_duration={K} "
                               f"(the law does not decrease there yet: K is below its mode or inside a flat stretch); {hint}", label)
            if not math.isinf(law.max):
                warnings.append(f"{key}.max: the geometric tail beyond max_duration={K} "
                                f"does not stop at max={int(law.max)}{where}")
            elif law.family == "table":
                warnings.append(f"{key}: the geometric tail beyond max_duration={K} does not "
                                f"stop where the table ends (d={int(law.support_end)}){where}")
    else:
        raise ValueError(f"tail must be 'geometric' or 'none', got {tail!r}")
    return DurationTable(log_prob, log_rho, law.mean(), law.support_end, tuple(warnings))
