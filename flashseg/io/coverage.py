"""Reads as emissions: a BAM's per-bin counts scored with the model's
``coverage:`` section, for ``decode --bam`` and ``tracks coverage``.

Blacklist: bins overlapping a blacklist interval by at least 1 bp are
*masked*, not emptied of reads: their log-likelihood is 0 for every label
(no evidence, like an assembly gap) and they are left out of the depth
median. Dropping the reads instead would make partly blacklisted bins look
like deletions. The raw counts (``--raw``) stay the reads counted.

The likelihood and the depth median are the core's (``core/coverage.py``);
reading and counting are ``alignments.py``'s.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict

import numpy as np

from .. import bins
from ..core.coverage import coverage_log_likelihood, median_depth
from ..errors import DataError
from .alignments import RangeCounter, count_contigs, select_contigs
from .reads import ReadFilter

log = logging.getLogger(__name__)


def estimate_depth(bam_path, contigs, bin_size: int, read_filter: ReadFilter = ReadFilter(), *,
                   reference=None, blacklist=None, threads: int = 1, counts: dict | None = None) -> float:
    """Reads per bin at copy ratio 1: the median of core.coverage.median_depth
    over the filtered counts (a counting pass unless ``counts`` is given)."""
    contigs = list(contigs)
    if counts is None:
        counts = count_contigs(bam_path, contigs, bin_size, read_filter, reference=reference, threads=threads)
    masks = None
    if blacklist is not None:
        masks = {name: bins.mask(blacklist.get(name), length, bin_size) for name, length in contigs}
    depth = median_depth(counts, contigs, bin_size, masks)
    if depth <= 0:
        raise DataError(f"no reads pass the filters (MAPQ >= {read_filter.min_mapq}, no duplicate, secondary, "
                        "supplementary or QC-fail flags"
                        + (", properly paired" if read_filter.fragments else "")
                        + "): cannot estimate the depth; give --depth", file=os.fspath(bam_path))
    return depth


def _coverage_section(spec):
    coverage = getattr(spec, "coverage", None)
    if coverage is None:
        raise DataError('the model has no coverage section: reads need one (docs/model.md, "Coverage")',
                        file=getattr(spec, "path", None))
    return coverage


def log_likelihood_for(spec, counts, exposure, depth, mask=None) -> np.ndarray:
    """Log-likelihoods in the model's label order; masked bins get 0 for every label."""
    coverage = _coverage_section(spec)
    ll = coverage_log_likelihood(counts, exposure, coverage.mean, depth, coverage.model,
                                 float(getattr(coverage, "dispersion", 0.0) or 0.0))
    if mask is not None:
        ll[np.asarray(mask, dtype=bool)] = 0.0
    return ll


