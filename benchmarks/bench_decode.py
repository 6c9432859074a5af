#!/usr/bin/env python
"""End-to-end ``flashseg decode`` benchmark (issue 3).

A simulated genome of 24 contigs totalling 15.4 M bins of 200 bp (about a
human genome), C = 10 labels, tracks uncompressed or lzf; each case writes
BED + ``--changes`` + ``--stats``:

  (a) hmm      K = 1, tail none, self-loops (an ordinary HMM), --method posterior
  (b) semi256  K = 256, negative-binomial duration priors with geometric tails

Inputs are generated chunk by chunk into a scratch directory (about 0.6 GB
of float32 tracks at full size). ``--scale 0.01`` runs a 1% version. Wall
time is measured around the ``flashseg`` child process, peak RSS is that
child's ``ru_maxrss`` (``os.wait4`` returns the child's own rusage, the
per-child form of ``resource.getrusage(RUSAGE_CHILDREN)``).

    python benchmarks/bench_decode.py --scale 0.01
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

# hg38 chr1..22, X, Y lengths (Mb), used only for the relative contig sizes.
RELATIVE = [248.96, 242.19, 198.30, 190.21, 181.54, 170.81, 159.35, 145.14, 138.39, 133.80, 135.09, 133.28,
            114.36, 107.04, 101.99, 90.34, 83.26, 80.37, 58.62, 64.44, 46.71, 50.82, 156.04, 57.23]
NAMES = [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY"]
TOTAL_BINS = 15_400_000
BIN_SIZE = 200
C = 10
CHUNK = 1 << 20


def contig_bins(scale: float) -> dict[str, int]:
    total = sum(RELATIVE)
    return {n: max(1, int(round(TOTAL_BINS * scale * r / total))) for n, r in zip(NAMES, RELATIVE)}


def labels_block(rng, n, state, mean_run=20.0):
    """Piecewise-constant labels with geometric run lengths, continuing from `state`."""
    runs = rng.geometric(1.0 / mean_run, size=n // 4 + 2)
    labels = rng.integers(0, C, size=runs.size)
    labels[0] = state
    out = np.repeat(labels, runs)[:n]
    while out.size < n:
        out = np.concatenate([out, np.repeat(rng.integers(0, C, 8), rng.geometric(1 / mean_run, 8))])[:n]
    return out, int(out[-1])


def make_tracks(path, bins, compression, seed=0):
    from flashseg.io.tracks import TracksWriter

    levels = np.arange(C, dtype=np.float64) * 1.5
    rng = np.random.default_rng(seed)
    with TracksWriter(path, labels=[f"S{i}" for i in range(C)], bin_size=BIN_SIZE, score="log_likelihood",
                      dtype="float32", compression=compression) as w:
        for name, n in bins.items():
            w.add_contig(name, n, length_bp=n * BIN_SIZE - 37)  # a partial last bin
            state = 0
            for a in range(0, n, CHUNK):
                b = min(n, a + CHUNK)
                lab, state = labels_block(rng, b - a, state)
                y = levels[lab] + rng.standard_normal(b - a)
                w.write(name, a, -0.5 * (y[:, None] - levels[None, :]) ** 2)


def label_block(name, color, duration):
    return f"  - name: {name}\n    color: \"{color}\"\n    duration: {duration}\n"


def model_hmm(path):
    labels = "".join(label_block(f"S{i}", f"{20 * i},{100},{200 - 15 * i}", "{family: table, log: [0]}")
                     for i in range(C))
    rows = "".join(f"  S{i}: {{" + ", ".join(f"S{j}: {0.95 if i == j else 0.05 / (C - 1):.6f}" for j in range(C))
                   + "}\n" for i in range(C))
    with open(path, "w") as f:
        f.write(f"name: bench-hmm\nbin_size: {BIN_SIZE}\nmax_duration: 1\ntail: none\nlabels:\n{labels}"
                f"initial: uniform\nfinal: free\ntransitions:\n{rows}")


def model_semi(path):
    labels = "".join(label_block(f"S{i}", f"{20 * i},{100},{200 - 15 * i}",
                                 f"{{family: negative_binomial, mean: {10 + 4 * i}, dispersion: 3}}") for i in range(C))
    rows = "".join(f"  S{i}: {{" + ", ".join(f"S{j}: {1.0 / (C - 1):.6f}" for j in range(C) if j != i) + "}\n"
                   for i in range(C))
    with open(path, "w") as f:
        f.write(f"name: bench-semi256\nbin_size: {BIN_SIZE}\nmax_duration: 256\ntail: geometric\nlabels:\n{labels}"
                f"initial: uniform\nfinal: free\ntransitions:\n{rows}")


def run_case(cmd):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, proc.returncode, err  # ru_maxrss: KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 15.4 M bins (default 1)")
    parser.add_argument("--workdir", help="scratch directory (default: a new temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--compression", choices=["none", "lzf"], default="lzf")
    parser.add_argument("--threads", type=int, default=None, help="decode --threads (default: all usable CPUs)")
    parser.add_argument("--cases", default="hmm,semi256", help="comma-separated subset of hmm,semi256")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args()

    work = args.workdir or tempfile.mkdtemp(prefix="flashseg-bench-")
    os.makedirs(work, exist_ok=True)
    bins = contig_bins(args.scale)
    tracks = os.path.join(work, f"tracks-{args.compression}-{args.scale:g}.h5")
    if not os.path.exists(tracks):
        t0 = time.perf_counter()
        make_tracks(tracks, bins, args.compression)
        print(f"generated {sum(bins.values()):,} bins x {C} labels in {time.perf_counter() - t0:.1f} s -> {tracks}",
              file=sys.stderr)
    model_hmm(os.path.join(work, "hmm.yaml"))
    model_semi(os.path.join(work, "semi256.yaml"))
    threads = args.threads or len(os.sched_getaffinity(0))
    rows = []
    for case in args.cases.split(","):
        out = os.path.join(work, case)
        cmd = [sys.executable, "-m", "flashseg", "decode", "-m", os.path.join(work, f"{case}.yaml"), "-t", tracks,
               "-o", out + ".bed", "--changes", out + ".changes.bg", "--stats", out + ".stats.tsv",
               "--threads", str(threads), "--device", args.device]
        if case == "hmm":
            cmd += ["--method", "posterior"]
        # a tiny warm-up run compiles (and caches) the kernels so the timing is of the decode itself
        warm = cmd[:cmd.index("-t") + 2] + ["--contig", "chrY", "-o", os.devnull]
        subprocess.run(warm, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, rss, rc, err = run_case(cmd)
        if rc != 0:
            print(err, file=sys.stderr)
        segments = sum(1 for line in open(out + ".bed") if not line.startswith("#")) if rc == 0 else 0
        rows.append((case, sum(bins.values()), threads, wall, rss, segments, rc))
    print(f"{'case':<10}{'bins':>12}{'threads':>9}{'wall_s':>10}{'peak_rss_MiB':>14}{'segments':>11}{'exit':>6}")
    for case, n, th, wall, rss, seg, rc in rows:
        print(f"{case:<10}{n:>12,}{th:>9}{wall:>10.2f}{rss:>14.0f}{seg:>11,}{rc:>6}")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r[-1] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
