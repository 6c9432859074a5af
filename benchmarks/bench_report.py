#!/usr/bin/env python
"""`flashseg report` on a whole-genome segmentation (issue 19).

The genome of bench_decode.py (24 contigs, 15.4 M bins of 200 bp, C = 10
labels), segmented without decoding: runs of labels with geometric lengths
(mean 28 bins, so about 550 000 segments) written straight as BED9+4 under
bench_decode.py's K = 256 model (semi256.yaml). Annotations: 20 000
synthetic genes (BED6, both strands, 1-100 kb), their first exons and a
CpG-island-like set of 30 000 short intervals; anchors: the genes' TSS and
TES in ChromHMM's `chrom position strand` format. Timed end to end (the
`flashseg` child process, as bench_decode.py does), with every figure and
the page:

    python benchmarks/bench_report.py                # full size
    python benchmarks/bench_report.py --scale 0.01   # 1%, seconds
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import BIN_SIZE, C, contig_bins, model_semi, run_case  # noqa: E402


def write_segments(path, bins, seed=0):
    rng = np.random.default_rng(seed)
    n_segments = 0
    with open(path, "w") as out:
        out.write("#chrom\tstart\tend\tname\tscore\tstrand\tthickStart\tthickEnd\titemRgb"
                  "\tseg_post\tstart_post\tend_post\tlabel_post\n")
        for name, n in bins.items():
            runs = rng.geometric(1 / 28.0, size=n // 14 + 16)
            ends = np.minimum(np.cumsum(runs), n)
            ends = ends[: int(np.searchsorted(ends, n)) + 1]
            starts = np.concatenate(([0], ends[:-1]))
            labels = rng.integers(0, C, size=ends.size)
            for k in range(1, labels.size):          # runs: no two neighbours share a label
                if labels[k] == labels[k - 1]:
                    labels[k] = (labels[k] + 1) % C
            length = n * BIN_SIZE - 37
            s_bp, e_bp = starts * BIN_SIZE, np.minimum(ends * BIN_SIZE, length)
            post = rng.random(ends.size)
            out.write("".join(
                f"{name}\t{s}\t{e}\tS{c}\t{int(1000 * p)}\t.\t{s}\t{e}\t0,0,0\t{p:.6g}\t1\t1\t{p:.6g}\n"
                for s, e, c, p in zip(s_bp.tolist(), e_bp.tolist(), labels.tolist(), post.tolist())))
            n_segments += ends.size
    return n_segments


def write_annotations(work, bins, n_genes, seed=1):
    rng = np.random.default_rng(seed)
    names = list(bins)
    sizes = np.array([bins[n] * BIN_SIZE for n in names], dtype=np.float64)
    contig = rng.choice(len(names), size=n_genes, p=sizes / sizes.sum())
    length = rng.integers(1000, 100_000, size=n_genes)
    start = (rng.random(n_genes) * np.maximum(sizes[contig] - length, 1)).astype(np.int64)
    end = np.minimum(start + length, sizes[contig].astype(np.int64))
    strand = np.where(rng.random(n_genes) < 0.5, "+", "-")
    ann = os.path.join(work, "annotations")
    os.makedirs(ann, exist_ok=True)
    with open(os.path.join(ann, "genes.bed"), "w") as g, open(os.path.join(ann, "exon1.bed"), "w") as x, \
            open(os.path.join(work, "TSS.txt"), "w") as tss, open(os.path.join(work, "TES.txt"), "w") as tes:
        for c, s, e, st in zip(contig.tolist(), start.tolist(), end.tolist(), strand.tolist()):
            g.write(f"{names[c]}\t{s}\t{e}\tg\t0\t{st}\n")
            first = (s, min(e, s + 300)) if st == "+" else (max(s, e - 300), e)
            x.write(f"{names[c]}\t{first[0]}\t{first[1]}\n")
            tss.write(f"{names[c]}\t{s if st == '+' else e - 1}\t{st}\n")
            tes.write(f"{names[c]}\t{e - 1 if st == '+' else s}\t{st}\n")
    n_cpg = int(n_genes * 1.5)
    contig = rng.choice(len(names), size=n_cpg, p=sizes / sizes.sum())
    start = (rng.random(n_cpg) * (sizes[contig] - 2000)).astype(np.int64)
    with open(os.path.join(ann, "cpg.bed"), "w") as out:
        out.write("".join(f"{names[c]}\t{s}\t{s + w}\n" for c, s, w in
                          zip(contig.tolist(), start.tolist(), rng.integers(200, 2000, n_cpg).tolist())))
    return ann


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 15.4 M bins (default 1)")
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="flashseg-bench-report-")
    bins = contig_bins(args.scale)
    t0 = time.perf_counter()
    segments = os.path.join(work, "calls.bed")
    n_segments = write_segments(segments, bins)
    annotations = write_annotations(work, bins, max(10, int(args.genes * min(1.0, args.scale * 10))))
    model = os.path.join(work, "semi256.yaml")
    model_semi(model)
    print(f"generated {sum(bins.values()):,} bins, {n_segments:,} segments in {time.perf_counter() - t0:.1f} s "
          f"-> {work}", file=sys.stderr)
    base = [sys.executable, "-m", "flashseg", "report", "-m", model, "--segments", segments]
    cases = [
        ("segments only (labels, transitions, durations)", []),
        ("+ 3 annotations, TSS and TES anchors", ["--annotations", annotations,
                                                  "--anchors", os.path.join(work, "TSS.txt"),
                                                  "--anchors", os.path.join(work, "TES.txt")]),
    ]
    print("| case | segments | wall (s) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for title, extra in cases:
        walls, rss = [], 0.0
        for _ in range(args.repeats):
            out = os.path.join(work, "report")
            shutil.rmtree(out, ignore_errors=True)
            wall, peak, code, err = run_case(base + extra + ["-o", out, "-q"])
            if code:
                sys.exit(f"flashseg report failed ({code}): {err}")
            walls.append(wall)
            rss = max(rss, peak)
        print(f"| {title} | {n_segments:,} | {min(walls):.1f} (median {np.median(walls):.1f}) | {rss:.0f} |")
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
