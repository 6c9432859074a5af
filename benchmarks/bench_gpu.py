"""GPU benchmark of the Triton kernels (issue 4, part 5). One command:

    python benchmarks/bench_gpu.py                 # full shapes, needs a CUDA GPU
    TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --scale 1e-6   # smoke run on CPU

Emissions are synthesised on the device chunk by chunk (a genome at 1 bp
does not fit the device's disk); each chunk is regenerated from a seed so
every pass over a contig sees the same numbers. Times are kernel time per
pass (device events; wall clock under the interpreter), divided by bins and
sequences: ns per bin per pass.

(a) T = 1e6, K in {64, 256}, C in {8, 16, 32}, batch 1 and 24: the linear
    (certified) forward pass and the Viterbi forward pass.
(b) chr1 at 1 bp: T = 2.49e8, K = 512, C = 8. Posterior = backward pass with
    checkpoints + emit pass (backward recompute with stored rows + forward
    with stored rows); Viterbi = forward with checkpoints + traceback
    recompute with argmax pointers (every chunk, the worst case). The
    per-bin posterior combination (gamma, b, chg) is not included here
    (part (e) includes it).
(c) flash-semicrf's Triton streaming kernel (module flash_semicrf, a
    benchmark-only install carried as a wheel in .whl/, never vendored) at
    K = 256, C = 16: its partition forward against our linear forward, on a
    shorter T (--peer-t; its kernel is O(T K C^2)); skipped when not installed.
(d) End to end through the chunk driver: posterior decode of 16 contigs
    (segment calls and their posteriors), CPU numba kernels on every core
    against the GPU with 1 and 8 worker threads (one CUDA stream per contig).
(e) (b)'s contig through the real chunk driver with chunk-parallel passes
    (core/parallel.py): every chunk of a pass at once, one pool thread and
    CUDA stream per chunk in flight (--piece-threads), guesses certified at
    the junctions. Viterbi + posterior pass end to end (per-bin combination
    and segment posteriors included), emissions synthesised on the host per
    chunk. Reports wall ns per bin, the guesses accepted, and logZ against a
    sequential run of the first --check-bins bins.
(f) Posterior sampling, T = 1e6, K = 64, C = 8, 1 and 32 samples: the
    device walk (all samples of a chunk in one launch) against the host's
    compiled walk on the same rows and seeds (the samples must agree).

On the GPU machine, everything in one command: ``bash benchmarks/gpu_session.sh full``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flashseg.core import SemiMarkovModel  # noqa: E402
from flashseg.core.gpu import DeviceChunk, GpuBackend, gpu_available, interpreting  # noqa: E402

CHR1_BINS = 249_000_000


def bench_model(C: int, K: int, seed: int = 0) -> SemiMarkovModel:
    """A chromatin-state-like model: peaked durations, geometric tail, no self-loops."""
    rng = np.random.default_rng(seed)
    d = np.arange(1, K + 1)[:, None]
    means = rng.uniform(max(1.0, K / 8), max(1.0, K / 2), size=C)[None, :]
    dur = -0.5 * ((d - means) / (means / 2)) ** 2
    dur -= np.log(np.exp(dur).sum(axis=0, keepdims=True))
    trans = np.log(rng.dirichlet(np.ones(C), size=C))
    if C > 1:
        np.fill_diagonal(trans, -np.inf)
    return SemiMarkovModel(dur, np.log(np.full(C, 0.9)), trans, np.full(C, -math.log(C)), np.zeros(C))


class Timer:
    """Accumulates kernel time: CUDA events on a GPU, wall clock under the interpreter."""

    def __init__(self, device):
        self.device = device
        self.total = 0.0

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            self.end.record()
            torch.cuda.synchronize()
            self.total += self.start.elapsed_time(self.end) / 1e3
        else:
            self.total += time.perf_counter() - self.t0


def synth_chunk(device, B, a, n, C, seed):
    """Emissions for bins [a, a + n) of B sequences, regenerated identically on every pass."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + a)
    x = torch.randn((B, n, C), generator=g, device=device, dtype=torch.float64) * 2.0
    return DeviceChunk.from_log(x)


