#!/usr/bin/env python
"""Genome-browser outputs beside the BGZF text outputs (issue 18).

On the genome of ``bench_decode.py`` (24 contigs, 15.4 M bins of 200 bp at
``--scale 1``; case (a), the HMM with ``--method posterior``), decodes three
times, with the segment calls (``-o``) and the change posteriors
(``--changes``) written as

  text   plain BED and bedGraph,
  bgzf   ``.bed.gz`` / ``.bedgraph.gz`` (BGZF + tabix index),
  big    ``.bb`` / ``.bw`` (bigBed, bigWig),

and reports each run's wall time and peak RSS, then the bytes of every
output and the seconds its writing takes on its own: the plain text of the
first run written again as BGZF + tabix (what the ``.gz`` outputs do), or
converted to the bigBed or bigWig (what the ``.bb``/``.bw`` outputs do
after writing the same text to a temporary). Absolute times on a shared
machine are noisy; the ratios are the point.

    python benchmarks/bench_browser_files.py --scale 0.05
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import BIN_SIZE, contig_bins, make_tracks, model_hmm, run_case  # noqa: E402

FORMATS = {"text": (".bed", ".bedgraph"), "bgzf": (".bed.gz", ".bedgraph.gz"), "big": (".bb", ".bw")}


def size(path) -> int:
    """Bytes of an output and of its tabix index, if it has one."""
    return os.path.getsize(path) + (os.path.getsize(path + ".tbi") if os.path.exists(path + ".tbi") else 0)


def lines(path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if not line.startswith(b"#"))


def rewrite_seconds(text_path, target, sizes) -> float:
    """Seconds to write ``target`` from a plain text output, as decode writes it."""
    from flashseg.io import bigfiles
    from flashseg.io.output import copy_file_into, open_text_output

    t0 = time.perf_counter()
    kind = bigfiles.browser_format(target)
    if kind is None:
        with open_text_output(target) as stream:
            copy_file_into(text_path, stream)
    else:
        bigfiles.convert_text(text_path, target, kind, sizes, target=target)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 15.4 M bins (default 1)")
    parser.add_argument("--workdir", help="scratch directory (default: a new temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--threads", type=int, default=None, help="decode --threads (default: all usable CPUs)")
    args = parser.parse_args()

    work = args.workdir or tempfile.mkdtemp(prefix="flashseg-bench-browser-")
    os.makedirs(work, exist_ok=True)
    bins = contig_bins(args.scale)
    tracks = os.path.join(work, f"tracks-lzf-{args.scale:g}.h5")
    if not os.path.exists(tracks):
        make_tracks(tracks, bins, "lzf")
    model = os.path.join(work, "hmm.yaml")
    model_hmm(model)
    threads = str(args.threads or len(os.sched_getaffinity(0)))
    base = [sys.executable, "-m", "flashseg", "decode", "-m", model, "-t", tracks, "--method", "posterior",
            "--threads", threads, "--device", "cpu"]
    # compile (and cache) the kernels first, so the timings are of the decode itself
    subprocess.run(base + ["--contig", "chrY", "-o", os.devnull], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    runs = []
    for name, (calls_ext, changes_ext) in FORMATS.items():
        calls, changes = os.path.join(work, "calls" + calls_ext), os.path.join(work, "changes" + changes_ext)
        wall, rss, rc, err = run_case(base + ["-o", calls, "--changes", changes])
        if rc != 0:
            print(err, file=sys.stderr)
            return 1
        runs.append((name, wall, rss))
    # the benchmark genome's lengths: bins x 200 bp less 37 (bench_decode's partial last bins)
    sizes = {contig: n * BIN_SIZE - 37 for contig, n in bins.items()}
    rows = []
    for what, index in (("segments (-o)", 0), ("change posteriors (--changes)", 1)):
        text = os.path.join(work, ("calls", "changes")[index] + FORMATS["text"][index])
        n = lines(text)
        rows.append((what, "text", n, size(text), None))
        for name in ("bgzf", "big"):
            output = os.path.join(work, ("calls", "changes")[index] + FORMATS[name][index])
            again = os.path.join(work, "again" + FORMATS[name][index])
            seconds = rewrite_seconds(text, again, sizes)
            rows.append((what, os.path.basename(output), n, size(output), seconds))
    print(f"genome: {sum(bins.values()):,} bins on {len(bins)} contigs (scale {args.scale:g}), "
          f"HMM --method posterior, {threads} threads")
    print(f"{'decode run':<12}{'wall_s':>9}{'peak_rss_MiB':>14}")
    for name, wall, rss in runs:
        print(f"{name:<12}{wall:>9.2f}{rss:>14.0f}")
    print(f"{'output':<32}{'file':<20}{'lines':>12}{'bytes':>14}{'write_s':>9}")
    for what, name, n, nbytes, seconds in rows:
        shown = "" if seconds is None else f"{seconds:.2f}"
        print(f"{what:<32}{name:<20}{n:>12,}{nbytes:>14,}{shown:>9}")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
