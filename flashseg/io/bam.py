"""Read coverage from BAM/CRAM: per-bin counts and per-label log-likelihoods.

What counts (SPEC 4.4):

* a read counts once, in the bin holding its leftmost aligned base
  (``reference_start``), whatever its strand;
* with ``fragments=True`` only properly paired reads count, once per
  fragment, at the fragment midpoint ``pos + tlen // 2`` taken from the
  leftmost mate (the one with ``tlen > 0``); fragments longer than
  ``max_fragment`` bp are dropped, which also bounds how far before a bin
  range a counted fragment can start, so every range is counted exactly;
* reads that are unmapped, secondary, supplementary, QC-failed or marked
  duplicate, or have MAPQ below ``min_mapq``, are dropped.

Blacklist: bins overlapping a blacklist interval by at least 1 bp are
*masked*, not emptied of reads: their log-likelihood is 0 for every label
(no evidence, like an assembly gap) and they are left out of the depth
median. Dropping the reads instead would make partly blacklisted bins look
like deletions. The raw counts (``--raw``) stay the reads counted.

Depth (reads per bin at copy ratio 1) is the median of the filtered counts
of the genome's full-length, unmasked bins with any coverage. The last bin
of a contig may be shorter than ``bin_size``; its expected count is scaled
by its length (``mu = mean[label] * depth * bp / bin_size``) and it does not
enter the median.

Likelihoods: Poisson(mu) or negative binomial with variance
``mu + dispersion * mu^2``. A label whose mean is 0 (homozygous deletion)
gets ``mu = MIN_COPY_RATIO * depth`` instead, so a few stray mismapped
reads make such a bin unlikely, not impossible.

Reading streams over bin ranges, never the whole file in memory: a BAM with
a .bai index is scanned by compiled code from the index's offset
(flashseg.io.bam_fast, several million reads/s), anything else through
pysam ``fetch``. Ranges are counted in worker processes (pysam holds the
GIL, so threads would not scale). Only O(bins) integer counts are kept.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

log = logging.getLogger("flashseg")

# BAM flag bits (SAM spec 1.4).
FLAG_PAIRED = 0x1
FLAG_PROPER_PAIR = 0x2
FLAG_UNMAPPED = 0x4
FLAG_SECONDARY = 0x100
FLAG_QCFAIL = 0x200
FLAG_DUPLICATE = 0x400
FLAG_SUPPLEMENTARY = 0x800
DROPPED_FLAGS = FLAG_UNMAPPED | FLAG_SECONDARY | FLAG_QCFAIL | FLAG_DUPLICATE | FLAG_SUPPLEMENTARY

#: Copy ratio used in place of 0 for a label's coverage mean (see module doc).
MIN_COPY_RATIO = 1e-3

#: Size of one counting work unit, in bp: small enough that one large contig
#: still spreads over all workers, large enough that opening costs vanish.
UNIT_BP = 4_000_000

#: Mapped reads per worker process worth its start-up cost (about a second:
#: imports and compiled code) at several million reads/s per process.
READS_PER_PROCESS = 8_000_000


@dataclass(frozen=True)
class ReadFilter:
    """Which reads count, and where (see the module docstring)."""

    min_mapq: int = 20
    fragments: bool = False
    max_fragment: int = 1000

    def __post_init__(self):
        if self.min_mapq < 0:
            raise DataError(f"--min-mapq must be >= 0, got {self.min_mapq}")
        if self.max_fragment < 1:
            raise DataError(f"max fragment length must be >= 1 bp, got {self.max_fragment}")


# ----------------------------------------------------------------------------
# Opening and checking the file
# ----------------------------------------------------------------------------

def _is_cram(path: str) -> bool:
    return str(path).lower().endswith(".cram")


def open_alignments(path, reference=None):
    """Open an indexed, coordinate-sorted BAM or CRAM; DataError otherwise."""
    import pysam

    path = os.fspath(path)
    # htslib's own stderr messages would duplicate (and garble) the one-line
    # errors raised here from its return codes.
    pysam.set_verbosity(0)
    if _is_cram(path) and reference is None:
        raise DataError("a CRAM file needs its reference: give --fasta", file=path)
    mode = "rc" if _is_cram(path) else "rb"
    try:
        # ignore_truncation=False: htslib's missing-EOF-marker check raises.
        bam = pysam.AlignmentFile(path, mode, reference_filename=os.fspath(reference) if reference else None,
                                  ignore_truncation=False)
    except (OSError, ValueError) as exc:
        msg = str(exc)
        if "truncated" in msg or "EOF" in msg:
            raise DataError("truncated BAM (no BGZF end-of-file marker): re-create or re-download it",
                            file=path) from None
        raise DataError(f"cannot read as {'CRAM' if mode == 'rc' else 'BAM'}: {msg}", file=path) from None
    sort_order = bam.header.to_dict().get("HD", {}).get("SO")
    if sort_order is not None and sort_order != "coordinate":
        bam.close()
        raise DataError(f"not coordinate-sorted (header says SO:{sort_order}): "
                        f"run `samtools sort -o sorted.bam {path}` and index the result", file=path)
    if not bam.has_index():
        if sort_order is None and not _looks_sorted(bam):
            bam.close()
            raise DataError(f"not coordinate-sorted and not indexed: run `samtools sort -o sorted.bam {path}`"
                            " and `samtools index sorted.bam`", file=path)
        bam.close()
        tool = "samtools index"
        raise DataError(f"no index found (.{'crai' if mode == 'rc' else 'bai/.csi'}): run `{tool} {path}`",
                        file=path)
    _warn_if_index_stale(path)
    return bam


_warned_stale: set = set()


def _warn_if_index_stale(path: str) -> None:
    """An index older than its file may point at the wrong blocks: say so (once per file)."""
    stem = path[:-4] if path.lower().endswith((".bam", ".cram")) else path
    if path.lower().endswith(".cram"):
        stem = path[:-5]
    for index in (path + ".bai", path + ".csi", path + ".crai", stem + ".bai", stem + ".crai"):
        if os.path.exists(index):
            if os.path.getmtime(index) < os.path.getmtime(path) and path not in _warned_stale:
                _warned_stale.add(path)
                log.warning("%s: the index %s is older than the file; if the file changed, run "
                            "`samtools index %s`", path, index, path)
            return


def _looks_sorted(bam, n_reads: int = 10000) -> bool:
    """Peek at the first reads of an unindexed file: are they in order?"""
    previous = (-1, -1)
    try:
        for read in bam.head(n_reads):
            if read.reference_id < 0:
                break  # unplaced reads come last in a sorted file
            key = (read.reference_id, read.reference_start)
            if key < previous:
                return False
            previous = key
    except OSError:
        return True  # let the caller's own message stand
    return True


def bam_contigs(path, reference=None) -> list[tuple[str, int]]:
    """(name, length) of every @SQ line, in header order."""
    with open_alignments(path, reference) as bam:
        return list(zip(bam.references, bam.lengths))


def check_contigs(bam_path, bam_contig_list, fasta_path, fasta_contig_list) -> None:
    """Every FASTA contig must be in the BAM header with the same length.

    BAM contigs that the FASTA lacks (decoys, alts) are ignored by callers.
    """
    from .fasta import chr_hint

    in_bam = dict(bam_contig_list)
    for name, length in fasta_contig_list:
        if name not in in_bam:
            raise DataError(f"contig {name} of {fasta_path} is not in the BAM header" + chr_hint(name, in_bam),
                            file=os.fspath(bam_path))
        if in_bam[name] != length:
            raise DataError(f"contig {name} is {in_bam[name]} bp in the BAM header but {length} bp in "
                            f"{fasta_path}: was it aligned to another assembly?", file=os.fspath(bam_path))


def fasta_contigs(path) -> list[tuple[str, int]]:
    """(name, length) of a FASTA's records in file order (SPEC 4.3 checks apply)."""
    from .fasta import open_genome

    with open_genome(os.fspath(path)) as genome:
        return [(name, genome.length(name)) for name in genome.names]


