"""Public inference API (see ``flashseg.core`` for the contract)."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import FlashsegError
from .driver import ContigRun, UncertifiedError
from .model import SemiMarkovModel
from .results import ContigResult, SegmentCalls, Segments, merge_runs, tiles
from .trackers import SegmentListTracker, SegmentTracker

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 32768


class ArrayEmissions:
    """An emission source over an in-memory (T, C) array."""

    thread_safe = True   # slices of an array: chunk-parallel passes may read at once

    def __init__(self, x):
        x = np.asarray(x)
        # float32/float16 tracks stay as they are; chunks are widened on read.
        self.x = x if x.dtype in (np.float16, np.float32, np.float64) else x.astype(np.float64)

    def __call__(self, a: int, b: int) -> np.ndarray:
        return self.x[a:b].astype(np.float64, copy=False)

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ViterbiResult:
    score: float
    segments: Segments


@dataclass
class PosteriorResult:
    log_partition: float
    calls: SegmentCalls | None  # posteriors of the requested/decoded segments
    exact_fallback: bool


def _as_source(emissions):
    if callable(emissions):
        return emissions
    return ArrayEmissions(emissions)


def _backend(model: SemiMarkovModel, device: str, exact: bool = False):
    if device == "auto":
        from .gpu import resolve_device   # imports torch only where a GPU can exist

        device = resolve_device("auto")
    if device == "cpu":
        from .cpu import CpuBackend

        return CpuBackend(model, exact=exact)
    if device == "cuda":
        from .gpu import gpu_backend

        return gpu_backend(model, exact=exact)
    raise ValueError(f"unknown device {device!r}")


@dataclass
class ChunkParallel:
    """How a contig's passes use threads: ``pool`` runs every chunk of a pass
    at once (see parallel.py), at most ``workers`` at a time; ``burn_in``
    bins lead each guess (None: parallel.burn_in_bins(K))."""

    pool: object = None
    workers: int = 1
    burn_in: int | None = None

    def run(self, backend, src, n_bins, chunk_size, name="", cancel=None) -> ContigRun:
        return ContigRun(backend, src, n_bins, chunk_size, name, cancel=cancel, pool=self.pool,
                         workers=self.workers, burn_in=self.burn_in)


SEQUENTIAL = ChunkParallel()


@contextlib.contextmanager
def chunk_threads(threads: int, burn_in: int | None = None):
    """A :class:`ChunkParallel` with its own pool of ``threads`` (sequential for 1)."""
    if threads <= 1:
        yield ChunkParallel(burn_in=burn_in)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flashseg-chunk") as pool:
        yield ChunkParallel(pool, threads, burn_in)


def _with_fallback(model, device, fn, consumer=None):
    """Run ``fn(backend)`` on the fast path; on a failed certificate, exactly."""
    backend = _backend(model, device)
    if backend.exact:
        return fn(backend), True
    try:
        return fn(backend), False
    except UncertifiedError:
        log.info("certificate of the fast path failed; recomputing this contig exactly in log space")
        if consumer is not None and hasattr(consumer, "restart"):
            consumer.restart()
        return fn(_backend(model, device, exact=True)), True


def log_partition(model: SemiMarkovModel, emissions, n_bins: int | None = None, *,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, device: str = "cpu",
                  certify: bool = True, threads: int = 1, burn_in: int | None = None) -> float:
    """log Z of one contig.

    ``certify=False`` runs the linear forward alone (one pass, fastest); its
    result is exact unless mass flushed below 2**-800 of the running scale
    would have mattered. The default adds the certificate (backward + forward).
    ``threads > 1`` runs each pass's chunks at once (chunk-parallel passes,
    see parallel.py; ``burn_in`` tunes them); here and in every function below.
    """
    src = _as_source(emissions)
    T = len(src) if n_bins is None else n_bins
    with chunk_threads(threads, burn_in) as par:
        if not certify:
            return par.run(_backend(model, device), src, T, chunk_size).forward_log_partition()

        def go(backend):
            return par.run(backend, src, T, chunk_size).posterior_pass()[0]

        return _with_fallback(model, device, go)[0]


def viterbi(model: SemiMarkovModel, emissions, n_bins: int | None = None, *,
            chunk_size: int = DEFAULT_CHUNK_SIZE, device: str = "cpu", threads: int = 1,
            burn_in: int | None = None) -> ViterbiResult:
    """MAP segmentation (ties as docs/algorithms.md, "Viterbi and traceback") and its score."""
    src = _as_source(emissions)
    T = len(src) if n_bins is None else n_bins
    with chunk_threads(threads, burn_in) as par:
        score, segs = par.run(_backend(model, device), src, T, chunk_size).viterbi()
    return ViterbiResult(score, segs)


def posterior(model: SemiMarkovModel, emissions, n_bins: int | None = None, *,
              consumer=None, segments: Segments | None = None, runs: bool = False,
              decode: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
              device: str = "cpu", threads: int = 1, burn_in: int | None = None) -> PosteriorResult:
    """Per-bin posteriors to ``consumer`` and posteriors of segments.

    segments: segments whose exact-segment posteriors to compute (``runs=True``:
    as merged runs), with b (or chg) at their ends and their mean gamma; any
    list works, a tiling segmentation (e.g. the MAP) takes a vectorised path. ``decode=True`` instead
    decodes by per-bin argmax of gamma and returns the runs with their
    posteriors.
    """
    src = _as_source(emissions)
    T = len(src) if n_bins is None else n_bins

    def go(backend):
        run = par.run(backend, src, T, chunk_size)
        trackers = []
        if decode:
            trackers.append(SegmentTracker(backend.fwd, T, "run", decode=True))
        elif segments is not None:
            kind = "run" if runs else "exact"
            if tiles(segments, T):
                trackers.append(SegmentTracker(backend.fwd, T, kind, segments.start, segments.label))
            else:
                trackers.append(SegmentListTracker(backend.fwd, T, kind, segments.start, segments.end,
                                                   segments.label))
        log_z, _ = run.posterior_pass(consumer, trackers)
        return log_z, (trackers[0].calls if trackers else None)

    with chunk_threads(threads, burn_in) as par:
        (log_z, calls), fell_back = _with_fallback(model, device, go, consumer)
    return PosteriorResult(log_z, calls, fell_back)


def expected_counts(model: SemiMarkovModel, emissions, n_bins: int | None = None, *, consumer=None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE, device: str = "cpu", threads: int = 1,
                    burn_in: int | None = None):
    """Expected counts of one contig (:class:`flashseg.core.expected.ExpectedCounts`):
    first labels, transitions, durations and tails, with log Z; per-bin gamma
    (the counts of the emission scores) goes to ``consumer`` as in :func:`posterior`.
    Together they are the gradient of log Z with respect to every log score.

    With ``threads > 1`` and K > 1 the counts and the consumer run on one
    thread behind the passes (pipeline.py), which get the other threads: the
    counts of a duration ring cost about as much as a pass. The results are
    the same bit for bit. An HMM's counts cost little: its passes get every
    thread."""
    from .expected import ExpectedCountsTracker
    from .pipeline import Pipeline

    src = _as_source(emissions)
    T = len(src) if n_bins is None else n_bins

    def go(backend):
        run = par.run(backend, src, T, chunk_size)
        tracker = ExpectedCountsTracker(backend.fwd, T)
        if not pipelined:
            run.posterior_pass(consumer, [tracker])
        else:
            with Pipeline() as pipe:
                run.posterior_pass(pipe.consumer(consumer), [pipe.tracker(tracker)])
        return tracker.counts

    pipelined = threads > 1 and model.max_duration > 1
    with chunk_threads(threads - 1 if pipelined else threads, burn_in) as par:
        return _with_fallback(model, device, go, consumer)[0]


def sample(model: SemiMarkovModel, emissions, n_bins: int | None = None, n: int = 1, *,
           seed: int = 0, name: str = "", chunk_size: int = DEFAULT_CHUNK_SIZE,
           device: str = "cpu", threads: int = 1, burn_in: int | None = None) -> list[Segments]:
    """``n`` exact posterior samples; the generator is seeded from (seed, name)."""
    src = _as_source(emissions)
    T = len(src) if n_bins is None else n_bins

    def go(backend):
        run = par.run(backend, src, T, chunk_size, name)
        _, forward_checkpoints = run.posterior_pass(None, (), keep_forward_checkpoints=True)
        return run.sample(n, seed, forward_checkpoints)

    with chunk_threads(threads, burn_in) as par:
        return _with_fallback(model, device, go)[0]


def decode_contig(model: SemiMarkovModel, emissions, n_bins: int, *, name: str = "",
                  method: str = "viterbi", merge_adjacent: bool = False, per_bin=None,
                  n_samples: int = 0, seed: int = 0, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  device: str = "cpu", cancel=None, parallel: ChunkParallel = SEQUENTIAL) -> ContigResult:
    """Everything ``flashseg decode`` needs for one contig.

    method "viterbi": MAP segments with exact-segment posteriors (merged into
    runs with run posteriors when ``merge_adjacent``); "posterior": per-bin
    argmax of gamma, runs merged, run posteriors (no Viterbi pass).
    ``cancel``: an optional threading.Event; once set, the contig stops at
    its next chunk with :class:`Cancelled`. ``parallel``: run each pass's
    chunks at once on its pool (see :class:`ChunkParallel`).
    """
    if method not in ("viterbi", "posterior"):
        raise ValueError(f"unknown method {method!r}")
    t0 = time.perf_counter()
    src = _as_source(emissions)
    try:
        score = None
        segs = None
        if method == "viterbi":
            score, segs = parallel.run(_backend(model, device), src, n_bins, chunk_size, name,
                                       cancel=cancel).viterbi()
            if merge_adjacent:
                segs = merge_runs(segs)

        def go(backend):
            run = parallel.run(backend, src, n_bins, chunk_size, name, cancel=cancel)
            if method == "posterior":
                tracker = SegmentTracker(backend.fwd, n_bins, "run", decode=True)
            else:
                tracker = SegmentTracker(backend.fwd, n_bins, "run" if merge_adjacent else "exact",
                                         segs.start, segs.label)
            log_z, forward_checkpoints = run.posterior_pass(per_bin, [tracker], keep_forward_checkpoints=n_samples > 0)
            # a per-bin consumer with samples(first, batch) takes them as they are drawn
            sink = per_bin.samples if getattr(per_bin, "takes_samples", False) else None
            samples = run.sample(n_samples, seed, forward_checkpoints, sink) if n_samples > 0 else []
            return log_z, tracker.calls, samples, backend.name

        (log_z, calls, samples, backend_name), fell_back = _with_fallback(model, device, go, per_bin)
    except FlashsegError as exc:
        exc.located(contig=name or None)
        raise
    return ContigResult(name=name, n_bins=int(n_bins), log_partition=float(log_z),
                        viterbi_score=None if score is None else float(score), calls=calls,
                        samples=samples, seconds=time.perf_counter() - t0,
                        backend=backend_name, exact_fallback=fell_back)


def _on_gpu(device: str) -> bool:
    if device == "auto":
        from .gpu import resolve_device   # imports torch only where a GPU can exist

        device = resolve_device("auto")
    return device == "cuda"


def _contig_stream(device: str, threads: int):
    """Each worker thread's contig on its own CUDA stream, so that contigs overlap on the GPU."""
    if device == "cpu" or threads <= 1:
        return contextlib.nullcontext()
    from .gpu import contig_stream   # imports torch only where a GPU can exist

    return contig_stream(device)


