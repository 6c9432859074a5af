"""Compiled log-likelihood kernels of the emission families, one per family
(only :mod:`flashseg.core.emissions` uses this module; it imports numba).

Each fills ``out[i, c]`` with the sum over features m whose ``x[i, m]`` is
not NaN of log f(x[i, m] | parameters[c, m]). Parameters are (C, M).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@njit(nogil=True, cache=True)
def bernoulli(x, log_p, log_q, out):
    n, M = x.shape
    C = log_p.shape[0]
    for i in range(n):
        for c in range(C):
            out[i, c] = 0.0
        for m in range(M):
            v = x[i, m]
            if v != v:
                continue
            if v > 0.5:
                for c in range(C):
                    out[i, c] += log_p[c, m]
            else:
                for c in range(C):
                    out[i, c] += log_q[c, m]


@njit(nogil=True, cache=True)
def bernoulli_from_absent(x, base, gain_present, gain_missing, out):
    """Bernoulli with every p strictly inside (0, 1), all finite: start from the
    all-absent score ``base`` (C,) and add a feature's gain (M, C) only where it is
    present or missing. Marks are mostly absent, so most rows cost C adds."""
    n, M = x.shape
    C = base.shape[0]
    for i in range(n):
        for c in range(C):
            out[i, c] = base[c]
        for m in range(M):
            v = x[i, m]
            if v == 0.0:
                continue
            if v != v:
                for c in range(C):
                    out[i, c] += gain_missing[m, c]
            else:
                for c in range(C):
                    out[i, c] += gain_present[m, c]


@njit(nogil=True, cache=True)
def poisson(x, mean, log_mean, out):
    n, M = x.shape
    C = mean.shape[0]
    for i in range(n):
        for c in range(C):
            out[i, c] = 0.0
        for m in range(M):
            k = x[i, m]
            if k != k:
                continue
            log_k_factorial = math.lgamma(k + 1.0)
            for c in range(C):
                mu = mean[c, m]
                if mu == 0.0:
                    if k > 0.0:
                        out[i, c] = -np.inf
                    continue
                out[i, c] += k * log_mean[c, m] - mu - log_k_factorial


@njit(nogil=True, cache=True)
def negative_binomial(x, mean, dispersion, out):
    n, M = x.shape
    C = mean.shape[0]
    for i in range(n):
        for c in range(C):
            out[i, c] = 0.0
        for m in range(M):
            k = x[i, m]
            if k != k:
                continue
            log_k_factorial = math.lgamma(k + 1.0)
            for c in range(C):
                mu = mean[c, m]
                if mu == 0.0:
                    if k > 0.0:
                        out[i, c] = -np.inf
                    continue
                r = dispersion[c, m]
                log_r_mu = math.log(r + mu)
                out[i, c] += (math.lgamma(k + r) - math.lgamma(r) - log_k_factorial
                              + r * (math.log(r) - log_r_mu) + k * (math.log(mu) - log_r_mu))


@njit(nogil=True, cache=True)
def gaussian(x, mean, sd, out):
    n, M = x.shape
    C = mean.shape[0]
    for i in range(n):
        for c in range(C):
            out[i, c] = 0.0
        for m in range(M):
            v = x[i, m]
            if v != v:
                continue
            for c in range(C):
                z = (v - mean[c, m]) / sd[c, m]
                out[i, c] -= _HALF_LOG_2PI + math.log(sd[c, m]) + 0.5 * z * z


@njit(nogil=True, cache=True)
def nb_profile(values, weights, mu, r):
    """sum_v w[v] (log NB(v; mu, r) + log v!): the NB log-likelihood in r, up to a constant."""
    out = 0.0
    log_r_mu = math.log(r + mu)
    base = r * (math.log(r) - log_r_mu) - math.lgamma(r)
    log_mu = math.log(mu) - log_r_mu
    for i in range(values.shape[0]):
        v = values[i]
        out += weights[i] * (math.lgamma(v + r) + base + v * log_mu)
    return out