def batched_state(single, B):
    return {k: v.repeat((B,) + (1,) * (v.dim() - 1)).contiguous() for k, v in single.items()}


def store_buffers(device, B, n, C, viterbi=False):
    import torch

    if viterbi:
        return {k: torch.empty((B, n + 1, C), dtype=torch.int64, device=device) for k in ("a_start", "e_prev")}
    out = {k: torch.empty((B, n + 1, C), dtype=torch.float64, device=device) for k in ("E", "A", "L", "ghost")}
    out["sexp"] = torch.empty((B, n + 1), dtype=torch.int64, device=device)
    return out


def run_pass(kind, be, T, B, chunk, device, store=False, reverse=False, checkpoints=None, seed=1,
             num_warps=None):
    """One pass over T bins of B sequences; returns kernel seconds.

    kind "linear" (forward orientation, or the backward pass with reverse=True)
    or "viterbi". checkpoints: list to append each chunk's start state to.
    """
    import torch

    from flashseg.core.triton import linear_forward, viterbi_forward

    dm = be.dev_bwd if reverse else be.dev_fwd
    C = dm.pm.C
    if kind == "linear":
        from flashseg.core.gpu import GpuLinearState

        state = batched_state(GpuLinearState(dm).dev, B)
    else:
        state = batched_state(be.viterbi_state().dev, B)
    timer = Timer(device)
    starts = list(range(0, T, chunk))
    if reverse:
        starts = starts[::-1]
    bufs = store_buffers(device, B, min(chunk, T), C, viterbi=kind == "viterbi") if store else None
    for a in starts:
        n = min(chunk, T - a)
        dc = synth_chunk(device, B, a, n, C, seed)
        if reverse:
            dc = DeviceChunk(dc.x.flip(1).contiguous(), dc.f.flip(1).contiguous(), dc.k.flip(1).contiguous())
        nn = torch.full((B,), n, dtype=torch.int64, device=device)
        if checkpoints is not None:
            checkpoints.append({k: v.clone() for k, v in state.items()})
        with timer:
            if kind == "linear":
                status = linear_forward(dc.x, dc.f, dc.k, nn, state, dm.linear, bufs, num_warps=num_warps)
            else:
                viterbi_forward(dc.x, nn, state, dm.log, bufs, num_warps=num_warps)
    if kind == "linear" and bool((status >= 0).any()):
        raise RuntimeError("all mass vanished in the benchmark pass (model/emissions impossible)")
    return timer.total


def peak_gb(device):
    import torch

    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated() / 2**30


def part_a(args, device, out):
    T = max(1, int(1e6 * args.scale))
    print(f"(a) T={T:,} per sequence, chunk {args.chunk:,}")
    print(f"{'K':>5} {'C':>4} {'batch':>6} {'warps':>5} {'linear ns/bin':>14} {'viterbi ns/bin':>15} "
          f"{'bins/s (linear)':>16}")
    for K in args.ks:
        for C in args.cs:
            be = GpuBackend(bench_model(C, K))
            for B in args.batches:
                for warps in args.warps:
                    w = warps or None
                    run_pass("linear", be, min(T, 2 * args.chunk), B, args.chunk, device, num_warps=w)  # compile
                    run_pass("viterbi", be, min(T, 2 * args.chunk), B, args.chunk, device, num_warps=w)
                    lin = run_pass("linear", be, T, B, args.chunk, device, num_warps=w)
                    vit = run_pass("viterbi", be, T, B, args.chunk, device, num_warps=w)
                    rec = {"part": "a", "T": T, "K": K, "C": C, "batch": B, "warps": warps,
                           "linear_ns_per_bin": lin / (T * B) * 1e9, "viterbi_ns_per_bin": vit / (T * B) * 1e9}
                    out.append(rec)
                    print(f"{K:>5} {C:>4} {B:>6} {warps or 'auto':>5} {rec['linear_ns_per_bin']:>14.1f} "
                          f"{rec['viterbi_ns_per_bin']:>15.1f} {T * B / lin:>16.3g}", flush=True)


