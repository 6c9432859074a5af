"""Read depth as emission evidence: the per-label log-likelihood of a bin's
read count, and the depth that scales it (docs/model.md, "Coverage").

Depth (reads per bin at copy ratio 1) is the median of the filtered counts
of the genome's full-length, unmasked bins with any coverage. The last bin
of a contig may be shorter than ``bin_size``; its expected count is scaled
by its length (``mu = mean[label] * depth * bp / bin_size``) and it does not
enter the median.

Likelihoods: Poisson(mu) or negative binomial with variance
``mu + dispersion * mu^2``. A label whose mean is 0 (homozygous deletion)
gets ``mu = MIN_COPY_RATIO * depth`` instead, so a few stray mismapped
reads make such a bin unlikely, not impossible.

Counting the reads is ``flashseg.io.alignments``'s; turning a BAM into an
emission source is ``flashseg.io.coverage``'s.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DataError

#: Copy ratio used in place of 0 for a label's coverage mean (see above).
MIN_COPY_RATIO = 1e-3


def coverage_log_likelihood(counts, exposure, means, depth: float, model: str = "poisson",
                            dispersion: float = 0.0) -> np.ndarray:
    """(n, C) float64 log P(count | label) for counts (n,) and label means (C,).

    mu[i, c] = max(means[c], MIN_COPY_RATIO) * depth * exposure[i].
    """
    counts = np.asarray(counts, dtype=np.int64)
    exposure = np.asarray(exposure, dtype=np.float64)
    means = np.maximum(np.asarray(means, dtype=np.float64), MIN_COPY_RATIO)
    if not depth > 0 or not math.isfinite(depth):
        raise DataError(f"depth must be a positive number, got {depth}")
    mu = (exposure * depth)[:, None] * means[None, :]
    k = counts[:, None].astype(np.float64)
    # lgamma of the few distinct counts only: no scipy at run time.
    values, inverse = np.unique(counts, return_inverse=True)
    log_k_factorial = np.array([math.lgamma(v + 1.0) for v in values])[inverse][:, None]
    if model == "poisson" or dispersion == 0:
        return k * np.log(mu) - mu - log_k_factorial
    if model != "negative_binomial":
        raise DataError(f"unknown coverage model {model!r}")
    r = 1.0 / dispersion
    log_gamma_ratio = np.array([math.lgamma(v + r) - math.lgamma(r) for v in values])[inverse][:, None]
    log_r_mu = np.log(r + mu)
    return log_gamma_ratio - log_k_factorial + r * (math.log(r) - log_r_mu) + k * (np.log(mu) - log_r_mu)


def median_depth(counts: dict, contigs, bin_size: int, masks: dict | None = None) -> float:
    """Median of counts over full-length, unmasked bins with count > 0 (all contigs together).

    Uses a histogram of count values, so it costs O(max count), not a sort.
    """
    histogram = np.zeros(1, dtype=np.int64)
    for name, length in contigs:
        c = counts[name]
        full = length // bin_size  # bins of full length
        keep = c[:full]
        if masks is not None and name in masks:
            keep = keep[~masks[name][:full]]
        keep = keep[keep > 0]
        if keep.size:
            h = np.bincount(keep)
            if h.size > histogram.size:
                h[:histogram.size] += histogram
                histogram = h
            else:
                histogram[:h.size] += h
    total = int(histogram.sum())
    if total == 0:
        return 0.0
    cumulative = np.cumsum(histogram)
    lower = int(np.searchsorted(cumulative, (total - 1) // 2 + 1))
    upper = int(np.searchsorted(cumulative, total // 2 + 1))
    return (lower + upper) / 2.0
