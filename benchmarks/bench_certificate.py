#!/usr/bin/env python
"""How often the linear fast path certifies, what it costs, and how close it is (issue 14).

Each contig is decoded twice by the CPU backend, through the posterior
pass: on the linear fast path (flushes, ghosts, the certificate;
`docs/algorithms.md`, "Linear fast path and its certificate") and in exact
log space. The table prints, per model and contig, whether each linear pass
flushed anything, the certificate's terms and its ratio `r` (as log), the
bound it certifies (`cert`, or `fallback` when the contig fell back),
the times of the fast path (including any fallback) and of the exact path,
and how far the fast path's `log Z` and per-bin posteriors are from the
exact ones. A certified contig must be within `cert` of exact (plus
rounding); the script exits 1 otherwise. `lost` is `?` where the
certificate stopped the fast pass before its end.

Cases: every model in configs/models/ on a genome drawn from it with
`flashseg simulate` (two contigs), and, where Debian's chromhmm and
chromhmm-example are installed, the K562 chr11 marks of ChromHMM's example
(672,261 bins) under a ChromHMM model learned on them, decoded as the plain
HMM it is and as a semi-Markov model with the same transitions between
labels and negative-binomial durations (K = 64, geometric tails).

    python benchmarks/bench_certificate.py              # about 3 minutes on 2 cores
    python benchmarks/bench_certificate.py --scale 0.2  # quicker, smaller contigs
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flashseg.core.cpu import CpuBackend               # noqa: E402
from flashseg.core.driver import CERTIFICATE_TOLERANCE, ContigRun, UncertifiedError   # noqa: E402
from flashseg.io.model import load_model               # noqa: E402
from flashseg.io.tracks import open_track_set          # noqa: E402

# Contig lengths in bins at --scale 1, per bin size (a bin of 1 bp is a base-level model).
BINS = {1: (400_000, 200_000), 200: (100_000, 50_000), 1000: (20_000, 10_000)}
CHUNK = 32768


class Gamma:
    """Collects the per-bin posteriors of one contig (a per-bin consumer)."""

    def __init__(self, n_bins, C):
        self.gamma = np.zeros((n_bins, C))

    def chunk(self, start, gamma, boundary, change):
        self.gamma[start:start + len(gamma)] = gamma

    def restart(self):
        self.gamma[:] = 0


def decode(model, emissions, n_bins, exact):
    backend = CpuBackend(model, exact=exact)
    out = Gamma(n_bins, backend.fwd.C)
    run = ContigRun(backend, emissions, n_bins, CHUNK)
    t = time.perf_counter()
    try:
        log_z, _ = run.posterior_pass(out)
        fell_back = False
    except UncertifiedError:
        fell_back = True
        out.restart()
        log_z, _ = ContigRun(CpuBackend(model, exact=True), emissions, n_bins, CHUNK).posterior_pass(out)
    return log_z, out.gamma, time.perf_counter() - t, run, fell_back


def case(label, model, emissions_of, contigs):
    """One table row per contig; returns False where a certified result is off by more than its bound."""
    ok = True
    for name, n_bins in contigs:
        em = emissions_of(name)
        log_z, gamma, t_fast, run, fell_back = decode(model, em, n_bins, exact=False)
        log_z_exact, gamma_exact, t_exact, _, _ = decode(model, em, n_bins, exact=True)
        terms, log_ratio = run.certificate if run.certificate else (math.nan, math.nan)
        lost = "".join("fb"[i] if run.lost and run.lost[i] else "-" for i in range(2)) if run.lost else "?"
        if fell_back:
            bound = "fallback"
        else:
            spread = math.log(n_bins + 1) + log_ratio
            cert = terms / (1 - math.exp(spread)) if log_ratio > -math.inf else terms
            bound = f"{cert:.1e}"
        d_gamma = float(np.abs(gamma - gamma_exact).max())
        d_log_z = abs(log_z - log_z_exact)
        if not fell_back:
            # cert bounds every posterior absolutely and log Z by -log(1 - cert);
            # both paths round at ~1e-13 (docs/algorithms.md), allowed 1e-11 here.
            if d_gamma > cert + 1e-11 or d_log_z > -math.log1p(-cert) + 1e-13 * max(1, abs(log_z_exact)):
                ok = False
                bound += " VIOLATED"
        print(f"{label:<22} {name:<6} {n_bins:>9,} {lost:>5} {terms:>9.1e} {log_ratio:>9.1f} {bound:>10} "
              f"{t_fast:>7.2f} {t_exact:>8.2f} {d_log_z:>9.1e} {d_gamma:>9.1e}", flush=True)
    return ok


def simulated(model_path, scale, work):
    spec = load_model(model_path)
    lengths = [max(1000, int(n * scale)) for n in BINS[spec.bin_size]]
    out = os.path.join(work, os.path.basename(model_path)[:-5])
    cmd = [sys.executable, "-m", "flashseg", "simulate", "-q", "-m", model_path, "-o", out, "--seed", "7"]
    for i, n in enumerate(lengths):
        cmd += ["--contig", f"chr{i + 1}:{n * spec.bin_size}"]
    subprocess.run(cmd, check=True)
    return spec, os.path.join(out, "observations.h5" if spec.emissions is not None else "tracks.h5")


def from_tracks(label, spec, tracks, model=None):
    """Certify on a tracks file, or on an observations file scored by the model's emissions."""
    observed = os.path.basename(tracks) == "observations.h5"
    with open_track_set([] if observed else [(tracks, 1.0)], spec.label_names,
                        observations=[tracks] if observed else [], spec=spec) as ts:
        contigs = [(name, ts.n_bins(name)) for name in ts.contigs]
        return case(label, model or spec.model, ts.emissions, contigs)