def decode_contigs(model: SemiMarkovModel, jobs, *, threads: int = 1, chunk_parallel: bool | None = None,
                   **kwargs):
    """Decode contigs in parallel on ``threads`` threads; yields results in job order.

    jobs: dicts with "name", "emissions", "n_bins" and optionally "per_bin".
    The numba kernels release the GIL, so threads run contigs concurrently.
    ``chunk_parallel`` (default: when there are more threads than contigs,
    e.g. one chromosome per job, or on a GPU) also runs every pass's chunks
    at once on one shared pool of ``threads``: one long contig then uses
    every core, or as many GPU multiprocessors as threads. It costs one
    extra forward pass of work, so on a CPU with at least as many contigs as
    threads, contigs alone fill the threads.
    """
    jobs = list(jobs)
    if chunk_parallel is None:
        chunk_parallel = threads > len(jobs) or _on_gpu(kwargs.get("device", "cpu"))
    if chunk_parallel and threads > 1:
        with chunk_threads(threads) as parallel:
            yield from _decode_contigs(model, jobs, threads, parallel=parallel, **kwargs)
        return
    yield from _decode_contigs(model, jobs, threads, **kwargs)


def _decode_contigs(model, jobs, threads, **kwargs):
    # Set when the caller stops (an error, Ctrl-C, SIGTERM): running contigs
    # end at their next chunk instead of keeping the process alive.
    stop = threading.Event()

    device = kwargs.get("device", "cpu")

    def one(job):
        with _contig_stream(device, threads):
            return decode_contig(model, job["emissions"], job["n_bins"], name=job.get("name", ""),
                                 per_bin=job.get("per_bin"), cancel=stop, **kwargs)

    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield one(job)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one, job) for job in jobs]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            stop.set()
            for fut in futures:
                fut.cancel()


