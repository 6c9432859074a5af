"""Does `flashseg fit` recover a known semi-Markov model from data drawn from it?

    python benchmarks/check_fit_recovery.py              # about 1.5M bins: a few minutes on 2 cores
    python benchmarks/check_fit_recovery.py --scale 0.1  # quicker

Draws about 1.5M bins (5 labels, K = 128, negative-binomial durations with
means from 4 to 90 bins, Bernoulli emissions over 6 marks) with `flashseg
simulate`, fits `--states 5 --max-duration 128 --tol 1e-6` from scratch (at
the default --tol 1e-4, EM stops about 60 iterations early, with the right
states but short mean durations still 12% off), matches fitted
states to true ones by emission profile, and checks (issue 16): every mean
duration within 5%, every emission probability within 0.03, and Viterbi
calls of the fitted model within one point of the true model's (fraction
of bins whose label equals the simulated truth). Exits 1 on a miss.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODEL = """\
name: recovery-5
bin_size: 200
max_duration: 128
tail: geometric
labels:
  - {name: A, color: "255,0,0", duration: {family: negative_binomial, mean: 6, dispersion: 5, min: 2}}
  - {name: B, color: "255,195,77", duration: {family: negative_binomial, mean: 4, dispersion: 8}}
  - {name: C, color: "0,128,0", duration: {family: negative_binomial, mean: 25, dispersion: 3}}
  - {name: D, color: "128,128,128", duration: {family: negative_binomial, mean: 60, dispersion: 2}}
  - {name: E, color: "220,220,220", duration: {family: negative_binomial, mean: 90, dispersion: 1.5}}
initial: uniform
final: free
transitions:
  A: {B: 0.4, C: 0.3, D: 0.1, E: 0.2}
  B: {A: 0.3, C: 0.2, D: 0.1, E: 0.4}
  C: {A: 0.2, B: 0.3, D: 0.2, E: 0.3}
  D: {A: 0.1, B: 0.2, C: 0.2, E: 0.5}
  E: {A: 0.2, B: 0.3, C: 0.2, D: 0.3}
emissions:
  family: bernoulli
  features: [m1, m2, m3, m4, m5, m6]
  p:
    A: [0.90, 0.70, 0.50, 0.05, 0.05, 0.10]
    B: [0.10, 0.60, 0.80, 0.05, 0.02, 0.05]
    C: [0.05, 0.10, 0.20, 0.70, 0.10, 0.05]
    D: [0.02, 0.02, 0.05, 0.10, 0.60, 0.20]
    E: [0.01, 0.01, 0.02, 0.03, 0.05, 0.04]
"""


def labels_per_bin(bed, names, bin_size=200):
    out = {}
    with open(bed) as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            f = line.split("\t")
            n = (int(f[2]) - int(f[1]) + bin_size - 1) // bin_size
            out.setdefault(f[0], []).extend([names.index(f[3].strip())] * n)
    return {k: np.array(v) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-args", default="", help="extra `flashseg fit` options, e.g. \"--tol 1e-6\"")
    args = ap.parse_args()
    from flashseg.io.model import load_model

    work = tempfile.mkdtemp(prefix="flashseg-recovery-")
    try:
        model_path = os.path.join(work, "truth.yaml")
        with open(model_path, "w") as handle:
            handle.write(MODEL)
        contig = int(300_000_000 * args.scale) // 2
        sim = os.path.join(work, "sim")
        subprocess.run([sys.executable, "-m", "flashseg", "simulate", "-q", "-m", model_path, "--contig",
                        f"chr1:{contig}", "--contig", f"chr2:{contig}", "-o", sim, "--seed", "11"], check=True)
        fitted = os.path.join(work, "fitted.yaml")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flashseg", "fit", "--observations", os.path.join(sim, "observations.h5"),
                        "--states", "5", "--max-duration", "128", "--tol", "1e-6", "-o", fitted,
                        "--threads", str(args.threads),
                        *args.fit_args.split()],
                       check=True)
        seconds = time.perf_counter() - t0
        truth, fit = load_model(model_path), load_model(fitted)
        order = [int(np.argmin(np.abs(fit.emissions.params["p"] - row).sum(axis=1)))
                 for row in truth.emissions.params["p"]]
        ok = sorted(order) == list(range(5))
        d_true, d_fit = truth.model.mean_durations(), fit.model.mean_durations()[order]
        p_err = np.abs(fit.emissions.params["p"][order] - truth.emissions.params["p"]).max()
        rel = np.abs(d_fit / d_true - 1)
        print(f"{2 * contig // 200:,} bins; fit {seconds:.1f} s")
        print("label  true mean  fitted mean  rel.err")
        for name, a, b, r in zip(truth.label_names, d_true, d_fit, rel):
            print(f"{name:<6} {a:>9.2f} {b:>12.2f} {r:>8.3%}")
        print(f"largest emission error {p_err:.4f} (target <= 0.03); largest duration error {rel.max():.3%} "
              "(target <= 5%)")
        ok = ok and p_err <= 0.03 and rel.max() <= 0.05
        truth_bins = labels_per_bin(os.path.join(sim, "truth.bed"), truth.label_names)
        accuracy = {}
        for tag, path, names in (("true model", model_path, truth.label_names),
                                 ("fitted model", fitted, [fit.label_names[i] for i in order])):
            bed = os.path.join(work, f"{tag.split()[0]}.bed")
            subprocess.run([sys.executable, "-m", "flashseg", "decode", "-q", "-m", path, "--observations",
                            os.path.join(sim, "observations.h5"), "-o", bed], check=True)
            got = labels_per_bin(bed, [n for n in (truth.label_names if tag == "true model" else fit.label_names)])
            if tag == "fitted model":
                back = {fitted_i: true_i for true_i, fitted_i in enumerate(order)}
                got = {k: np.array([back.get(int(v), -1) for v in vals]) for k, vals in got.items()}
            hits = sum(int((got[k][:len(v)] == v[:len(got[k])]).sum()) for k, v in truth_bins.items())
            accuracy[tag] = hits / sum(len(v) for v in truth_bins.values())
            print(f"Viterbi calls of the {tag}: {accuracy[tag]:.4f} of bins equal the truth")
        gap = accuracy["true model"] - accuracy["fitted model"]
        print(f"gap {gap * 100:.2f} points (target <= 1)")
        ok = ok and gap <= 0.01
        print("OK" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
