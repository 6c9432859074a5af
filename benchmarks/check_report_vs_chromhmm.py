"""Check `flashseg report`'s enrichment tables against ChromHMM's own, on ChromHMM's example data.

    python benchmarks/check_report_vs_chromhmm.py          # needs Debian's chromhmm and chromhmm-example

Not a unit test (ChromHMM is not in CI). Steps:

1. `ChromHMM LearnModel` on the example's binarized GM12878 and K562 chr11
   marks (hg18), which also writes each cell's `_segments.bed` (BED4, labels
   E1..EN);
2. per cell, `ChromHMM OverlapEnrichment` against COORDS/hg18 (every BED of
   it) and `ChromHMM NeighborhoodEnrichment` around ANCHORFILES/hg18's
   RefSeq TSS and TES, all with their defaults (base resolution, each base
   counted once; bins of 200 bp, 10 bins either side);
3. `flashseg tracks chromhmm` turns the model into model.yaml (labels
   E1..EN), then `flashseg report -m model.yaml --segments <cell>_segments.bed
   --annotations COORDS/hg18 --anchors TSS --anchors TES` (default --flank
   2000 = 10 bins of 200 bp);
4. enrichment.tsv (genome_pct and every annotation column) and each
   neighborhood_*.tsv compared with ChromHMM's tables. ChromHMM prints 5
   decimals and flashseg 6 significant digits, so a difference up to
   5e-6 + 5e-6 |value| is rounding; the same tables computed at full
   precision by the library (flashseg.report.enrichment) differ from
   ChromHMM's by its rounding alone, at most 5e-6.

Prints the largest differences of each table; exits 1 when a TSV value is
further from ChromHMM's than the rounding allows or a full-precision one more
than --tolerance.
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

EXAMPLES = "/usr/share/doc/chromhmm/examples"


def run(cmd):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def chromhmm_table(path, n_states):
    """ChromHMM's table: header columns, and the (N, columns) numbers of states 1..N (the Base row left out)."""
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [handle.readline().rstrip("\n").split("\t") for _ in range(n_states)]
    assert [r[0] for r in rows] == [str(i + 1) for i in range(n_states)], path
    return header[1:], np.array([[float(v) for v in r[1:]] for r in rows])


def flashseg_table(path):
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    return header, [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def compare(what, got, exact, expected, tolerance):
    """Print and return (TSV within rounding, full-precision difference)."""
    rounding = 5e-6 + 5e-6 * np.abs(expected)
    printed_ok = bool((np.abs(got - expected) <= rounding + 1e-12).all())
    diff = float(np.abs(exact - expected).max())
    print(f"{what}: max |TSV - ChromHMM| = {np.abs(got - expected).max():.2e} "
          f"({'within' if printed_ok else 'BEYOND'} both roundings); full precision: {diff:.2e}")
    return printed_ok and diff <= tolerance, diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--tolerance", type=float, default=5e-6)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if shutil.which("ChromHMM") is None or not os.path.isdir(EXAMPLES):
        print("needs Debian's chromhmm and chromhmm-example (apt-get install chromhmm chromhmm-example)")
        return 2
    n = args.states
    work = tempfile.mkdtemp(prefix="flashseg-chromhmm-report-")
    coords = os.path.join(EXAMPLES, "COORDS", "hg18")
    anchors = {name: os.path.join(EXAMPLES, "ANCHORFILES", "hg18", f"RefSeq{name}.hg18.txt.gz")
               for name in ("TSS", "TES")}
    timings = {}
    learn = os.path.join(work, "learn")
    timings["ChromHMM LearnModel"] = run(
        ["ChromHMM", "LearnModel", "-p", "2", "-r", str(args.iterations), "-nobrowser", "-noenrich", "-noimage",
         os.path.join(EXAMPLES, "SAMPLEDATA_HG18"), learn, str(n), "hg18"])
    model = os.path.join(learn, f"model_{n}.txt")
    imported = os.path.join(work, "imported")
    run([sys.executable, "-m", "flashseg", "-q", "tracks", "chromhmm", os.path.join(EXAMPLES, "SAMPLEDATA_HG18"),
         "-o", imported, "--chromhmm-model", model])
    from flashseg.io.annotations import annotation_paths, read_anchors, read_intervals, read_segments
    from flashseg.report import enrichment

    labels = [f"E{i + 1}" for i in range(n)]
    worst, ok = 0.0, True
    for cell in ("GM12878", "K562"):
        segments = os.path.join(learn, f"{cell}_{n}_segments.bed")
        theirs = os.path.join(work, f"{cell}.chromhmm")
        timings[f"ChromHMM OverlapEnrichment {cell}"] = run(
            ["ChromHMM", "OverlapEnrichment", "-noimage", segments, coords, theirs + "_overlap"])
        for name, path in anchors.items():
            timings[f"ChromHMM NeighborhoodEnrichment {cell} {name}"] = run(
                ["ChromHMM", "NeighborhoodEnrichment", "-noimage", segments, path, f"{theirs}_{name}"])
        ours = os.path.join(work, f"{cell}.report")
        timings[f"flashseg report {cell} (all figures and page)"] = run(
            [sys.executable, "-m", "flashseg", "-q", "report", "-m", os.path.join(imported, "model.yaml"),
             "--segments", segments, "-o", ours, "--annotations", coords]
            + [arg for path in anchors.values() for arg in ("--anchors", path)])

        segmentation = read_segments(segments, labels)
        columns, expected = chromhmm_table(theirs + "_overlap.txt", n)
        header, rows, got = flashseg_table(os.path.join(ours, "enrichment.tsv"))
        assert rows == labels and header[2:] == columns[1:], (header, columns)
        table = enrichment.overlap_enrichment(
            segmentation, [read_intervals(p) for p in annotation_paths([coords])], n)
        exact = np.column_stack([table.genome_pct, table.fold])
        good, diff = compare(f"{cell} OverlapEnrichment ({n} states x genome % and {len(columns) - 1} "
                             "annotations)", got, exact, expected, args.tolerance)
        ok, worst = ok and good, max(worst, diff)
        for name, path in anchors.items():
            columns, expected = chromhmm_table(f"{theirs}_{name}.txt", n)
            header, rows, got = flashseg_table(os.path.join(ours, f"neighborhood_RefSeq{name}.hg18.tsv"))
            assert header[1:] == columns, (header, columns)
            exact = enrichment.neighborhood_enrichment(segmentation, read_anchors(path), n, bin_size=200,
                                                       flank=2000).fold
            good, diff = compare(f"{cell} NeighborhoodEnrichment {name} ({n} states x {len(columns)} offsets)",
                                 got, exact, expected, args.tolerance)
            ok, worst = ok and good, max(worst, diff)
    for step, seconds in timings.items():
        print(f"  {seconds:7.2f} s  {step}")
    print(f"largest full-precision difference {worst:.2e} (tolerance {args.tolerance:g}: ChromHMM prints "
          "5 decimals)")
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
