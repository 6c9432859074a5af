"""Binning throughput of `flashseg tracks coverage`'s counter, next to a plain pysam loop.

    python benchmarks/bench_coverage.py [--reads 10000000] [--threads 2] [--scratch DIR]

The simulated BAM (single-end reads at copy ratio 1, no sequences, 4
contigs) is generated once into the scratch directory and reused. Both
counters apply the same filters (flags, MAPQ >= 20) and are checked to give
identical counts. Throughput = reads in the file / wall seconds, including
starting worker processes. The compiled path (flashseg.io.bam_fast) reads
BAM + .bai directly; the pysam path is what CRAM and .csi-indexed files use.
Target (issue 5): >= 1M reads/s with 2 worker processes.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from types import SimpleNamespace

import numpy as np


def make_bam(path, n_reads, n_contigs, bin_size, seed=0):
    from flashseg.io.simreads import simulate_reads

    length = 50_000_000
    contigs = [(f"chr{i + 1}", length) for i in range(n_contigs)]
    bins = -(-length // bin_size)
    depth = n_reads / (n_contigs * bins)
    spec = SimpleNamespace(bin_size=bin_size, coverage=SimpleNamespace(mean=np.array([1.0])))
    segments = {name: (np.array([0]), np.array([bins]), np.array([0])) for name, _ in contigs}
    simulate_reads(path, contigs, segments, spec, depth=depth, read_length=100, seed=seed)
    return contigs


def plain_loop(path, contigs, bin_size, min_mapq=20):
    """What one would write by hand: one pass, one process, attribute checks per read."""
    import pysam

    positions = {name: [] for name, _ in contigs}
    with pysam.AlignmentFile(path) as bam:
        for read in bam.fetch(until_eof=True):
            if read.is_unmapped or read.is_secondary or read.is_supplementary or read.is_qcfail \
                    or read.is_duplicate or read.mapping_quality < min_mapq:
                continue
            positions[read.reference_name].append(read.reference_start)
    return {name: np.bincount(np.asarray(positions[name], dtype=np.int64) // bin_size,
                              minlength=-(-length // bin_size)) for name, length in contigs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contigs", type=int, default=4)
    parser.add_argument("--bin-size", type=int, default=1000)
    parser.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "flashseg-bench-coverage"))
    args = parser.parse_args()

    import pysam

    from flashseg.io import alignments
    from flashseg.io import reads

    os.makedirs(args.scratch, exist_ok=True)
    path = os.path.join(args.scratch, f"sim_{args.reads}_{args.contigs}.bam")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        make_bam(path, args.reads, args.contigs, args.bin_size)
        print(f"generated {path} in {time.perf_counter() - t0:.1f} s")
    with pysam.AlignmentFile(path) as f:
        contigs = list(zip(f.references, f.lengths))
        n_reads = sum(s.mapped for s in f.get_index_statistics())
    size_mb = os.path.getsize(path) / 1e6
    print(f"{n_reads:,} reads, {size_mb:.0f} MB, {len(contigs)} contigs, bin size {args.bin_size}")

    rows = []
    t0 = time.perf_counter()
    reference = plain_loop(path, contigs, args.bin_size)
    rows.append(("plain pysam loop, 1 process", time.perf_counter() - t0))
    # compile (or load from numba's cache) outside the timings
    alignments.count_contigs(path, contigs[:1], args.bin_size, reads.ReadFilter(min_mapq=20), unit_bp=args.bin_size)
    runs = [("flashseg, pysam path", False, 1)] + [
        ("flashseg, compiled path", True, threads) for threads in sorted({1, args.threads})]
    for label, fast, threads in runs:
        t0 = time.perf_counter()
        counts = alignments.count_contigs(path, contigs, args.bin_size, reads.ReadFilter(min_mapq=20), threads=threads,
                                   fast=fast)
        rows.append((f"{label}, {threads} process(es)", time.perf_counter() - t0))
        for name, _ in contigs:
            np.testing.assert_array_equal(counts[name], reference[name])
    print(f"{'counter':<46} {'seconds':>8} {'reads/s':>12}")
    for label, seconds in rows:
        print(f"{label:<46} {seconds:8.2f} {n_reads / seconds:12,.0f}")
    best = n_reads / min(s for label, s in rows if label.startswith("flashseg"))
    print(f"target >= 1,000,000 reads/s: {'met' if best >= 1e6 else 'NOT met'} ({best:,.0f})")


if __name__ == "__main__":
    main()
