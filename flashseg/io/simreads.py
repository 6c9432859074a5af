"""Simulated reads for ``flashseg simulate``: a sorted, indexed BAM whose depth follows a segmentation.

Bin i of a segment with label c gets Poisson(mean[c] * depth * bp_i / bin_size)
single-end reads (mean from the model's coverage section, `depth` = reads
per bin at copy ratio 1, bp_i the bin's length), each starting uniformly in
the bin, on a random strand, MAPQ 60, aligned over `read_length` bp (clipped
at the contig end). Reads carry no sequence (SEQ ``*``), which BAM allows
and which keeps the file small: flashseg counts read positions only.

Each contig has its own generator, seeded from (seed, contig name), so a
contig's reads do not depend on which other contigs are simulated.
"""
from __future__ import annotations

import os
import zlib

import numpy as np

from .. import bins
from ..errors import DataError
from .output import _register, check_writable_dir, commit, discard, temp_path_for


def _segment_arrays(segments):
    """(start, end, label) int arrays from a Segments-like object or a 3-tuple."""
    if hasattr(segments, "start"):
        return np.asarray(segments.start), np.asarray(segments.end), np.asarray(segments.label)
    start, end, label = segments
    return np.asarray(start), np.asarray(end), np.asarray(label)


def contig_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def read_starts(length: int, bin_size: int, segments, means, depth: float,
                rng: np.random.Generator) -> np.ndarray:
    """Sorted int64 read start positions for one contig."""
    n_bins = bins.n_bins(length, bin_size)
    start, end, label = _segment_arrays(segments)
    per_bin_mean = np.zeros(n_bins, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    for s, e, c in zip(start.tolist(), end.tolist(), label.tolist()):
        if not 0 <= s < e <= n_bins:
            raise DataError(f"segment [{s}, {e}) outside the contig's {n_bins} bins")
        per_bin_mean[s:e] = means[c]
    n_reads = rng.poisson(per_bin_mean * depth * bins.exposure(length, bin_size))
    read_bins = np.repeat(np.arange(n_bins, dtype=np.int64), n_reads)
    bin_bp = np.minimum(bin_size, length - read_bins * bin_size)
    starts = read_bins * bin_size + (rng.random(read_bins.size) * bin_bp).astype(np.int64)
    starts.sort()
    return starts


def simulate_reads(path, contigs, segments_by_contig, spec, depth: float, read_length: int = 100,
                   seed: int = 0) -> str:
    """Write a coordinate-sorted, indexed BAM of single-end reads.

    contigs: [(name, length bp), ...] in the order of the header;
    segments_by_contig: {name: Segments or (start, end, label) in bins};
    spec: a ModelSpec with a coverage section (its bin_size and means).
    Contigs without segments get no reads. Written to a temporary name and
    renamed (with its .bai) at the end. Returns the BAM path.
    """
    import pysam

    coverage = getattr(spec, "coverage", None)
    if coverage is None:
        raise DataError("simulating reads needs a model with a coverage section", file=getattr(spec, "path", None))
    if not depth > 0:
        raise DataError(f"read depth must be > 0, got {depth}")
    if read_length < 1:
        raise DataError(f"read length must be >= 1, got {read_length}")
    path = os.fspath(path)
    bin_size = int(spec.bin_size)
    means = np.asarray(coverage.mean, dtype=np.float64)
    header = {"HD": {"VN": "1.6", "SO": "coordinate"},
              "SQ": [{"SN": name, "LN": int(length)} for name, length in contigs],
              "PG": [{"ID": "flashseg-simulate", "PN": "flashseg",
                      "CL": f"simulate_reads depth={depth} read_length={read_length} seed={seed}"}]}
    check_writable_dir(path)
    tmp = temp_path_for(path, ".bam")
    tmp_index = tmp + ".bai"
    _register(tmp_index)  # pysam.index writes it; removed at exit if we die
    try:
        with pysam.AlignmentFile(tmp, "wb", header=header) as out:
            read = pysam.AlignedSegment(out.header)
            read.mapping_quality = 60
            for tid, (name, length) in enumerate(contigs):
                if name not in segments_by_contig:
                    continue
                rng = contig_rng(seed, name)
                starts = read_starts(int(length), bin_size, segments_by_contig[name], means, depth, rng)
                strands = rng.random(starts.size) < 0.5
                aligned = np.minimum(read_length, int(length) - starts)
                read.reference_id = tid
                full_cigar = ((0, read_length),)
                for i, (pos, reverse, span) in enumerate(zip(starts.tolist(), strands.tolist(), aligned.tolist())):
                    read.query_name = f"{name}:{i}"
                    read.flag = 16 if reverse else 0
                    read.reference_start = pos
                    read.cigartuples = full_cigar if span == read_length else ((0, span),)
                    out.write(read)
        pysam.index(tmp, tmp_index)
    except BaseException:
        discard(tmp)
        discard(tmp_index)
        raise
    # Index first: a BAM that exists always has its index beside it.
    commit(tmp_index, path + ".bai")
    commit(tmp, path)
    return path
