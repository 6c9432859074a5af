"""Decoding from raw observations vs from precomputed tracks, on ChromHMM's own data.

    python benchmarks/bench_observations.py      # needs Debian's chromhmm and chromhmm-example

Learns a 5-state ChromHMM model on the example's binarized GM12878 and K562
chr11 marks (or takes --chromhmm-model), imports data and model with
`flashseg tracks chromhmm`, writes the per-state log-likelihoods of each cell
as a float32 tracks file (what decoding from precomputed tracks reads), and
times end-to-end `flashseg decode` of both cells each way, interleaved, with
--posteriors and bedGraphs written (a typical ChromHMM-style run) and with
the BED alone. Prints a table and the ratio observations / tracks; the
target is <= 1.20. Also checks the two ways make the same calls.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = "/usr/share/doc/chromhmm/examples/SAMPLEDATA_HG18"
CELLS = ("GM12878", "K562")


def flashseg(*args):
    subprocess.run([sys.executable, "-m", "flashseg", *map(str, args)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def learn(work, iterations):
    out = os.path.join(work, "learn")
    subprocess.run(["ChromHMM", "LearnModel", "-r", str(iterations), "-nobrowser", "-noenrich", "-noimage",
                    EXAMPLES, out, "5", "hg18"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.join(out, "model_5.txt")


def precomputed_tracks(obs_path, model_path, out):
    """The cell's per-state log-likelihoods as a float32 tracks file (scored once, in chunks)."""
    sys.path.insert(0, ROOT)
    from flashseg.io.model import load_model
    from flashseg.io.observations import ObservationScores
    from flashseg.io.tracks import TracksWriter

    spec = load_model(model_path)
    with ObservationScores(obs_path, spec) as scores, \
            TracksWriter(out, labels=spec.label_names, bin_size=scores.bin_size) as w:
        for name in scores.contigs:
            n = scores.n_bins(name)
            w.add_contig(name, n, length_bp=scores.length_bp(name))
            for a in range(0, n, 1 << 16):
                w.write(name, a, scores.read(name, a, min(n, a + (1 << 16))))


def calls(path):
    """(chrom, start, end, label) of every call: float32 tracks round the posteriors' last digits."""
    with open(path) as handle:
        return [line.split("\t")[:4] for line in handle if not line.startswith("#")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromhmm-model", help="a ChromHMM model_N.txt [default: learn one, 5 states]")
    ap.add_argument("--iterations", type=int, default=50, help="LearnModel iterations when learning")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("ChromHMM") is None or not os.path.isdir(EXAMPLES):
        print("needs Debian's chromhmm and chromhmm-example (apt-get install chromhmm chromhmm-example)")
        return 1
    work = tempfile.mkdtemp(prefix="flashseg-obs-")
    try:
        model_txt = args.chromhmm_model or learn(work, args.iterations)
        imported = os.path.join(work, "imported")
        t0 = time.perf_counter()
        flashseg("tracks", "chromhmm", EXAMPLES, "-o", imported, "--chromhmm-model", model_txt)
        t_import = time.perf_counter() - t0
        model = os.path.join(imported, "model.yaml")
        for cell in CELLS:
            precomputed_tracks(os.path.join(imported, f"{cell}.h5"), model, os.path.join(work, f"{cell}.tracks.h5"))
        modes = {"BED only": [], "BED + posteriors + bedGraphs": ["--method", "posterior", "--posteriors",
                                                                   "{out}.post.h5", "--changes", "{out}.chg.bg",
                                                                   "--boundaries", "{out}.bnd.bg"]}
        print(f"import of both cells' binarized files + model: {t_import:.2f} s")
        print(f"{'outputs':<30} {'from':<13} {'median s':>9} {'min s':>7}   (both cells, {args.repeats} runs, "
              f"--threads {args.threads})")
        for mode, extra in modes.items():
            times = {"observations": [], "tracks": []}
            for _ in range(args.repeats):
                for source in ("observations", "tracks"):      # interleaved: drift hits both alike
                    t0 = time.perf_counter()
                    for cell in CELLS:
                        out = os.path.join(work, f"{cell}.{source}")
                        evidence = (["--observations", os.path.join(imported, f"{cell}.h5")]
                                    if source == "observations" else ["-t", os.path.join(work, f"{cell}.tracks.h5")])
                        flashseg("decode", "-q", "-m", model, *evidence, "-o", out + ".bed",
                                 "--threads", args.threads, *[x.format(out=out) for x in extra])
                    times[source].append(time.perf_counter() - t0)
            for source, values in times.items():
                print(f"{mode:<30} {source:<13} {statistics.median(values):>9.2f} {min(values):>7.2f}")
            ratio = statistics.median(times["observations"]) / statistics.median(times["tracks"])
            same = all(calls(os.path.join(work, f"{cell}.observations.bed"))
                       == calls(os.path.join(work, f"{cell}.tracks.bed")) for cell in CELLS)
            print(f"{mode:<30} ratio observations / tracks = {ratio:.3f} (target <= 1.20); "
                  f"same calls: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
