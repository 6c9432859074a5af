"""Check `flashseg tracks chromhmm` against ChromHMM itself, on ChromHMM's example data.

    python benchmarks/check_chromhmm_import.py                 # needs Debian's chromhmm (+ its examples)
    python benchmarks/check_chromhmm_import.py --model model_5.txt

Not a unit test (ChromHMM is not in CI). Steps:

1. a ChromHMM model: --model, else `ChromHMM LearnModel` on the example's
   binarized GM12878 and K562 chr11 marks (--states, --iterations);
2. two copies of those binarized files with the same random values set to
   2 (missing, --missing of all values): one in the model's mark order for
   ChromHMM (which requires it), one with each cell's mark columns shuffled
   and gzipped, for flashseg (which must match the marks by name);
3. `ChromHMM MakeSegmentation -printposterior` on the first copy;
4. `flashseg tracks chromhmm SHUFFLED -o OUT --chromhmm-model MODEL`, then
   `flashseg decode -m OUT/model.yaml --observations OUT/<cell>.h5
   --posteriors P.h5 --method posterior` per cell;
5. per-bin posteriors compared (ChromHMM prints 4 decimals, so a difference
   of 5e-5 is rounding), and ChromHMM's segment labels against the per-bin
   argmax of flashseg's posteriors.

Prints the largest difference and the time of each step; exits 1 above
--tolerance or when the bin counts differ.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

EXAMPLES = "/usr/share/doc/chromhmm/examples/SAMPLEDATA_HG18"


def read_binarized(path):
    with gzip.open(path, "rt") as handle:
        first = handle.readline()
        marks = handle.readline().rstrip("\n").split("\t")
        x = np.loadtxt(handle, dtype=np.int8, ndmin=2)
    return first, marks, x


def write_binarized(path, first, marks, x):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as out:
        out.write(first)
        out.write("\t".join(marks) + "\n")
        np.savetxt(out, x, fmt="%d", delimiter="\t")


def model_marks(model_path):
    marks = {}
    with open(model_path) as handle:
        for line in handle:
            f = line.rstrip("\n").split("\t")
            if f[0] == "emissionprobs":
                marks[int(f[2])] = f[3]
    return [marks[j] for j in sorted(marks)]


def chromhmm_states(bed_path, n_bins, bin_size):
    """Per-bin state index (0-based) from ChromHMM's segments BED (labels E1..EN)."""
    states = np.full(n_bins, -1, dtype=np.int64)
    with open(bed_path) as handle:
        for line in handle:
            f = line.split("\t")
            if len(f) < 4 or not f[3].strip().startswith("E"):
                continue
            a, b = int(f[1]) // bin_size, -(-int(f[2]) // bin_size)
            states[a:min(b, n_bins)] = int(f[3].strip()[1:]) - 1
    return states


def run(cmd, **kwargs):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="ChromHMM model_N.txt learned on the example marks [default: learn one]")
    ap.add_argument("--states", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--missing", type=float, default=0.02, help="fraction of values set to 2 (missing)")
    ap.add_argument("--tolerance", type=float, default=2e-4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if shutil.which("ChromHMM") is None or not os.path.isdir(EXAMPLES):
        print("needs Debian's chromhmm and its example data (apt-get install chromhmm chromhmm-example)")
        return 2
    t_start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="flashseg-chromhmm-import-")
    timings = {}
    model = args.model
    if model is None:
        timings["ChromHMM LearnModel"] = run(
            ["ChromHMM", "LearnModel", "-p", "2", "-r", str(args.iterations), "-nobrowser", "-noenrich",
             "-noimage", "-nobed", EXAMPLES, os.path.join(work, "learn"), str(args.states), "hg18"])
        model = os.path.join(work, "learn", f"model_{args.states}.txt")
    order = model_marks(model)

    t0 = time.perf_counter()
    theirs_dir, ours_dir = os.path.join(work, "chromhmm-in"), os.path.join(work, "flashseg-in")
    os.makedirs(theirs_dir)
    os.makedirs(ours_dir)
    rng = np.random.default_rng(1)
    cells = []
    for name in sorted(os.listdir(EXAMPLES)):
        if not name.endswith("_binary.txt.gz"):
            continue
        first, marks, x = read_binarized(os.path.join(EXAMPLES, name))
        x = x[:, [marks.index(m) for m in order]]         # ChromHMM needs the model's column order
        x[rng.random(x.shape) < args.missing] = 2
        write_binarized(os.path.join(theirs_dir, name[:-3]), first, order, x)
        shuffled = rng.permutation(len(order))
        write_binarized(os.path.join(ours_dir, name), first, [order[j] for j in shuffled], x[:, shuffled])
        cell, chrom = first.rstrip("\n").split("\t")
        cells.append((cell, chrom, [order[j] for j in shuffled]))
    timings["prepare inputs (numpy)"] = time.perf_counter() - t0

    timings["ChromHMM MakeSegmentation -printposterior"] = run(
        ["ChromHMM", "MakeSegmentation", "-printposterior", model, theirs_dir, os.path.join(work, "seg")])
    out = os.path.join(work, "imported")
    timings["flashseg tracks chromhmm"] = run(
        [sys.executable, "-m", "flashseg", "-q", "tracks", "chromhmm", ours_dir, "-o", out, "--chromhmm-model", model])
    worst = 0.0
    ok = True
    for cell, chrom, marks in cells:
        post = os.path.join(work, f"{cell}.post.h5")
        timings[f"flashseg decode {cell}"] = run(
            [sys.executable, "-m", "flashseg", "-q", "decode", "-m", os.path.join(out, "model.yaml"),
             "--observations", os.path.join(out, f"{cell}.h5"), "--posteriors", post, "--method", "posterior",
             "--device", args.device, "-o", os.path.join(work, f"{cell}.bed")])
        import h5py

        with h5py.File(post) as f:
            ours = f["tracks"][chrom][:].astype(np.float64)
        theirs = np.loadtxt(os.path.join(work, "seg", "POSTERIOR", f"{cell}_{args.states}_{chrom}_posterior.txt"),
                            skiprows=2, ndmin=2)
        if ours.shape != theirs.shape:
            print(f"{cell} {chrom}: flashseg {ours.shape} vs ChromHMM {theirs.shape} posteriors")
            ok = False
            continue
        diff = np.abs(ours - theirs)
        states = chromhmm_states(os.path.join(work, "seg", f"{cell}_{args.states}_segments.bed"), len(ours), 200)
        agree = float(np.mean(ours.argmax(1) == states))
        worst = max(worst, float(diff.max()))
        print(f"{cell} {chrom}: {len(ours):,} bins, {int((theirs > 0).sum()):,} nonzero posteriors; "
              f"max |flashseg - ChromHMM| = {diff.max():.3e} (mean {diff.mean():.2e}); "
              f"argmax = ChromHMM's segment state in {100 * agree:.4f}% of bins; "
              f"flashseg's marks were shuffled to {' '.join(marks[:3])} ...")
    for step, seconds in timings.items():
        print(f"  {seconds:7.2f} s  {step}")
    print(f"total {time.perf_counter() - t_start:.1f} s; largest posterior difference {worst:.3e} "
          f"(tolerance {args.tolerance:g}; ChromHMM prints 4 decimals)")
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok and worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