def part_b(args, device, out):
    import torch

    T = max(1, int(CHR1_BINS * args.scale))
    K, C = args.chr1_k, 8
    chunk = args.chunk
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    be = GpuBackend(bench_model(C, K))
    print(f"(b) chr1 at 1 bp: T={T:,}, K={K}, C={C}, chunk {chunk:,}")
    passes = {}
    t0 = time.perf_counter()
    ck = []
    passes["posterior: backward (checkpoints)"] = run_pass("linear", be, T, 1, chunk, device, reverse=True,
                                                          checkpoints=ck)
    del ck
    passes["posterior: backward recompute (rows)"] = run_pass("linear", be, T, 1, chunk, device, store=True,
                                                             reverse=True)
    passes["posterior: forward (rows)"] = run_pass("linear", be, T, 1, chunk, device, store=True)
    vck = []
    passes["viterbi: forward (checkpoints)"] = run_pass("viterbi", be, T, 1, chunk, device, checkpoints=vck)
    del vck
    passes["viterbi: traceback recompute (pointers)"] = run_pass("viterbi", be, T, 1, chunk, device, store=True)
    wall = time.perf_counter() - t0
    total = sum(passes.values())
    for name, sec in passes.items():
        print(f"  {name:<42} {sec / T * 1e9:8.1f} ns/bin   {sec:9.2f} s")
    print(f"  {'kernel total (5 passes)':<42} {total / T * 1e9:8.1f} ns/bin   {total:9.2f} s"
          f"   (wall incl. synthesis {wall:.2f} s; peak GPU memory {peak_gb(device):.2f} GB)")
    out.append({"part": "b", "T": T, "K": K, "C": C,
                "passes_ns_per_bin": {k: v / T * 1e9 for k, v in passes.items()},
                "kernel_seconds": total, "wall_seconds": wall, "peak_gb": peak_gb(device)})


def part_c(args, device, out):
    try:
        from flash_semicrf.streaming import semi_crf_streaming_forward
    except ImportError:
        print("(c) flash-semicrf side by side: skipped (flash_semicrf is not installed; carry its wheel "
              "and pip install it into this environment — never vendor it)")
        return
    if device.type != "cuda":
        print("(c) flash-semicrf side by side: skipped (its Triton kernel needs a CUDA GPU)")
        return
    import torch

    # Their kernel costs O(T K C^2): a shorter T keeps the run inside one
    # device command; both sides are reported per bin.
    T = max(1, int(args.peer_t * args.scale))
    K, C = 256, 16
    model = bench_model(C, K)
    be = GpuBackend(model)
    print(f"(c) flash-semicrf vs flashseg, T={T:,}, K={K}, C={C} (forward, log semiring)")
    for B in args.batches:
        run_pass("linear", be, min(T, 4096), B, args.chunk, device)   # compile outside the timing
        ours = run_pass("linear", be, T, B, args.chunk, device)
        x = torch.cat([synth_chunk(device, B, a, min(args.chunk, T - a), C, 1).x
                       for a in range(0, T, args.chunk)], dim=1)
        cum = torch.zeros((B, T + 1, C), dtype=torch.float64, device=device)
        cum[:, 1:] = torch.cumsum(x - x.mean(dim=1, keepdim=True), dim=1)
        trans = torch.tensor(np.where(np.isfinite(model.transition), model.transition, -1e4),
                             dtype=torch.float64, device=device)
        dur = torch.tensor(model.duration, dtype=torch.float64, device=device)
        lengths = torch.full((B,), T, dtype=torch.int64, device=device)
        with torch.no_grad():
            semi_crf_streaming_forward(cum[:, :min(T, 4096) + 1], trans, dur,
                                       torch.full_like(lengths, min(T, 4096)), K)  # compile + warm up
            timer = Timer(device)
            with timer:
                semi_crf_streaming_forward(cum, trans, dur, lengths, K, semiring="log")
        theirs = timer.total
        print(f"  batch {B:>3}: flash-semicrf {theirs / (T * B) * 1e9:9.1f} ns/bin, "
              f"flashseg {ours / (T * B) * 1e9:9.1f} ns/bin, speed-up {theirs / ours:6.2f}x")
        out.append({"part": "c", "T": T, "K": K, "C": C, "batch": B,
                    "flash_semicrf_ns_per_bin": theirs / (T * B) * 1e9,
                    "flashseg_ns_per_bin": ours / (T * B) * 1e9})