class CoverageEmissions:
    """Emission source for the core: callable (a, b) -> (b - a, C) float64.

    Counts bins on demand from the BAM in aligned blocks kept in a small LRU
    cache, since the core asks for every chunk more than once (forward,
    backward, recompute passes), also right to left. The file is opened on
    first use, in the thread that uses it.
    """

    def __init__(self, bam_path, contig, n_bins, spec, depth, *, length=None, read_filter=ReadFilter(),
                 reference=None, mask=None, block_bins: int = 16384, cache_blocks: int = 8, fast: bool = True):
        self.bam_path = os.fspath(bam_path)
        self.contig = contig
        self.n_bins = int(n_bins)
        self.spec = spec
        self.coverage = _coverage_section(spec)
        self.depth = float(depth)
        self.bin_size = int(spec.bin_size)
        self.length = int(length) if length is not None else self.n_bins * self.bin_size
        self.read_filter = read_filter
        self.reference = reference
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.block_bins = int(block_bins)
        self.cache_blocks = int(cache_blocks)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._counter = None
        self.fast = fast
        # Bins past ceil(length / bin_size) would be empty: tracks with
        # floor(L / bin_size) bins simply never ask for the partial one.
        self._total_bins = bins.n_bins(self.length, self.bin_size)

    def _block(self, index: int) -> np.ndarray:
        block = self._cache.get(index)
        if block is not None:
            self._cache.move_to_end(index)
            return block
        if self._counter is None:
            self._counter = RangeCounter(self.bam_path, self.reference, fast=self.fast)
        a = index * self.block_bins
        b = min(self._total_bins, a + self.block_bins)
        block = self._counter.count(self.contig, a, b, self.bin_size, self.length, self.read_filter)
        self._cache[index] = block
        if len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return block

    def counts(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.int32)
        for index in range(a // self.block_bins, (b - 1) // self.block_bins + 1 if b > a else 0):
            block = self._block(index)
            lo = max(a, index * self.block_bins)
            hi = min(b, index * self.block_bins + block.size)
            if hi > lo:
                out[lo - a:hi - a] = block[lo - index * self.block_bins:hi - index * self.block_bins]
        return out

    def __call__(self, a: int, b: int) -> np.ndarray:
        if not 0 <= a <= b <= self.n_bins:
            raise ValueError(f"bins [{a}, {b}) outside [0, {self.n_bins})")
        counts = self.counts(a, b)
        exposure = np.ones(b - a)
        if b == self._total_bins and b > a:
            exposure[-1] = (self.length - (self._total_bins - 1) * self.bin_size) / self.bin_size
        mask = None if self.mask is None else self.mask[a:b]
        return log_likelihood_for(self.spec, counts, exposure, self.depth, mask)

    def close(self):
        if self._counter is not None:
            self._counter.close()
            self._counter = None


def coverage_emissions(bam_path, contig, n_bins, spec, depth, *, length=None, read_filter=ReadFilter(),
                       reference=None, blacklist=None, gaps=None, **kwargs) -> CoverageEmissions:
    """Streaming coverage log-likelihoods of one contig for ``decode --bam``.

    `blacklist` is the dict from :func:`flashseg.io.bed.read_intervals` (or None); `gaps` a
    (G, 2) array of half-open bin ranges (N gaps) that also score 0; `length`
    the contig length in bp (defaults to n_bins * bin_size). Bins are the
    contig's own (0..n_bins): callers decoding a region add their offset.
    """
    length = int(length) if length is not None else int(n_bins) * int(spec.bin_size)
    mask = None
    if blacklist is not None and blacklist.get(contig):
        mask = bins.mask(blacklist[contig], length, int(spec.bin_size))[:int(n_bins)]
    if gaps is not None and len(gaps):
        mask = np.zeros(int(n_bins), dtype=bool) if mask is None else mask.copy()
        for first, last in np.asarray(gaps, dtype=np.int64).reshape(-1, 2):
            mask[max(0, first):max(0, min(int(n_bins), last))] = True
    return CoverageEmissions(bam_path, contig, n_bins, spec, depth, length=length, read_filter=read_filter,
                             reference=reference, mask=mask, **kwargs)


class BamContigs:
    """A BAM's contigs in the shape decode's contig planner expects of a track set.

    For ``decode --bam`` without ``-t``: the contigs are the FASTA's (checked
    against the BAM header) or else the BAM's, each with ceil(L / bin_size)
    bins; the base scores are 0 and the caller adds
    :func:`coverage_emissions`.
    """

    def __init__(self, bam_path, spec, *, reference=None, fasta=None):
        from types import SimpleNamespace

        self.bin_size = int(spec.bin_size)
        self.labels = list(spec.label_names)
        self.files = [SimpleNamespace(path=os.fspath(bam_path))]
        self._lengths = dict(select_contigs(bam_path, reference=reference, fasta=fasta))
        self.contigs = list(self._lengths)

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def __contains__(self, contig) -> bool:
        return contig in self._lengths

    def n_bins(self, contig) -> int:
        return bins.n_bins(self._lengths[contig], self.bin_size)

    def length_bp(self, contig) -> int:
        return self._lengths[contig]

    def check_length(self, contig, length_bp, fasta_path=None) -> None:
        if self._lengths[contig] != length_bp:
            raise DataError(f"contig is {self._lengths[contig]} bp in the BAM header but {length_bp} bp in "
                            f"{fasta_path}", file=self.files[0].path, contig=contig)

    def emissions(self, contig, *, offset=0, n_bins=None, gaps=None):
        n = self.n_bins(contig) - offset if n_bins is None else n_bins
        n_labels = self.n_labels

        def emissions(a, b):
            if a < 0 or b > n or a > b:
                raise ValueError(f"emission range [{a}, {b}) outside [0, {n})")
            return np.zeros((b - a, n_labels), dtype=np.float64)

        return emissions

    def close(self) -> None:
        pass
