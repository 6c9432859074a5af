"""Inference-core benchmark: prints a table of wall time, throughput and peak RSS.

    python benchmarks/bench_core.py            # all workloads (a few minutes on 2 cores)
    python benchmarks/bench_core.py --only W2  # one workload
    python benchmarks/bench_core.py --scale 0.1

Workloads (targets for the 2-core reference machine):
  W1  T=1e6, K=256, C=16, one contig: posterior (all per-bin outputs) <= 15 s, Viterbi <= 8 s
  W2  T=1e5, K=64,  C=16: forward <= 0.1 s
  W3  HMM case (K=1, tail none, C=10), 24 contigs totalling 15.4e6 bins: posterior <= 8 s,
      beside hmmlearn's scaled forward-backward on the same log-likelihoods (`bench` extra)
  C0  kernel compile (cold numba cache) and warm start of a tiny decode
  P1  W1's contig (T=1e6, K=256, C=16) with chunk-parallel passes on every core
      (threads=N: each pass's chunks at once, certified guesses; core/parallel.py),
      side by side with one thread in the same run: the speed-up, and how many
      chunk guesses were accepted (a re-run chunk is a sequential step)

Each workload runs in its own child process so its peak RSS is its own.
Emissions are generated chunk by chunk from the bin index (never materialised
for the whole genome), as a track file would stream them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HUMAN_CHROM_MB = [248.96, 242.19, 198.30, 190.21, 181.54, 170.81, 159.35, 145.14, 138.39,
                  133.80, 135.09, 133.28, 114.36, 107.04, 101.99, 90.34, 83.26, 80.37,
                  58.62, 64.44, 46.71, 50.82, 156.04, 57.23]


def synthetic_model(K, C, tail=True, hmm=False, seed=0):
    import numpy as np

    from flashseg.core import SemiMarkovModel

    rng = np.random.default_rng(seed)
    if hmm:
        P = 0.9 * np.eye(C) + 0.1 * rng.dirichlet(np.ones(C), size=C)
        return SemiMarkovModel(np.zeros((1, C)), None, np.log(P), np.full(C, -np.log(C)), np.zeros(C))
    d = np.arange(1, K + 1)[:, None]
    means = np.linspace(8, K / 2, C)[None, :]
    dur = -d / means
    dur -= np.log(np.exp(dur).sum(axis=0, keepdims=True))
    P = rng.dirichlet(np.ones(C), size=C)
    np.fill_diagonal(P, 0.0)
    P /= P.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        trans = np.log(P)
    rho = np.log(np.full(C, 0.97)) if tail else None
    return SemiMarkovModel(dur, rho, trans, np.full(C, -np.log(C)), np.zeros(C))


def synthetic_emissions(C, seed=0, sd=1.0):
    """emissions(a, b): Gaussian log-likelihoods of a piecewise-constant signal."""
    import numpy as np

    levels = np.arange(C, dtype=np.float64)

    def emissions(a, b):
        i = np.arange(a, b, dtype=np.int64)
        truth = ((i + seed * 7919) // 37 * 2654435761) % C
        noise = (((i + seed) * 2246822519) % 1000003) / 1000003.0 - 0.5
        signal = truth + sd * 2.0 * noise
        return -0.5 * (signal[:, None] - levels[None, :]) ** 2

    return emissions


class Sink:
    """Per-bin consumer that touches every value (as a writer would)."""

    def __init__(self):
        self.total = 0.0

    def chunk(self, start, gamma, boundary, change):
        self.total += float(gamma[:, 0].sum() + boundary.sum() + change.sum())


def run_workload(name, scale):
    import numpy as np

    from flashseg.core import api

    out = {}
    if name == "W1":
        T, K, C = int(1e6 * scale), 256, 16
        model, emis = synthetic_model(K, C), synthetic_emissions(C)
        api.posterior(model, emis, 1000, consumer=Sink())   # compile outside the timing
        t = time.perf_counter()
        api.posterior(model, emis, T, consumer=Sink())
        out["posterior"] = (time.perf_counter() - t, T, K, C)
        t = time.perf_counter()
        api.viterbi(model, emis, T)
        out["viterbi"] = (time.perf_counter() - t, T, K, C)
    elif name == "W2":
        T, K, C = int(1e5 * scale), 64, 16
        model, emis = synthetic_model(K, C), synthetic_emissions(C)
        x = emis(0, T)
        api.log_partition(model, x[:1000], certify=False)
        best = min(_timed(lambda: api.log_partition(model, x, certify=False)) for _ in range(5))
        out["forward"] = (best, T, K, C)
        best = min(_timed(lambda: api.log_partition(model, x)) for _ in range(3))
        out["forward, certified"] = (best, T, K, C)
    elif name == "W3":
        C = 10
        model = synthetic_model(1, C, hmm=True)
        lengths = [max(1, int(mb * 1e6 / 200 * scale)) for mb in HUMAN_CHROM_MB]
        # Both tools get the same in-memory log-likelihoods (float32, as tracks
        # store them), generated before any timing starts.
        arrays = [synthetic_emissions(C, seed=i)(0, n).astype(np.float32) for i, n in enumerate(lengths)]
        jobs = [{"name": f"chr{i + 1}", "emissions": api.ArrayEmissions(arr), "n_bins": len(arr),
                 "per_bin": Sink()} for i, arr in enumerate(arrays)]
        api.decode_contig(model, jobs[0]["emissions"], 1000, method="posterior")
        threads = len(os.sched_getaffinity(0))
        t = time.perf_counter()
        for _ in api.decode_contigs(model, jobs, threads=threads, method="posterior"):
            pass
        out[f"posterior, {threads} threads"] = (time.perf_counter() - t, sum(lengths), 1, C)
        try:
            from hmmlearn import _hmmc
        except ImportError:
            out["hmmlearn"] = None
        else:
            start = np.exp(model.initial)
            trans = np.exp(model.transition)
            elapsed = 0.0
            for arr in arrays:
                t = time.perf_counter()
                x = arr.astype(np.float64)
                frame = np.exp(x - x.max(axis=1, keepdims=True))
                _, fwd, scaling = _hmmc.forward_scaling(start, trans, frame)
                bwd = _hmmc.backward_scaling(start, trans, frame, scaling)
                gamma = fwd * bwd
                gamma /= gamma.sum(axis=1, keepdims=True)
                elapsed += time.perf_counter() - t
            out["hmmlearn scaled fwd-bwd, 1 thread"] = (elapsed, sum(lengths), 1, C)
    elif name == "P1":
        T, K, C = int(1e6 * scale), 256, 16
        model, emis = synthetic_model(K, C), synthetic_emissions(C)
        emis.thread_safe = True          # computed from the bin index: no shared handle
        threads = len(os.sched_getaffinity(0))
        api.posterior(model, emis, 1000, consumer=Sink())   # compile outside the timing
        for label, n in (("1 thread", 1), (f"{threads} threads, chunk-parallel", threads)):
            t = time.perf_counter()
            api.posterior(model, emis, T, consumer=Sink(), threads=n)
            out[f"posterior, {label}"] = (time.perf_counter() - t, T, K, C)
            t = time.perf_counter()
            api.viterbi(model, emis, T, threads=n)
            out[f"viterbi, {label}"] = (time.perf_counter() - t, T, K, C)
        out["_guesses"] = _guess_stats(model, emis, T, threads)
    elif name == "C0":
        out.update(_compile_times())
    import resource

    out["_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _guess_stats(model, emis, T, threads):
    """Accepted and re-run chunk guesses of each chunk-parallel pass."""
    from concurrent.futures import ThreadPoolExecutor

    from flashseg.core import api
    from flashseg.core.cpu import CpuBackend
    from flashseg.core.driver import ContigRun

    with ThreadPoolExecutor(threads) as pool:
        run = ContigRun(CpuBackend(model), emis, T, api.DEFAULT_CHUNK_SIZE, pool=pool, workers=threads)
        run.posterior_pass()
        run.viterbi()
    return {kind: (s.accepted, s.rerun, s.rerun_bins) for kind, s in run.pass_stats.items()}


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


TINY = """
import time; t = time.perf_counter()
import numpy as np
from flashseg.core import SemiMarkovModel, api
m = SemiMarkovModel(np.zeros((2, 2)), np.log([0.5, 0.5]), np.zeros((2, 2)), np.zeros(2), np.zeros(2))
api.decode_contig(m, np.zeros((8, 2)), 8, n_samples=1)
api.decode_contig(m, np.zeros((8, 2)), 8, method="posterior")
print(time.perf_counter() - t)
"""


def _compile_times():
    """Tiny decode with a cold numba cache (in a scratch copy) and warm."""
    import shutil

    import flashseg

    src = os.path.dirname(flashseg.__file__)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(src, os.path.join(tmp, "flashseg"),
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
        env = dict(os.environ, PYTHONPATH=tmp)
        env.pop("NUMBA_CACHE_DIR", None)
        times = []
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", TINY], env=env, capture_output=True,
                                 text=True, cwd=tmp, check=True)
            times.append(float(res.stdout.strip().splitlines()[-1]))
    return {"tiny decode, cold cache": (times[0], 8, 2, 2), "tiny decode, warm cache": (times[1], 8, 2, 2)}


TARGETS = {
    ("W1", "posterior"): 15.0, ("W1", "viterbi"): 8.0, ("W2", "forward"): 0.1,
    ("W3", "posterior"): 8.0,
}


def _speedups():
    threads = len(os.sched_getaffinity(0))
    return [(("P1", f"{what}, 1 thread"), ("P1", f"{what}, {threads} threads, chunk-parallel"))
            for what in ("posterior", "viterbi")]


SPEEDUPS = _speedups()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["W1", "W2", "W3", "C0", "P1"])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every T by this")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_workload(args.child, args.scale)))
        return 0
    names = args.only or ["C0", "W2", "W1", "W3", "P1"]
    header = f"{'workload':<4} {'pass':<34} {'wall s':>8} {'Mpos/s':>8} {'G(pos*K*C)/s':>13} {'peak RSS MB':>12} {'target s':>9}"
    print(header)
    print("-" * len(header))
    for name in names:
        res = subprocess.run([sys.executable, __file__, "--child", name, "--scale", str(args.scale)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{name:<4} FAILED: {res.stderr.strip().splitlines()[-1] if res.stderr else res.returncode}")
            continue
        out = json.loads(res.stdout.strip().splitlines()[-1])
        rss = out.pop("_maxrss_mb")
        guesses = out.pop("_guesses", None)
        for what, row in out.items():
            if row is None:
                print(f"{name:<4} {what:<34} {'(not installed: pip install .[bench])':>40}")
                continue
            sec, T, K, C = row
            target = next((v for (w, p), v in TARGETS.items() if w == name and what.startswith(p)), None)
            tgt = f"{target * args.scale:.2f}" if target else ""
            print(f"{name:<4} {what:<34} {sec:8.3f} {T / sec / 1e6:8.2f} {T * K * C / sec / 1e9:13.2f} "
                  f"{rss:12.0f} {tgt:>9}")
        if guesses:
            print(f"{name:<4} chunk guesses accepted/re-run (bins re-run in sequence): "
                  + ", ".join(f"{k} {a}/{r} ({b})" for k, (a, r, b) in guesses.items()))
        for (w1, p1), (w2, p2) in SPEEDUPS:
            if w1 == name and p1 in out and p2 in out:
                print(f"{name:<4} speed-up of '{p2}' over '{p1}': {out[p1][0] / out[p2][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