def part_d(args, device, out):
    """End to end through the chunk driver: posterior decode (segment calls with
    their posteriors) of several contigs, CPU numba kernels against the GPU."""
    if device.type != "cuda":
        print("(d) end-to-end decode: skipped (needs a CUDA GPU)")
        return
    from flashseg.core import api

    T = max(1000, int(2e5 * args.scale))
    K, C, n_contigs = 64, 8, 16
    model = bench_model(C, K)
    rng = np.random.default_rng(5)
    jobs = [{"name": f"chr{i + 1}", "emissions": rng.normal(0.0, 2.0, size=(T, C)), "n_bins": T}
            for i in range(n_contigs)]
    cores = os.cpu_count() or 1
    print(f"(d) end-to-end posterior decode, {n_contigs} contigs x {T:,} bins, K={K}, C={C}")
    warm = [dict(jobs[0], n_bins=2000, emissions=jobs[0]["emissions"][:2000])]
    results = {}
    for dev, threads in (("cpu", cores), ("cuda", 1), ("cuda", 8)):
        list(api.decode_contigs(model, warm, threads=1, device=dev, method="posterior"))  # compile
        t0 = time.perf_counter()
        res = list(api.decode_contigs(model, jobs, threads=threads, device=dev, method="posterior"))
        dt = time.perf_counter() - t0
        results[(dev, threads)] = res
        ref = results[("cpu", cores)]
        dz = max(abs(r.log_partition - q.log_partition) / abs(q.log_partition) for r, q in zip(res, ref))
        print(f"  {dev:<5} threads {threads:>3}: {dt:8.2f} s  {T * n_contigs / dt / 1e6:7.2f} M bins/s   "
              f"max rel. logZ difference to CPU {dz:.1e}", flush=True)
        out.append({"part": "d", "device": dev, "threads": threads, "T": T, "contigs": n_contigs,
                    "K": K, "C": C, "seconds": dt, "max_rel_logz_diff": dz})