def working_memory(model: SemiMarkovModel, chunk_size: int, threads: int = 1, n_bins: int = 0) -> int:
    """A generous estimate (bytes) of what the core allocates for one run: per
    thread, the row stores of a chunk for the passes in flight (about 14 arrays
    of (chunk + 1) x C doubles) and the O(K C) state of the recursions (about 12
    arrays of K x C); per chunk of the longest contig (``n_bins``), a forward and
    a backward checkpoint (2K + 4 values per label each, plus bookkeeping); and
    the row cache shared by the passes. Callers compare it with the memory they
    have before starting."""
    from .schedule import CHUNK_CACHE_BYTES

    K, C = model.max_duration, model.n_labels
    chunk = max(1, int(chunk_size))
    per_thread = 8 * C * (14 * (chunk + 1) + 12 * K)
    checkpoints = (int(n_bins) // chunk + 1) * (16 * C * (2 * K + 4) + 512)
    return max(1, int(threads)) * per_thread + checkpoints + CHUNK_CACHE_BYTES


def warm_up(method: str = "viterbi", n_samples: int = 0) -> None:
    """Compile (or load from the cache) the CPU kernels a decode of ``method``
    with ``n_samples`` samples uses, on a tiny contig: the first run on a
    machine compiles them (seconds), every later run loads them."""
    import numpy as np

    two = np.log([0.5, 0.5])
    model = SemiMarkovModel(np.zeros((2, 2)), two, np.zeros((2, 2)), np.zeros(2), np.zeros(2))
    decode_contig(model, np.zeros((8, 2)), 8, method=method, n_samples=n_samples)