def semi_markov_yaml(hmm_yaml, out_path, max_duration=64):
    """The ChromHMM model with the self-transitions turned into negative-binomial
    durations of the same mean (dispersion 2) and the rest renormalised."""
    import yaml

    doc = yaml.safe_load(open(hmm_yaml))
    names = [lab["name"] for lab in doc["labels"]]
    trans = doc["transitions"]
    doc["max_duration"] = max_duration
    doc["tail"] = "geometric"
    for lab in doc["labels"]:
        stay = min(float(trans[lab["name"]][lab["name"]]), 0.999)
        lab["duration"] = {"family": "negative_binomial", "mean": 1 / (1 - stay), "dispersion": 2}
    for a in names:
        row = {b: float(p) for b, p in trans[a].items() if b != a}
        total = sum(row.values())
        trans[a] = {b: p / total for b, p in row.items()}
    with open(out_path, "w") as handle:
        yaml.safe_dump(doc, handle, sort_keys=False)


def chromhmm(work, iterations):
    examples = "/usr/share/doc/chromhmm/examples/SAMPLEDATA_HG18"
    if shutil.which("ChromHMM") is None or not os.path.isdir(examples):
        print("(ChromHMM chr11: skipped, needs Debian's chromhmm and chromhmm-example)")
        return True
    learn = os.path.join(work, "learn")
    subprocess.run(["ChromHMM", "LearnModel", "-r", str(iterations), "-nobrowser", "-noenrich", "-noimage",
                    examples, learn, "5", "hg18"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    imported = os.path.join(work, "imported")
    subprocess.run([sys.executable, "-m", "flashseg", "tracks", "chromhmm", "-q", examples, "-o", imported,
                    "--chromhmm-model", os.path.join(learn, "model_5.txt")], check=True)
    hmm = os.path.join(imported, "model.yaml")
    obs = os.path.join(imported, "observations.h5")
    os.rename(os.path.join(imported, "K562.h5"), obs)       # from_tracks reads observations by this name
    semi = os.path.join(work, "chromhmm-semi.yaml")
    semi_markov_yaml(hmm, semi)
    ok = from_tracks("ChromHMM-5 HMM", load_model(hmm), obs)
    return from_tracks("ChromHMM-5 semi K=64", load_model(semi), obs) and ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="contig lengths of the simulated cases")
    ap.add_argument("--iterations", type=int, default=10, help="ChromHMM LearnModel iterations")
    ap.add_argument("--no-chromhmm", action="store_true")
    args = ap.parse_args()
    print(f"certificate tolerance {CERTIFICATE_TOLERANCE:g}; lost: f/b = the linear forward/backward flushed;"
          " times in s (fast includes any fallback)")
    print(f"{'case':<22} {'contig':<6} {'bins':>9} {'lost':>5} {'terms':>9} {'log r':>9} {'cert':>10} "
          f"{'fast':>7} {'exact':>8} {'|dlogZ|':>9} {'|dgamma|':>9}")
    work = tempfile.mkdtemp(prefix="flashseg-cert-")
    ok = True
    try:
        for path in sorted(glob.glob(os.path.join(ROOT, "configs", "models", "*.yaml"))):
            spec, tracks = simulated(path, args.scale, work)
            ok = from_tracks(os.path.basename(path)[:-5], spec, tracks) and ok
        if not args.no_chromhmm:
            ok = chromhmm(work, args.iterations) and ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
