"""The chunk driver: pass order, checkpoints, traceback, posteriors, sampling.

Shared by every backend (CPU numba, GPU Triton). A backend supplies states
with ``advance(chunk, store)``; the driver never sees their internals.

Pass plan per contig (ALGORITHMS.md, Chunks and output order):

* Viterbi: max-plus forward keeping one checkpoint per chunk; traceback from
  the contig end recomputes one chunk at a time with argmax pointers.
* Posteriors: a backward pass (the forward of the reversed model on reversed
  emissions) keeps checkpoints; then one left-to-right pass recomputes each
  chunk's backward rows from its checkpoint, runs the forward over it, and
  emits gamma, b and chg in ascending order. The certificate of the linear
  fast path is summed in that pass; if it fails, the contig is recomputed in
  exact log space (consumers get ``restart()``).

  The certificate (ALGORITHMS.md) charges each pass's flushed mass against
  the other pass's *computed* continuation. A path flushed by both passes
  is missing from both and escapes it; when both passes flushed anything,
  logZ is therefore also checked against the exact max-plus MAP score
  (Z >= exp(MAP) always), which catches the case where the lost path is the
  dominant one. A lost path that is neither the MAP nor negligible is not
  caught; it needs a flush on both sides (2**-736 below the running scale
  on each) and must still carry >= 1e-13 of Z.
* Sampling: forward checkpoints from the posterior pass; chunks recomputed
  right to left while every sample walks back through them.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np

from ..errors import DataError, NoValidSegmentation
from .cpu import BadEmission, EmissionChunk, ViterbiStore
from .parallel import add_offsets, offset_log, shift_partition, unscale_partition, worker_context
from .results import SegmentCalls, Segments

LN2 = math.log(2.0)
# The fast path is accepted when flushed mass can change Z (and so any
# posterior) by less than this fraction.
CERTIFICATE_TOLERANCE = 1e-13
# Per contig, the backward pass keeps up to this many bytes of chunks and
# their backward rows for the emit pass (instead of reading and recomputing
# them). It bounds memory whatever the contig length: beyond it, chunks are
# recomputed from checkpoints as usual. FLASHSEG_CHUNK_CACHE_MB overrides it.
CHUNK_CACHE_BYTES = int(float(os.environ.get("FLASHSEG_CHUNK_CACHE_MB", "256")) * (1 << 20))


class UncertifiedError(Exception):
    """The linear fast path could not certify this contig; recompute exactly."""


class Cancelled(Exception):
    """The caller asked this contig to stop (see ``ContigRun(cancel=...)``)."""


class ContigRun:
    """One contig: its emissions, chunk layout and backend."""

    def __init__(self, backend, emissions, n_bins: int, chunk_size: int, name: str = "", cancel=None,
                 pool=None, workers: int = 1, burn_in: int | None = None):
        if n_bins < 1:
            raise DataError("contig has no bins", contig=name or None)
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.backend = backend
        self.emissions = emissions
        self.T = int(n_bins)
        self.chunk = int(chunk_size)
        self.name = name
        self.C = backend.fwd.C
        self.bounds = [(a, min(a + self.chunk, self.T)) for a in range(0, self.T, self.chunk)]
        self._viterbi_score = None
        self.cancel = cancel
        # With a pool, every pass runs its chunks at once (parallel.py).
        self.pool = pool if len(self.bounds) > 1 else None
        self.workers = max(1, int(workers))
        self.burn_in = burn_in
        self.pass_stats = {}
        self._read_lock = threading.Lock()
        self._readers = None          # see reading()
        self._reader_users = 0
        self._readers_lock = threading.Lock()

    # -- emissions -----------------------------------------------------------
    def read(self, j: int) -> EmissionChunk:
        return self.read_range(*self.bounds[j])

    def read_range(self, a: int, b: int) -> EmissionChunk:
        """Emissions of bins [a, b) with their factors; errors name the bin."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(self.name)
        if self.pool is not None and not getattr(self.emissions, "thread_safe", False):
            # Chunk-parallel passes read from worker threads; sources (h5py,
            # pysam) need not be thread-safe, so reads take turns unless the
            # source says otherwise (``thread_safe = True``, as in-memory arrays).
            with self._read_lock:
                x = np.asarray(self.emissions(a, b), dtype=np.float64)
        else:
            x = np.asarray(self.emissions(a, b), dtype=np.float64)
        if x.shape != (b - a, self.C):
            raise DataError(f"emission source returned shape {x.shape} for bins [{a}, {b}), "
                            f"expected {(b - a, self.C)}", contig=self.name or None)
        try:
            return EmissionChunk.from_log(x)
        except BadEmission as bad:
            where = dict(contig=self.name or None, bin=a + bad.local_bin)
            if bad.code == 3:
                raise NoValidSegmentation("no valid segmentation: every label has probability 0 here",
                                          **where) from None
            raise DataError("emission score is " + ("NaN" if bad.code == 1 else "+inf"), **where) from None

    @contextlib.contextmanager
    def reading(self):
        """Reader threads for :meth:`read_many` while the block runs (blocks may
        nest and run on several threads; the last one out stops the readers)."""
        with self._readers_lock:
            if self._readers is None:
                from concurrent.futures import ThreadPoolExecutor

                cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
                self._readers = ThreadPoolExecutor(max(1, min(16, cpus)), thread_name_prefix="flashseg-read")
            self._reader_users += 1
        try:
            yield
        finally:
            with self._readers_lock:
                self._reader_users -= 1
                readers = self._readers if self._reader_users == 0 else None
                if readers is not None:
                    self._readers = None
            if readers is not None:
                readers.shutdown(wait=True, cancel_futures=True)

    def read_many(self, ranges) -> list:
        """:meth:`read_range` of each (a, b) (None where b <= a), at once on the
        reader threads of an enclosing :meth:`reading` block (else one after
        another); raises the error of the first range, in the given order, that
        has one."""
        readers = self._readers
        if readers is None:
            return [self.read_range(a, b) if b > a else None for a, b in ranges]
        futures = [readers.submit(self.read_range, a, b) if b > a else None for a, b in ranges]
        try:
            return [None if f is None else f.result() for f in futures]
        finally:
            for f in futures:
                if f is not None:
                    f.cancel()

    def chunk_of_end(self, pos: int) -> int:
        """The chunk whose rows hold boundary ``pos`` as a segment end (a < pos <= b)."""
        return (pos - 1) // self.chunk

    def chunk_of_start(self, pos: int) -> int:
        """A chunk whose rows hold boundary ``pos`` (a <= pos <= b)."""
        return min(pos // self.chunk, len(self.bounds) - 1)

    def vanished(self, j: int, local: int):
        raise NoValidSegmentation("no valid segmentation: all paths have probability 0 by here",
                                  contig=self.name or None, bin=self.bounds[j][0] + local)

    # -- Viterbi -------------------------------------------------------------
    def viterbi_score(self) -> float:
        """The MAP score alone (one max-plus pass, no checkpoints)."""
        if self._viterbi_score is None:
            self._viterbi_score = _best_final(self._final_state("viterbi", self.backend.viterbi_state))[0]
        return self._viterbi_score

    def forward_log_partition(self) -> float:
        """log Z from the linear forward pass alone, uncertified (no backward pass)."""
        return _partition(self._final_state("forward", self.backend.forward_state))[0]

    def _final_state(self, kind: str, new_state):
        """The state at the contig end after one pass that keeps nothing: every
        chunk at once on the pool, or chunk after chunk from ``new_state()``."""
        if self.pool is not None:
            return self._chunk_pass(kind)[1]
        state = new_state()
        for j in range(len(self.bounds)):
            state.advance(self.read(j))
        return state

    def _chunk_pass(self, kind: str, on_status=None, cache=None, emit=None):
        """All chunks of one pass at once on the pool: (checkpoints, final state).

        With ``cache`` (a dict), chunks and their rows are kept there as far
        as CHUNK_CACHE_BYTES allows. With ``emit``, every chunk's rows are
        computed and handed to ``emit(j, chunk, store)`` in chunk order as
        soon as the chunk is certified.
        """
        from .parallel import ChunkPass

        keep = None
        if emit is not None:
            def keep(j):
                a, b = self.bounds[j]
                return self.backend.new_store(b - a + 1)
        elif cache is not None:
            budget = [CHUNK_CACHE_BYTES]

            def keep(j):
                a, b = self.bounds[j]
                cost = (b - a + 1) * (self.C * 40 + 16)   # x, f, E, A, ghost rows; k, sexp
                if cost > budget[0]:
                    return None
                budget[0] -= cost
                return self.backend.new_store(b - a + 1)

        chunk_pass = ChunkPass(self, kind, self.pool, self.workers, self.burn_in, keep, emit)
        with self.reading():
            out = chunk_pass.run(on_status)
        self.pass_stats[kind] = chunk_pass.stats
        if cache is not None:
            cache.update(chunk_pass.rows)
        return out

    def _prefetch(self, fn, items, window: int | None = None):
        """fn(item) for items in order: ahead on the pool when there is one."""
        if self.pool is None:
            return (fn(item) for item in items)
        from .parallel import prefetch

        def on_worker(item):
            with worker_context(self.backend):
                return fn(item)

        return prefetch(self.pool, self.workers, on_worker, items, window)

    def _recompute_ahead(self, rows_of, items):
        """rows_of(group) for consecutive groups of ``items``, each group's results
        yielded in order. With a pool the groups are computed ahead on it, as
        large as the backend advances at once (the GPU: many chunks per launch;
        two groups ahead), else one item at a time."""
        size = getattr(self.backend, "batch_size", None)
        size = size(self.workers) if size is not None and self.pool is not None else 1
        items = list(items)
        if size == 1:
            return (rows_of([item])[0] for item in items) if self.pool is None else \
                self._prefetch(lambda item: rows_of([item])[0], items)
        groups = [items[i:i + size] for i in range(0, len(items), size)]
        return (r for group in self._prefetch(rows_of, groups, window=2) for r in group)

    def _read_chunks(self, js) -> list:
        return [self.read(js[0])] if len(js) == 1 else self.read_many([self.bounds[j] for j in js])

    def viterbi(self) -> tuple[float, Segments]:
        with self.reading():
            return self._viterbi()

    def _viterbi(self) -> tuple[float, Segments]:
        if self.pool is not None:
            checkpoints, state = self._chunk_pass("viterbi")
        else:
            state = self.backend.viterbi_state()
            checkpoints = []
            for j in range(len(self.bounds)):
                checkpoints.append(state.copy())
                state.advance(self.read(j))
        score, label = _best_final(state)
        if not score > -math.inf:
            raise NoValidSegmentation("no valid segmentation (every path has score -inf)",
                                      contig=self.name or None)
        self._viterbi_score = score
        from .cpu_kernels import viterbi_traceback

        cap = 1024
        out_s = np.empty(cap, dtype=np.int64)
        out_e = np.empty(cap, dtype=np.int64)
        out_c = np.empty(cap, dtype=np.int64)
        count = 0
        pos, phase = self.T, 2

        def pointers(js):
            stores = [ViterbiStore(b - a + 1, self.C) for a, b in (self.bounds[j] for j in js)]
            self.backend.recompute_rows([checkpoints[j] for j in js], self._read_chunks(js), stores)
            return list(zip(js, stores))

        # The walk visits chunks last to first, skipping those inside long
        # segments; with a pool, pointers are recomputed ahead of it.
        ahead = self._recompute_ahead(pointers, range(len(self.bounds) - 1, -1, -1)) if self.pool else None
        j_loaded, store = -1, None
        while phase != 0:
            j = self.chunk_of_end(pos) if phase == 2 else self.chunk_of_start(pos)
            while j_loaded != j:
                j_loaded, store = next(ahead) if ahead is not None else pointers([j])[0]
            pos, label, phase, count = viterbi_traceback(
                store.a_start, store.e_prev, self.bounds[j][0], pos, label, phase,
                out_s, out_e, out_c, count)
            if count == cap:
                cap *= 2
                out_s, out_e, out_c = (np.resize(v, cap) for v in (out_s, out_e, out_c))
        segs = Segments(out_s[:count][::-1].copy(), out_e[:count][::-1].copy(),
                        out_c[:count][::-1].astype(np.int32))
        return score, segs

    # -- posteriors ----------------------------------------------------------
    def backward_checkpoints(self, cache=None):
        """Backward pass: checkpoints (reversed-problem states) at every chunk end.

        With ``cache`` (a dict), chunks and their backward rows are kept while
        they fit in CHUNK_CACHE_BYTES, so the emit pass neither reads nor
        recomputes them; the result is bit for bit the same either way.
        With a pool, all chunks run at once (no cache).
        """
        if self.pool is not None:
            checkpoints, state = self._chunk_pass("backward", self._backward_status, cache)
        else:
            state = self.backend.forward_state(backward=True)
            checkpoints = [None] * len(self.bounds)
            budget = CHUNK_CACHE_BYTES if cache is not None else 0
            for j in range(len(self.bounds) - 1, -1, -1):
                checkpoints[j] = state.copy()
                chunk = self.read(j)
                a, b = self.bounds[j]
                cost = (b - a + 1) * (self.C * 40 + 16)   # x, f, E, A, ghost rows; k, sexp
                store = None
                if cost <= budget:
                    store = self.backend.new_store(b - a + 1)
                    cache[j] = (chunk, store)
                    budget -= cost
                status = state.advance(chunk.reversed(), store)
                if status >= 0:
                    self._backward_status(j, status, state)
        log_z, zm, zexp = _partition(state)
        if not log_z > -math.inf:
            if not self.backend.exact and np.isfinite(state.ghost).any():
                raise UncertifiedError()
            raise NoValidSegmentation("no valid segmentation (total probability 0)",
                                      contig=self.name or None)
        return checkpoints, (log_z, zm, zexp), state

    def _backward_status(self, j, status, state):
        """All mass vanished at local bin ``status`` of chunk j (backward pass)."""
        if self.backend.exact or not np.isfinite(state.ghost).any():
            raise NoValidSegmentation("no valid segmentation: all paths have probability 0 by here",
                                      contig=self.name or None, bin=self.bounds[j][1] - 1 - status)
        raise UncertifiedError()

    def _forward_status(self, j, status, state=None):
        """All mass vanished at local bin ``status`` of chunk j (forward pass)."""
        if self.backend.exact:
            self.vanished(j, status)
        raise UncertifiedError()

    def _rows_in_sequence(self, bck, fck, cache):
        """(chunk, forward rows, backward rows) of each chunk in order, the forward
        state carried along; the last item is the final forward state."""
        fstate = self.backend.forward_state()
        # One set of buffers for the whole pass (consumers copy what they keep).
        width = self.bounds[0][1] - self.bounds[0][0]
        fbuf = self.backend.new_store(width + 1)
        bbuf = None
        for j, (a, b) in enumerate(self.bounds):
            n = b - a
            if j in cache:
                chunk, bstore = cache.pop(j)
            else:
                chunk = self.read(j)
                if bbuf is None:
                    bbuf = self.backend.new_store(width + 1)
                bstore = bbuf.head(n + 1)
                bck[j].copy().advance(chunk.reversed(), bstore)
            if fck is not None:
                fck.append(fstate.copy())
            fstore = fbuf.head(n + 1)
            status = fstate.advance(chunk, fstore)
            if status >= 0:
                self._forward_status(j, status)
            yield chunk, fstore, bstore.flipped()
        yield fstate

    def _rows_streamed(self, bck, bcache, out):
        """As :meth:`_rows_in_sequence`, chunk-parallel: the forward pass runs
        all chunks at once (on a helper thread) and hands over each chunk's
        rows as soon as it is certified; backward rows not kept by the
        backward pass are recomputed ahead on the pool. ``out["fck"]`` gets
        the forward checkpoints."""
        import queue

        size = getattr(self.backend, "batch_size", None)
        handed = queue.Queue(maxsize=min(self.workers, size(self.workers) if size else self.workers) + 2)
        stop = threading.Event()

        def emit(j, chunk, store):
            while True:
                try:
                    handed.put((j, chunk, store), timeout=0.1)
                    return
                except queue.Full:
                    if stop.is_set():
                        raise Cancelled(self.name) from None

        def forward():
            try:
                result = self._chunk_pass("forward", self._forward_status, emit=emit)
            except BaseException as exc:   # handed to the consumer thread
                result = exc
            while not stop.is_set():
                try:
                    handed.put(result, timeout=0.1)
                    return
                except queue.Full:
                    pass

        def backward_rows(js):
            out = {j: bcache.pop(j)[1] for j in js if j in bcache}
            todo = [j for j in js if j not in out]
            if todo:
                stores = [self.backend.new_store(b - a + 1) for a, b in (self.bounds[j] for j in todo)]
                chunks = [c.reversed() for c in self._read_chunks(todo)]
                self.backend.recompute_rows([bck[j] for j in todo], chunks, stores)
                for j, store in zip(todo, stores):
                    store.log_offset = bck[j].scale_offset
                    out[j] = store
            return [out[j] for j in js]

        helper = threading.Thread(target=forward, name="flashseg-forward", daemon=True)
        helper.start()
        try:
            bstores = self._recompute_ahead(backward_rows, range(len(self.bounds)))
            for j in range(len(self.bounds)):
                item = handed.get()
                if isinstance(item, BaseException):
                    raise item
                _, chunk, fstore = item
                yield chunk, fstore, next(bstores).flipped()
            item = handed.get()
            if isinstance(item, BaseException):
                raise item
            out["fck"], fend = item
            yield fend
        finally:
            stop.set()
            helper.join()

    def posterior_pass(self, consumer=None, trackers=(), keep_forward_checkpoints=False):
        """Left-to-right emit pass. Returns (logZ, forward checkpoints or None)."""
        opened = []
        with self.reading():
            try:
                return self._posterior_pass(consumer, trackers, keep_forward_checkpoints, opened)
            finally:
                for rows in opened:   # its helper thread and reads stop before the readers do
                    rows.close()

    def _posterior_pass(self, consumer, trackers, keep_forward_checkpoints, opened):
        forward = {}
        if self.pool is not None:
            # The backward pass at once, then the forward pass at once, its
            # rows combined chunk by chunk as they are certified.
            bcache = {}
            bck, (log_z, zm, zexp), bend = self.backward_checkpoints(bcache)
            rows = self._rows_streamed(bck, bcache, forward)
        else:
            cache = {}
            bck, (log_z, zm, zexp), bend = self.backward_checkpoints(cache)
            fck = [] if keep_forward_checkpoints else None
            rows = self._rows_in_sequence(bck, fck, cache)
        opened.append(rows)
        # Losses of the backward pass flushed before reaching boundary 0.
        cert = _lost_at_end(bend, log_z)
        carry = np.zeros(self.C)
        nb = len(self.bounds)
        lost_fwd = lost_bwd = False
        width = self.bounds[0][1] - self.bounds[0][0]
        gamma_buf = np.empty((width, self.C))
        boundary_buf = np.empty(width)
        change_buf = np.empty(width)
        for j, (a, b) in enumerate(self.bounds):
            chunk, fstore, bstore = next(rows)
            n = b - a
            gamma = gamma_buf[:n]
            boundary = boundary_buf[:n]
            change = change_buf[:n]
            last = j == nb - 1
            # Rows of chunk-parallel passes are scaled: Z takes both scales.
            scaled = shift_partition(log_z, zm, zexp, add_offsets(fstore.log_offset, bstore.log_offset))
            cert += self.backend.posterior_chunk(fstore, bstore, *scaled, carry, a, n,
                                                 last, gamma, boundary, change)
            if not self.backend.exact and cert > CERTIFICATE_TOLERANCE:
                raise UncertifiedError()
            if not self.backend.exact:
                lost_fwd = lost_fwd or fstore.any_loss()
                lost_bwd = lost_bwd or bstore.any_loss()
            for tr in trackers:
                tr.feed(a, b, chunk.x, gamma, boundary, change, fstore, bstore)
            if consumer is not None:
                consumer.chunk(a, gamma, boundary, change)
        fstate = next(rows)
        cert += _lost_at_end(fstate, log_z)
        if not self.backend.exact and cert > CERTIFICATE_TOLERANCE:
            raise UncertifiedError()
        log_zf, _, _ = _partition(fstate)
        if not abs(log_zf - log_z) <= 1e-9 * max(1.0, abs(log_z)):
            if not self.backend.exact:
                raise UncertifiedError()
            raise AssertionError(f"forward and backward disagree: {log_zf} vs {log_z}")
        if lost_fwd and lost_bwd:
            # The certificate multiplies each pass's losses by the other pass's
            # computed values, so a path flushed by both passes escapes it.
            # Z can never be below the exact (log-space) MAP score: if it is,
            # the dominant path was lost on both sides.
            if log_z < self.viterbi_score() - 1e-9 * max(1.0, abs(log_z)):
                raise UncertifiedError()
        for tr in trackers:
            tr.finish(log_z, zm, zexp)
        if self.pool is not None:
            fck = forward["fck"]
        return log_z, (fck if keep_forward_checkpoints else None)

    # -- sampling ------------------------------------------------------------
    def sample(self, n: int, seed: int, forward_checkpoints) -> list[Segments]:
        """``n`` posterior samples, walked back from the contig end chunk by chunk
        (sampling.py) through rows recomputed from ``forward_checkpoints``; the
        backend walks every sample through a chunk (on the GPU in one launch)."""
        from .sampling import SampleWalk, sample_seeds

        K = self.backend.fwd.K
        rngs = [np.random.default_rng(s) for s in sample_seeds(seed, self.name, n)]
        walks = [SampleWalk(self.T) for _ in range(n)]

        def rows(j):
            a, b = self.bounds[j]
            chunk = self.read(j)
            ck = forward_checkpoints[j]
            store = self.backend.new_store(b - a + 1, with_tail=True)
            ck.copy().advance(chunk, store)
            store.log_offset = ck.scale_offset
            return j, chunk, self.backend.sample_rows(store)

        # Chunks last to first; with a pool, their rows are recomputed ahead of the walks.
        for j, chunk, rows_j in self._prefetch(rows, range(len(self.bounds) - 1, -1, -1)):
            a, b = self.bounds[j]
            ck = forward_checkpoints[j]

            def ring_log(label, ck=ck):
                off = offset_log(ck.scale_offset)
                return np.array([ck.log_ring_entry(label, slot) - off for slot in range(K)])

            self.backend.walk_chunk(walks, rngs, a, b, chunk, rows_j, ring_log)
        return [walk.segments() for walk in walks]


def _best_final(state) -> tuple[float, int]:
    """The best final score and label, on the true scale."""
    score, label = state.best_final()
    return score - offset_log(state.scale_offset), label


def _partition(state) -> tuple[float, float, int]:
    """(logZ, mantissa, exponent) of a final state, on the true scale."""
    return unscale_partition(*state.log_partition(), state.scale_offset)


def _lost_at_end(state, log_z: float) -> float:
    return state.lost_at_end(log_z + offset_log(state.scale_offset))


def log_duration_weight(pm, labels: np.ndarray, d: np.ndarray) -> np.ndarray:
    """phi_c(d) for arrays of labels and durations (tail included)."""
    K = pm.K
    labels = np.asarray(labels, dtype=np.int64)
    d = np.asarray(d, dtype=np.int64)
    phi = pm.model.duration[np.minimum(d, K) - 1, labels]
    lrho = pm.lrho[labels]
    over = d > K
    with np.errstate(invalid="ignore"):
        tail = phi + (d - K) * lrho
    return np.where(over, np.where(np.isfinite(lrho), tail, -np.inf), phi)


def _lse_rows(a):
    m = a.max(axis=1)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return np.log(np.exp(a - shift[:, None]).sum(axis=1)) + shift


class SegmentTracker:
    """Streams the posteriors of a tiling set of segments through the emit pass.

    ``kind`` is "exact" (P of that exact segment; b at its ends) or "run"
    (P of the merged run; chg at its ends). Segment starts are either known up
    front (``starts``/``labels``) or discovered per chunk from gamma
    (``decode=True``: per-bin argmax, lowest label on ties). Everything is
    vectorised per chunk: an HMM can have a segment per bin.
    """

    def __init__(self, pm, T: int, kind: str, starts=None, labels=None, decode=False):
        self.pm = pm
        self.T = T
        self.kind = kind
        self.decode = decode
        self.known_starts = None if starts is None else np.asarray(starts, dtype=np.int64)
        self.known_labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.cursor = 0
        self.prev_label = -1
        # the segment still running: start, label, log left factor, S, gamma sum, start_post
        self.open = None
        self.parts = []
        self._run_weights = {}

    def _starts_in(self, a, b, gamma):
        if not self.decode:
            ks = self.known_starts
            i0 = self.cursor
            i1 = int(np.searchsorted(ks, b, side="left"))
            self.cursor = i1
            return ks[i0:i1], self.known_labels[i0:i1]
        lab = np.argmax(gamma, axis=1)
        prev = np.concatenate([[self.prev_label], lab[:-1]])
        idx = np.flatnonzero(lab != prev)
        self.prev_label = int(lab[-1])
        return a + idx, lab[idx]

    def _side_log(self, store, rows, labels, links, edge):
        """log of a segment's outer factor at ``rows`` of ``store``: its own E-side
        value for exact segments (and at the contig ends); for runs, the flow to or
        from the *other* labels, ``links[k, c]`` being the log transition weight."""
        own = store.log_E(rows, labels)
        if self.kind == "exact":
            return own
        C = self.pm.C
        other = store.log_A(np.repeat(rows, C), np.tile(np.arange(C), len(rows))).reshape(len(rows), C)
        other = other + links
        other[np.arange(len(rows)), labels] = -np.inf
        return np.where(edge, own, _lse_rows(other))

    def _left_log(self, rows, labels, starts, fstore):
        """E at the start, or the inflow from other labels (Tr[c', label])."""
        return self._side_log(fstore, rows, labels, self.pm.trans[:, labels].T, starts == 0)

    def _right_log(self, rows, labels, ends, bstore):
        """B at the end, or the outflow to other labels (Tr[label, c2])."""
        return self._side_log(bstore, rows, labels, self.pm.trans[labels], ends == self.T)

    def feed(self, a, b, x, gamma, boundary, change, fstore, bstore):
        starts, labels = self._starts_in(a, b, gamma)
        post = boundary if self.kind == "exact" else change
        lead = self.open is not None and (len(starts) == 0 or starts[0] != a)
        cut = starts - a
        if lead:
            cut = np.concatenate([[0], cut])
        # Sum each piece over its own label only: gather that column per bin first.
        piece_labels = np.concatenate([[self.open["label"]], labels]) if lead else labels
        lengths = np.diff(np.append(cut, b - a))
        bin_label = np.repeat(piece_labels, lengths)
        bins = np.arange(b - a)
        xs = np.add.reduceat(x[bins, bin_label], cut) if len(cut) else np.zeros(0)
        gs = np.add.reduceat(gamma[bins, bin_label], cut) if len(cut) else np.zeros(0)
        if lead:
            self.open["S"] += xs[0]
            self.open["G"] += gs[0]
            xs, gs = xs[1:], gs[1:]
        k = len(starts)
        if k:
            rows = starts - a
            new_left = self._left_log(rows, labels, starts, fstore)
            new_S = xs
            new_G = gs
            new_sp = np.where(starts == 0, 1.0, post[rows])
            # Segments closed in this chunk: the open one, then all new but the last.
            if self.open is not None:
                o = self.open
                c_start = np.concatenate([[o["start"]], starts[:-1]])
                c_label = np.concatenate([[o["label"]], labels[:-1]])
                c_left = np.concatenate([[o["left"]], new_left[:-1]])
                c_S = np.concatenate([[o["S"]], new_S[:-1]])
                c_G = np.concatenate([[o["G"]], new_G[:-1]])
                c_sp = np.concatenate([[o["start_post"]], new_sp[:-1]])
                c_end = starts
            else:
                c_start, c_label, c_left = starts[:-1], labels[:-1], new_left[:-1]
                c_S, c_G, c_sp = new_S[:-1], new_G[:-1], new_sp[:-1]
                c_end = starts[1:]
            self._close(c_start, c_end, c_label, c_left, c_S, c_G, c_sp, c_end - a, bstore)
            self.open = {"start": int(starts[-1]), "label": int(labels[-1]), "left": float(new_left[-1]),
                         "S": float(new_S[-1]), "G": float(new_G[-1]), "start_post": float(new_sp[-1])}
        if b == self.T and self.open is not None:
            o = self.open
            self._close(np.array([o["start"]]), np.array([self.T]), np.array([o["label"]]),
                        np.array([o["left"]]), np.array([o["S"]]), np.array([o["G"]]),
                        np.array([o["start_post"]]), np.array([b - a]), bstore)
            self.open = None

    def _close(self, start, end, label, left, S, G, start_post, end_rows, bstore):
        if len(start) == 0:
            return
        start = np.asarray(start, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
        label = np.asarray(label, dtype=np.int64)
        right = self._right_log(end_rows, label, end, bstore)
        log_num = left + right + S + self._log_weight(label, end - start)
        self.parts.append((start, end, label, log_num, np.asarray(start_post, dtype=np.float64),
                           np.asarray(G, dtype=np.float64)))

    def _log_weight(self, labels, d):
        if self.kind == "exact":
            return log_duration_weight(self.pm, labels, d)
        out = log_duration_weight(self.pm, labels, d)
        for c in np.unique(labels).tolist():
            log_self = self.pm.model.transition[c, c]
            if not log_self > -math.inf:
                continue
            sel = labels == c
            need = int(d[sel].max())
            table = self._run_weights.get(c)
            if table is None or len(table) <= need:
                from .cpu_kernels import run_inner_logweight

                n_max = max(need, 2 * (len(table) if table is not None else 0), 64)
                table = run_inner_logweight(n_max, np.ascontiguousarray(self.pm.model.duration[:, c]),
                                            float(self.pm.lrho[c]), float(log_self))
                self._run_weights[c] = table
            out[sel] = table[d[sel]]
        return out

    def finish(self, log_z, zm, zexp):
        if self.parts:
            start, end, label, log_num, start_post, label_sum = (np.concatenate(v) for v in zip(*self.parts))
        else:
            start = end = np.zeros(0, dtype=np.int64)
            label = np.zeros(0, dtype=np.int64)
            log_num = start_post = label_sum = np.zeros(0)
        with np.errstate(over="ignore"):
            seg_post = np.clip(np.exp(log_num - log_z), 0.0, 1.0)
        end_post = np.append(start_post[1:], 1.0) if len(start_post) else np.zeros(0)
        label_post = np.clip(label_sum / np.maximum(end - start, 1), 0.0, 1.0)
        self.calls = SegmentCalls(start, end, label.astype(np.int32), seg_post, start_post,
                                  end_post, label_post)


class SegmentListTracker(SegmentTracker):
    """Posteriors of any list of segments (overlapping, gapped, in any order).

    Same quantities as :class:`SegmentTracker`, for lists that do not tile
    the contig: each segment's emission and gamma sums are accumulated
    piece by piece as chunks pass (a Python step per segment and chunk it
    overlaps, so meant for lists of moderate size). Results come back in the
    order the segments were given.
    """

    def __init__(self, pm, T: int, kind: str, starts, ends, labels):
        super().__init__(pm, T, kind)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        bad = (starts < 0) | (ends > T) | (starts >= ends) | (labels < 0) | (labels >= pm.C)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"segment ({starts[i]}, {ends[i]}, {labels[i]}) is not inside "
                             f"0 <= start < end <= {T} with a label below {pm.C}")
        self.start, self.end, self.label = starts, ends, labels
        n = len(starts)
        self.left = np.full(n, -np.inf)
        self.right = np.full(n, -np.inf)
        self.S = np.zeros(n)
        self.G = np.zeros(n)
        self.start_post = np.ones(n)
        self.end_post = np.ones(n)
        self.by_start = np.argsort(starts, kind="stable")

    def feed(self, a, b, x, gamma, boundary, change, fstore, bstore):
        post = boundary if self.kind == "exact" else change
        st, en, lab = self.start, self.end, self.label
        starting = np.flatnonzero((st >= a) & (st < b))
        if len(starting):
            rows = st[starting] - a
            self.left[starting] = self._left_log(rows, lab[starting], st[starting], fstore)
            self.start_post[starting] = np.where(st[starting] == 0, 1.0, post[rows])
        ending = np.flatnonzero((en > a) & (en <= b))
        if len(ending):
            self.right[ending] = self._right_log(en[ending] - a, lab[ending], en[ending], bstore)
        at_end = np.flatnonzero((en >= a) & (en < b))      # end boundaries inside this chunk
        self.end_post[at_end] = post[en[at_end] - a]
        for i in np.flatnonzero((st < b) & (en > a)).tolist():
            lo, hi, c = max(st[i], a) - a, min(en[i], b) - a, lab[i]
            self.S[i] += x[lo:hi, c].sum()
            self.G[i] += gamma[lo:hi, c].sum()

    def finish(self, log_z, zm, zexp):
        log_num = self.left + self.right + self.S + self._log_weight(self.label, self.end - self.start)
        with np.errstate(over="ignore", invalid="ignore"):
            seg_post = np.clip(np.nan_to_num(np.exp(log_num - log_z), nan=0.0), 0.0, 1.0)
        label_post = np.clip(self.G / (self.end - self.start), 0.0, 1.0)
        self.calls = SegmentCalls(self.start, self.end, self.label.astype(np.int32), seg_post,
                                  self.start_post, self.end_post, label_post)


def tiles(segs: Segments, T: int) -> bool:
    """True when the segments are sorted and cover [0, T) exactly once."""
    return (len(segs) > 0 and segs.start[0] == 0 and segs.end[-1] == T
            and bool(np.all(segs.start[1:] == segs.end[:-1])) and bool(np.all(segs.start < segs.end)))


def merge_runs(segs: Segments) -> Segments:
    """Merge adjacent segments of the same label into runs."""
    if len(segs) == 0:
        return segs
    keep = np.ones(len(segs), dtype=bool)
    keep[1:] = segs.label[1:] != segs.label[:-1]
    starts = segs.start[keep]
    labels = segs.label[keep]
    ends = np.append(starts[1:], segs.end[-1])
    return Segments(starts, ends, labels)