class HostEmissions:
    """Deterministic emissions of bins [a, b) computed from the bin index (any order, any thread)."""

    thread_safe = True

    def __init__(self, C, seed=3):
        self.C, self.seed = C, seed

    def __call__(self, a, b):
        i = np.arange(a, b, dtype=np.int64)[:, None]
        labels = np.arange(self.C, dtype=np.int64)[None, :]
        truth = ((i // 97 + self.seed) * 2654435761) % self.C
        noise = (((i * 40503 + labels * 9973 + self.seed) * 2246822519) % 1000003) / 1000003.0 - 0.5
        return 2.0 * noise + 1.5 * (labels == truth)


class Sink:
    def __init__(self):
        self.total = 0.0

    def chunk(self, start, gamma, boundary, change):
        self.total += float(gamma[:, 0].sum() + boundary.sum())


class CallProfile:
    """Part (e) --profile: seconds and calls of the driver's and backend's steps,
    summed over threads, and the share spent on the main thread (which runs the
    certified chain and the per-chunk combination, so its time does not spread
    over the pool). Wraps the functions in place; :meth:`undo` puts them back."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.main = defaultdict(float)
        self.calls = defaultdict(int)
        self.lock = threading.Lock()
        self.undo_list = []

    def _record(self, name, dt):
        with self.lock:
            self.seconds[name] += dt
            self.calls[name] += 1
            if threading.current_thread() is threading.main_thread():
                self.main[name] += dt

    def wrap(self, owner, attr, name, key=None):
        raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
        fn = raw.__func__ if kind else raw
        record = self._record

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                record(name if key is None else f"{name} {key(*a, **kw)}", time.perf_counter() - t0)

        setattr(owner, attr, kind(timed) if kind else timed)
        self.undo_list.append((owner, attr, raw))

    def undo(self):
        for owner, attr, raw in reversed(self.undo_list):
            setattr(owner, attr, raw)
        self.undo_list.clear()

    def install(self):
        from flashseg.core import chunks, driver, gpu, host_kernels, parallel, schedule, trackers
        from flashseg.core.triton import linear, posterior, viterbi

        w = self.wrap
        w(schedule.ChunkParallelSchedule, "checkpoints", "pass:", key=lambda self_, kind, *a, **k: kind)
        w(driver.ContigRun, "viterbi", "pass: viterbi total")
        w(driver.ContigRun, "backward_checkpoints", "pass: backward total")
        w(driver.ContigRun, "posterior_pass", "pass: posterior total")
        w(HostEmissions, "__call__", "host: synthesise emissions")
        w(chunks.EmissionChunk, "from_log", "host: emission factors (from_log)")
        w(gpu, "_upload_chunks", "gpu: upload chunks")
        w(gpu, "_row_stores", "gpu: allocate rows")
        w(gpu, "_hand_rows", "gpu: hand rows to stores")
        for cls in (gpu.GpuLinearState, gpu.GpuViterbiState, gpu.GpuLogSpaceState):
            w(cls, "_launch", f"state: {cls.__name__} launch (launch, wait, rows)")
        w(gpu._DeviceState, "advance_rows", "state: advance_rows (upload + launch)")
        w(gpu._DeviceState, "copy", "state: copy (clone)")
        w(gpu._DeviceState, "rows", "state: rows (split, host views)")
        w(gpu._DeviceState, "_host_view", "state: host view (sync + D2H)")
        w(gpu.GpuStore, "_host", "store: host copy of a field")
        w(gpu.GpuStore, "add_carried_ghost", "store: ghosts carried in (device)")
        w(gpu.GpuStore, "_gather", "store: gather rows (trackers)")
        w(gpu.GpuBackend, "recompute_rows", "rows: recompute a batch")
        w(driver.ContigRun, "read_many", "host: read many (parallel)")
        w(linear, "linear_forward", "launch: linear_forward")
        w(viterbi, "viterbi_forward", "launch: viterbi_forward")
        w(posterior, "posterior_combine", "launch: posterior_combine")
        w(parallel, "junction_offset", "chain: junction test")
        w(parallel.ChunkPass, "_speculate", "chain: speculate one chunk (pool)")
        w(parallel.ChunkPass, "_speculate_batch", "chain: speculate a batch (pool)")
        w(parallel.ChunkPass, "_sequential", "chain: sequential re-run")
        w(gpu.GpuBackend, "posterior_chunk", "emit: posterior_chunk (device combine + D2H)")
        w(gpu, "certificate_terms", "emit: certificate terms (host)")
        w(gpu, "device_certificate", "emit: certificate terms (device)")
        w(trackers.SegmentTracker, "feed", "emit: segment tracker feed")
        w(host_kernels, "viterbi_traceback", "traceback: walk")
        return self

    def report(self, wall):
        print(f"  profile (seconds summed over threads; wall {wall:.2f} s):")
        print(f"    {'step':<62}{'calls':>8}{'seconds':>10}{'main thr.':>10}{'ms/call':>9}")
        for name in sorted(self.seconds, key=lambda n: (not n.startswith("pass"), -self.seconds[n])):
            s, n = self.seconds[name], self.calls[name]
            print(f"    {name:<62}{n:>8}{s:>10.2f}{self.main[name]:>10.2f}{1e3 * s / n:>9.2f}")
        return {name: {"calls": self.calls[name], "seconds": self.seconds[name], "main": self.main[name]}
                for name in self.seconds}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def part_e(args, device, out):
    from concurrent.futures import ThreadPoolExecutor

    from flashseg.core.driver import ContigRun
    from flashseg.core.trackers import SegmentTracker

    T = max(64, int(CHR1_BINS * args.scale))
    K, C = args.chr1_k, 8
    chunk = args.chunk
    model = bench_model(C, K)
    be = GpuBackend(model)
    emis = HostEmissions(C)
    threads = args.piece_threads
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    print(f"(e) chr1-like contig through the driver, chunk-parallel: T={T:,}, K={K}, C={C}, "
          f"chunk {chunk:,}, {threads} pool threads")
    warm = ContigRun(be, emis, min(T, 4 * chunk), chunk)
    warm.viterbi()
    warm.posterior_pass()                       # compile outside the timing
    prof = CallProfile().install()
    signal.signal(signal.SIGTERM, _interrupt)   # a run stopped by `timeout` still prints its profile
    t_start = time.perf_counter()
    pool = ThreadPoolExecutor(threads)   # no `with`: an interrupted run must not wait for its chunks
    try:
        run = ContigRun(be, emis, T, chunk, pool=pool, workers=threads)
        t0 = time.perf_counter()
        score, segs = run.viterbi()
        t_vit = time.perf_counter() - t0
        print(f"  viterbi done: {t_vit:.2f} s", flush=True)
        tracker = SegmentTracker(be.fwd, T, "exact", segs.start, segs.label)
        t0 = time.perf_counter()
        log_z, _ = run.posterior_pass(Sink(), [tracker])
        t_post = time.perf_counter() - t0
        pool.shutdown()
    except KeyboardInterrupt:
        print("  interrupted: the profile so far", flush=True)
        prof.report(time.perf_counter() - t_start)
        sys.stdout.flush()
        os._exit(124)
    prof.undo()
    sec = prof.seconds
    passes = [("viterbi: forward, chunk-parallel (checkpoints)", sec["pass: viterbi"]),
              ("viterbi: pointers recomputed + traceback", t_vit - sec["pass: viterbi"]),
              ("posterior: backward, chunk-parallel (checkpoints)", sec["pass: backward total"]),
              ("posterior: forward + backward rows + combination", t_post - sec["pass: backward total"])]
    print(f"  per pass (wall; the forward pass runs beside the combination: {sec['pass: forward']:.2f} s):")
    for name, s in passes:
        print(f"    {name:<52}{s / T * 1e9:8.1f} ns/bin {s:9.2f} s")
    profile = prof.report(t_vit + t_post)
    n_check = min(T, args.check_bins)
    with ThreadPoolExecutor(threads) as pool:
        head = ContigRun(be, emis, n_check, chunk, pool=pool, workers=threads).posterior_pass()[0]
    seq = ContigRun(be, emis, n_check, chunk).posterior_pass()[0]
    stats = {k: (v.accepted, v.rerun, v.rerun_bins) for k, v in run.pass_stats.items()}
    total = t_vit + t_post
    print(f"  viterbi (forward + traceback)      {t_vit / T * 1e9:8.1f} ns/bin  {t_vit:9.2f} s")
    print(f"  posterior (bwd + fwd + rows + emit) {t_post / T * 1e9:8.1f} ns/bin  {t_post:9.2f} s")
    print(f"  total                              {total / T * 1e9:8.1f} ns/bin  {total:9.2f} s"
          f"  (chr1 at this rate: {total / T * CHR1_BINS / 60:.1f} min; peak GPU memory "
          f"{peak_gb(device):.2f} GB)")
    print(f"  guesses accepted/re-run (bins re-run in sequence): {stats}; logZ {log_z:.6f}, MAP {score:.6f}")
    print(f"  first {n_check:,} bins: chunk-parallel logZ {head:.9f}, sequential {seq:.9f}, "
          f"rel. difference {abs(head - seq) / max(1.0, abs(seq)):.1e}")
    out.append({"part": "e", "T": T, "K": K, "C": C, "chunk": chunk, "threads": threads,
                "viterbi_seconds": t_vit, "posterior_seconds": t_post, "ns_per_bin": total / T * 1e9,
                "guesses": stats, "peak_gb": peak_gb(device), "check_rel_diff": abs(head - seq) / max(1.0, abs(seq)),
                "passes": dict(passes), "profile": profile})


def part_f(args, device, out):
    """Posterior samples: every sample's walk in one launch per chunk on the device
    (triton/sample.py) against the host's compiled walk, the rows recomputed on the
    GPU in both; the same seeds, so the samples must agree."""
    from flashseg.core.driver import ContigRun
    from flashseg.core.sampling import log_rows, walk_chunk_on_host

    class HostWalk(GpuBackend):
        def sample_rows(self, store):
            return log_rows(store)

        def walk_chunk(self, walks, rngs, a, b, chunk, rows, ring_log):
            walk_chunk_on_host(self.fwd, walks, rngs, a, b, chunk, rows, ring_log)

    T = max(64, int(1e6 * args.scale))
    K, C = 64, 8
    chunk = args.chunk
    model = bench_model(C, K)
    emis = HostEmissions(C)
    print(f"(f) posterior samples of one contig: T={T:,}, K={K}, C={C}, chunk {chunk:,}")
    for n in args.samples:
        times, draws = {}, {}
        for name, be in (("device walk", GpuBackend(model)), ("host walk", HostWalk(model))):
            run = ContigRun(be, emis, T, chunk)
            _, forward_checkpoints = run.posterior_pass(keep_forward_checkpoints=True)
            run.sample(1, 0, forward_checkpoints)                                  # compile outside the timing
            t0 = time.perf_counter()
            draws[name] = run.sample(n, 7, forward_checkpoints)
            times[name] = time.perf_counter() - t0
        segments = sum(len(s.start) for s in draws["device walk"])
        same = sum(a.tuples() == b.tuples() for a, b in zip(draws["device walk"], draws["host walk"]))
        print(f"  {n:>4} samples ({segments:,} segments): device {times['device walk']:8.2f} s, "
              f"host {times['host walk']:8.2f} s, speed-up {times['host walk'] / times['device walk']:5.1f}x; "
              f"{same}/{n} samples identical", flush=True)
        out.append({"part": "f", "T": T, "K": K, "C": C, "samples": n, "segments": segments,
                    "device_seconds": times["device walk"], "host_seconds": times["host walk"],
                    "identical": same})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every T by this (smoke runs: 1e-6)")
    p.add_argument("--chunk", type=int, default=65536, help="bins per kernel launch")
    p.add_argument("--parts", default="abcd", help="which parts to run (subset of 'abcdef')")
    p.add_argument("--samples", type=lambda s: [int(v) for v in s.split(",")], default=[1, 32],
                   help="(f): numbers of samples")
    p.add_argument("--piece-threads", type=int, default=32, help="(e): pool threads (chunks in flight)")
    p.add_argument("--check-bins", type=int, default=2_000_000, help="(e): bins of the sequential check")
    p.add_argument("--ks", type=lambda s: [int(v) for v in s.split(",")], default=[64, 256])
    p.add_argument("--cs", type=lambda s: [int(v) for v in s.split(",")], default=[8, 16, 32])
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 24])
    p.add_argument("--warps", type=lambda s: [int(v) for v in s.split(",")], default=[0],
                   help="num_warps values to try in (a); 0 = the launcher's own choice")
    p.add_argument("--chr1-k", type=int, default=512)
    p.add_argument("--peer-t", type=float, default=1e5, help="T of part (c) (their kernel is O(T K C^2))")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    if not interpreting() and not gpu_available():
        print("bench_gpu: no CUDA GPU (set TRITON_INTERPRET=1 for a smoke run on CPU)", file=sys.stderr)
        return 2
    import torch

    device = torch.device("cpu" if interpreting() else "cuda")
    name = "Triton interpreter (CPU)" if interpreting() else torch.cuda.get_device_name(0)
    print(f"device: {name}; torch {torch.__version__}")
    out = []
    if "a" in args.parts:
        part_a(args, device, out)
    if "b" in args.parts:
        part_b(args, device, out)
    if "c" in args.parts:
        part_c(args, device, out)
    if "d" in args.parts:
        part_d(args, device, out)
    if "e" in args.parts:
        part_e(args, device, out)
    if "f" in args.parts:
        part_f(args, device, out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "scale": args.scale, "results": out}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