def select_contigs(bam_path, reference=None, fasta=None) -> list[tuple[str, int]]:
    """Contigs to count: the FASTA's (checked against the BAM), else the BAM's."""
    in_bam = bam_contigs(bam_path, reference)
    if fasta is None:
        return in_bam
    in_fasta = fasta_contigs(fasta)
    check_contigs(bam_path, in_bam, fasta, in_fasta)
    return in_fasta


# ----------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------

def n_bins_of(length: int, bin_size: int) -> int:
    return -(-int(length) // int(bin_size))


def count_bins(bam, contig: str, start_bin: int, end_bin: int, bin_size: int, length: int,
               read_filter: ReadFilter, path: str = "") -> np.ndarray:
    """Filtered reads (or fragment midpoints) per bin for bins [start_bin, end_bin) of an open file.

    Returns int32 (end_bin - start_bin,). Streams one fetch; keeps positions
    of this range only.
    """
    start_bp = start_bin * bin_size
    end_bp = min(end_bin * bin_size, length)
    n = end_bin - start_bin
    if n <= 0:
        return np.zeros(0, dtype=np.int32)
    min_mapq = read_filter.min_mapq
    positions = array("q")  # 8 bytes a read, not a Python int object each
    append = positions.append
    previous = -1
    try:
        if read_filter.fragments:
            max_fragment = read_filter.max_fragment
            required = FLAG_PAIRED | FLAG_PROPER_PAIR
            for read in bam.fetch(contig, max(0, start_bp - max_fragment), end_bp):
                pos = read.reference_start
                if pos < previous:
                    raise _unsorted(path, contig, pos)
                previous = pos
                flag = read.flag
                if flag & DROPPED_FLAGS or (flag & required) != required:
                    continue
                if read.mapping_quality < min_mapq:
                    continue
                tlen = read.template_length
                if tlen <= 0 or tlen > max_fragment:
                    continue
                mid = pos + tlen // 2
                if start_bp <= mid < end_bp:
                    append(mid)
        else:
            for read in bam.fetch(contig, start_bp, end_bp):
                pos = read.reference_start
                if pos < previous:
                    raise _unsorted(path, contig, pos)
                previous = pos
                if pos < start_bp or read.flag & DROPPED_FLAGS or read.mapping_quality < min_mapq:
                    continue
                append(pos)
    except OSError as exc:
        raise DataError(f"truncated or corrupt BAM while reading {contig}:{start_bp + 1}-{end_bp}: {exc}",
                        file=path or None) from None
    if not positions:
        return np.zeros(n, dtype=np.int32)
    offsets = (np.frombuffer(positions, dtype=np.int64) - start_bp) // bin_size
    return np.bincount(offsets, minlength=n).astype(np.int32)


def _unsorted(path, contig, pos):
    return DataError(f"reads out of order at {contig}:{pos + 1}: the file is not coordinate-sorted "
                     f"(run `samtools sort` and `samtools index`)", file=path or None)


class RangeCounter:
    """Counts bin ranges of one file: the compiled BAM path when it applies, else pysam.

    The compiled path (flashseg.io.bam_fast) reads .bam files with a .bai
    index; CRAM, .csi-only files and index entries it cannot use go through
    :func:`count_bins`. Both apply the same filters; tests hold them equal.
    """

    def __init__(self, path, reference=None, *, fast: bool = True):
        self.path = os.fspath(path)
        self.bam = open_alignments(self.path, reference)
        self.index = None
        self._raw = None
        if fast and not _is_cram(self.path):
            from .bam_fast import LinearIndex, find_bai

            bai = find_bai(self.path)
            if bai is not None:
                try:
                    index = LinearIndex(bai)
                except (ValueError, OSError, struct.error):
                    index = None  # pysam reads it or says what is wrong
                if index is not None and len(index.linear) == self.bam.nreferences:
                    self.index = index

    def count(self, contig, start_bin, end_bin, bin_size, length, read_filter) -> np.ndarray:
        tid = self.bam.get_tid(contig)
        if tid < 0:
            from .fasta import chr_hint

            raise DataError(f"contig {contig} is not in the BAM header" + chr_hint(contig, self.bam.references),
                            file=self.path)
        if self.index is not None:
            from .bam_fast import count_range

            if self._raw is None:
                self._raw = open(self.path, "rb", buffering=0)
            counts = count_range(self.path, self.index, tid, contig, start_bin, end_bin, bin_size, length,
                                 read_filter, handle=self._raw)
            if counts is not None:
                return counts
        return count_bins(self.bam, contig, start_bin, end_bin, bin_size, length, read_filter, self.path)

    def close(self) -> None:
        # closing a file that failed mid-read raises again: keep the first error
        with contextlib.suppress(OSError):
            self.bam.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None


# Worker-process state: one counter per worker, reused across units.
_worker_counter = None


def _worker_init(path, reference, fast):
    global _worker_counter
    _worker_counter = RangeCounter(path, reference, fast=fast)


def _worker_count(contig, start_bin, end_bin, bin_size, length, read_filter):
    return _worker_counter.count(contig, start_bin, end_bin, bin_size, length, read_filter)


def _mapped_reads(path, reference=None) -> int | None:
    """Mapped reads from the index statistics (None where the index has none)."""
    try:
        with open_alignments(path, reference) as bam:
            return int(sum(stat.mapped for stat in bam.get_index_statistics()))
    except (ValueError, OSError, AttributeError):
        return None


def _units(contigs, bin_size, unit_bp):
    unit_bins = max(1, unit_bp // bin_size)
    for name, length in contigs:
        total = n_bins_of(length, bin_size)
        for a in range(0, total, unit_bins):
            yield name, a, min(total, a + unit_bins), length


def count_contigs(path, contigs, bin_size: int, read_filter: ReadFilter = ReadFilter(), *,
                  reference=None, threads: int = 1, unit_bp: int = UNIT_BP,
                  fast: bool = True, reads_per_process: int = READS_PER_PROCESS) -> dict[str, np.ndarray]:
    """Per-bin counts (int32, length ceil(L / bin_size)) for each (name, length).

    Contigs are cut into ranges of about `unit_bp` and counted in `threads`
    worker processes (in this process when threads == 1). Starting a
    worker costs about a second (imports, compiled code), so at most one
    worker per `reads_per_process` mapped reads (from the index) is
    started. `fast=False` forces the pysam path (for comparisons).
    """
    path = os.fspath(path)
    contigs = list(contigs)
    counts = {name: np.zeros(n_bins_of(length, bin_size), dtype=np.int32) for name, length in contigs}
    units = list(_units(contigs, bin_size, unit_bp))
    if threads > 1 and reads_per_process > 0:
        mapped = _mapped_reads(path, reference)
        if mapped is not None:
            threads = min(threads, max(1, -(-mapped // reads_per_process)))
    if threads <= 1 or len(units) <= 1:
        counter = RangeCounter(path, reference, fast=fast)
        try:
            for name, a, b, length in units:
                counts[name][a:b] = counter.count(name, a, b, bin_size, length, read_filter)
        finally:
            counter.close()
        return counts
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Open once here first so that a bad file fails with its own message
    # before any worker starts.
    open_alignments(path, reference).close()
    # forkserver: the caller may already run threads (numba, torch), and
    # fork() of a threaded process can deadlock.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(threads, len(units)), mp_context=context,
                             initializer=_worker_init, initargs=(path, reference, fast)) as pool:
        futures = [(name, a, b, pool.submit(_worker_count, name, a, b, bin_size, length, read_filter))
                   for name, a, b, length in units]
        try:
            for name, a, b, future in futures:
                counts[name][a:b] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return counts


# ----------------------------------------------------------------------------
# Blacklist and depth
# ----------------------------------------------------------------------------

def read_blacklist(path) -> dict[str, list[tuple[int, int]]]:
    """BED intervals (chrom, start, end; more columns ignored) by contig; plain or gzipped."""
    import gzip

    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    intervals: dict[str, list[tuple[int, int]]] = {}
    try:
        with opener(path, "rt") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 3:
                    fields = line.split()
                try:
                    chrom, start, end = fields[0], int(fields[1]), int(fields[2])
                except (ValueError, IndexError):
                    raise DataError(f"line {line_no}: expected chrom, start, end", file=path) from None
                if start < 0 or end < start:
                    raise DataError(f"line {line_no}: bad interval {start}-{end}", file=path)
                intervals.setdefault(chrom, []).append((start, end))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read blacklist BED: {exc}", file=path) from None
    return intervals


def blacklist_mask(intervals, length: int, bin_size: int) -> np.ndarray:
    """bool (n_bins,): True for bins overlapping any interval by >= 1 bp."""
    n = n_bins_of(length, bin_size)
    mask = np.zeros(n + 1, dtype=np.int32)
    for start, end in intervals or ():
        end = min(end, length)
        if end <= start:
            continue
        mask[start // bin_size] += 1
        mask[(end - 1) // bin_size + 1] -= 1
    return np.cumsum(mask[:n]) > 0


def bin_exposure(length: int, bin_size: int, start_bin: int = 0, end_bin: int | None = None) -> np.ndarray:
    """Fraction of a full bin that each bin covers (1, except a short last bin)."""
    n = n_bins_of(length, bin_size)
    end_bin = n if end_bin is None else end_bin
    exposure = np.ones(end_bin - start_bin, dtype=np.float64)
    if end_bin == n and n > start_bin:
        exposure[-1] = (length - (n - 1) * bin_size) / bin_size
    return exposure


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


def estimate_depth(bam_path, contigs, bin_size: int, read_filter: ReadFilter = ReadFilter(), *,
                   reference=None, blacklist=None, threads: int = 1, counts: dict | None = None) -> float:
    """Reads per bin at copy ratio 1: the median of SPEC 4.4 (a counting pass unless `counts` given)."""
    contigs = list(contigs)
    if counts is None:
        counts = count_contigs(bam_path, contigs, bin_size, read_filter, reference=reference, threads=threads)
    masks = None
    if blacklist is not None:
        masks = {name: blacklist_mask(blacklist.get(name), length, bin_size) for name, length in contigs}
    depth = median_depth(counts, contigs, bin_size, masks)
    if depth <= 0:
        raise DataError(f"no reads pass the filters (MAPQ >= {read_filter.min_mapq}, no duplicate, secondary, "
                        "supplementary or QC-fail flags"
                        + (", properly paired" if read_filter.fragments else "")
                        + "): cannot estimate the depth; give --depth", file=os.fspath(bam_path))
    return depth


# ----------------------------------------------------------------------------
# Likelihoods
# ----------------------------------------------------------------------------

def _coverage_section(spec):
    coverage = getattr(spec, "coverage", None)
    if coverage is None:
        raise DataError("the model has no coverage section: reads need one (SPEC 4.4)",
                        file=getattr(spec, "path", None))
    return coverage


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
        self._total_bins = n_bins_of(self.length, self.bin_size)

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

    `blacklist` is the dict from :func:`read_blacklist` (or None); `gaps` a
    (G, 2) array of half-open bin ranges (N gaps) that also score 0; `length`
    the contig length in bp (defaults to n_bins * bin_size). Bins are the
    contig's own (0..n_bins): callers decoding a region add their offset.
    """
    length = int(length) if length is not None else int(n_bins) * int(spec.bin_size)
    mask = None
    if blacklist is not None and blacklist.get(contig):
        mask = blacklist_mask(blacklist[contig], length, int(spec.bin_size))[:int(n_bins)]
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
        return n_bins_of(self._lengths[contig], self.bin_size)

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
