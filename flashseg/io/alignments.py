"""Reads from BAM/CRAM: opening and checking a file, its contigs, and
filtered reads per bin (``reads.py`` says which count).

Reading streams over bin ranges, never the whole file in memory: a BAM with
a .bai index is scanned by compiled code from the index's offset
(``bam_fast.py``, several million reads/s), anything else through pysam
``fetch``. Ranges are counted in worker processes (pysam holds the GIL, so
threads would not scale). Only O(bins) integer counts are kept.
"""
from __future__ import annotations

import contextlib
import logging
import os
from array import array

import numpy as np

from ..bins import n_bins
from ..errors import DataError
from .names import check_contig_names
from .reads import DROPPED_FLAGS, FLAG_PAIRED, FLAG_PROPER_PAIR, ReadFilter

log = logging.getLogger(__name__)


#: Size of one counting work unit, in bp: small enough that one large contig
#: still spreads over all workers, large enough that opening costs vanish.
UNIT_BP = 4_000_000

#: Mapped reads per worker process worth its start-up cost (about a second:
#: imports and compiled code) at several million reads/s per process.
READS_PER_PROCESS = 8_000_000


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
    try:
        # the SAM spec forbids whitespace in reference names; a tab or newline would also break every output
        check_contig_names(bam.references, file=path)
        sort_order = bam.header.to_dict().get("HD", {}).get("SO")
    except DataError:
        bam.close()
        raise
    except ValueError as exc:   # pysam's parser of the header text
        bam.close()
        raise DataError(f"malformed SAM header: {exc}", file=path) from None
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
    """(name, length) of a FASTA's records in file order (the genome's checks apply: io/fasta.py)."""
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
    Both paths first hold the index htslib uses (.bai or .csi) to the BAM
    (:meth:`check`): an index made for another file is an error naming it.
    """

    def __init__(self, path, reference=None, *, fast: bool = True):
        self.path = os.fspath(path)
        self.bam = open_alignments(self.path, reference)
        self.index = None          # a .bai the compiled path reads
        self._checked_index = None  # the .bai/.csi htslib reads, held to the BAM (see _check_index)
        self._checked_tids: set[int] = set()
        self._raw = None
        try:
            if not _is_cram(self.path):
                self._open_index(fast)
        except BaseException:
            self.close()
            raise

    def _open_index(self, fast: bool) -> None:
        """The index must describe this BAM: a .bai or .csi made for another file makes htslib and
        the compiled path read the wrong blocks and count reads silently wrong."""
        from .bam_fast import find_index, index_mismatch, load_index

        index_path = find_index(self.path)
        if index_path is None:
            return
        index = load_index(index_path)
        if index.n_ref != self.bam.nreferences:
            raise index_mismatch(index_path, self.path, f"it has {index.n_ref} reference(s), the BAM header "
                                 f"{self.bam.nreferences}")
        self._checked_index = index
        self._records_start = self.bam.tell()   # nothing read yet: the first record's virtual offset
        if fast and index.linear is not None:
            self.index = index

    def _check_index(self, tid: int) -> None:
        """Once per contig: the index's first and last reads of it are where it says (bam_fast.check_reference)."""
        if self._checked_index is None or tid in self._checked_tids:
            return
        from .bam_fast import check_reference

        check_reference(self._handle(), self.path, self._checked_index, tid, self._records_start,
                        names=self.bam.references)
        self._checked_tids.add(tid)

    def _handle(self):
        if self._raw is None:
            self._raw = open(self.path, "rb", buffering=0)
        return self._raw

    def check(self, contig) -> int:
        """The contig's id in the BAM header, its index entries checked against the BAM."""
        tid = self.bam.get_tid(contig)
        if tid < 0:
            from .fasta import chr_hint

            raise DataError(f"contig {contig} is not in the BAM header" + chr_hint(contig, self.bam.references),
                            file=self.path)
        self._check_index(tid)
        return tid

    def count(self, contig, start_bin, end_bin, bin_size, length, read_filter) -> np.ndarray:
        tid = self.check(contig)
        if self.index is not None:
            from .bam_fast import count_range

            counts = count_range(self.path, self.index, tid, contig, start_bin, end_bin, bin_size, length,
                                 read_filter, handle=self._handle())
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
        total = n_bins(length, bin_size)
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
    counts = {name: np.zeros(n_bins(length, bin_size), dtype=np.int32) for name, length in contigs}
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

    # Open once here first so that a bad file (or an index made for another
    # file) fails with its own message before any worker starts.
    counter = RangeCounter(path, reference, fast=fast)
    try:
        for name, _ in contigs:
            counter.check(name)
    finally:
        counter.close()
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
