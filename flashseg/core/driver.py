"""The chunk driver: pass order, checkpoints, traceback, posteriors, sampling.

Shared by every backend (CPU numba, GPU Triton). A backend supplies states
with ``advance(chunk, store)``; the driver never sees their internals.

Pass plan per contig (docs/algorithms.md, "Chunks and output order"):

* Viterbi: max-plus forward keeping one checkpoint per chunk; traceback from
  the contig end recomputes one chunk at a time with argmax pointers.
* Posteriors: a backward pass (the forward of the reversed model on reversed
  emissions) keeps checkpoints; then one left-to-right pass recomputes each
  chunk's backward rows from its checkpoint, runs the forward over it, and
  emits gamma, b and chg in ascending order. The certificate of the linear
  fast path is summed in that pass; if it fails, the contig is recomputed in
  exact log space (consumers get ``restart()``).

  The certificate (docs/algorithms.md, "Linear fast path and its certificate")
  charges each pass's flushed mass against the other pass's computed
  continuation, adds the losses that meet at one boundary, and covers the
  paths both passes lost with a factor from the largest ratio of losses
  entering a label to the entering message computed there (``_certified``).
* Sampling: forward checkpoints from the posterior pass; chunks recomputed
  right to left while every sample walks back through them.
"""
from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from ..errors import DataError, NoValidSegmentation
from .chunks import BadEmission, EmissionChunk, ViterbiStore
from .parallel import add_offsets, offset_log, shift_partition, unscale_partition
from .results import Segments
from .schedule import ChunkParallelSchedule, SequentialSchedule

# Samples walked together (see ContigRun.sample).
SAMPLE_BATCH = 1024

# The fast path is accepted when flushed mass can change Z (and so any
# posterior) by less than this fraction.
CERTIFICATE_TOLERANCE = 1e-13


class UncertifiedError(Exception):
    """The linear fast path could not certify this contig; recompute exactly."""


class Cancelled(Exception):
    """The caller asked this contig to stop (see ``ContigRun(cancel=...)``)."""


class ContigRun:
    """One contig: its emissions, chunk layout, backend and schedule.

    With a ``pool`` (and more than one chunk), every pass runs its chunks at
    once (:class:`~flashseg.core.schedule.ChunkParallelSchedule`), at most
    ``workers`` in flight, guesses led by ``burn_in`` bins (None: the
    default of parallel.py); else one after another.
    """

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
        self.lost = None
        self.certificate = None
        self.cancel = cancel
        if pool is not None and len(self.bounds) > 1:
            self.schedule = ChunkParallelSchedule(self, pool, workers, burn_in)
        else:
            self.schedule = SequentialSchedule(self)
        self.pass_stats = {}   # chunk-parallel passes: parallel.PassStats by pass
        self._read_lock = threading.Lock()
        self._readers = None          # see reading()
        self._reader_users = 0
        self._readers_lock = threading.Lock()

    # -- emissions -----------------------------------------------------------
    def cancelled(self) -> Cancelled:
        return Cancelled(self.name)

    def read(self, j: int) -> EmissionChunk:
        return self.read_range(*self.bounds[j])

    def read_range(self, a: int, b: int) -> EmissionChunk:
        """Emissions of bins [a, b) with their factors; errors name the bin."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(self.name)
        if self.schedule.concurrent and not getattr(self.emissions, "thread_safe", False):
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

                from ..resources import usable_cpus

                self._readers = ThreadPoolExecutor(min(16, usable_cpus()), thread_name_prefix="flashseg-read")
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

    def read_chunks(self, js) -> list:
        """The chunks ``js`` (several at once on the reader threads)."""
        return [self.read(js[0])] if len(js) == 1 else self.read_many([self.bounds[j] for j in js])

    def chunk_of_end(self, pos: int) -> int:
        """The chunk whose rows hold boundary ``pos`` as a segment end (a < pos <= b)."""
        return (pos - 1) // self.chunk

    def chunk_of_start(self, pos: int) -> int:
        """A chunk whose rows hold boundary ``pos`` (a <= pos <= b)."""
        return min(pos // self.chunk, len(self.bounds) - 1)

    def _vanished(self, j: int, local: int):
        raise NoValidSegmentation("no valid segmentation: all paths have probability 0 by here",
                                  contig=self.name or None, bin=self.bounds[j][0] + local)

    # -- Viterbi -------------------------------------------------------------
    def forward_log_partition(self) -> float:
        """log Z from the linear forward pass alone, uncertified (no backward pass)."""
        with self.reading():
            return _partition(self.schedule.end_state("forward"))[0]

    def viterbi(self) -> tuple[float, Segments]:
        """The MAP score and segmentation: a max-plus pass keeping a checkpoint
        per chunk, then the traceback from the contig end, which recomputes
        the argmax pointers of each chunk it visits."""
        from .host_kernels import viterbi_traceback

        with self.reading():
            checkpoints, state = self.schedule.checkpoints("viterbi")
            score, label = _best_final(state)
            if not score > -math.inf:
                raise NoValidSegmentation("no valid segmentation (every path has score -inf)",
                                          contig=self.name or None)

            def pointers(js):
                stores = [ViterbiStore(b - a + 1, self.C) for a, b in (self.bounds[j] for j in js)]
                self.backend.recompute_rows([checkpoints[j] for j in js], self.read_chunks(js), stores)
                return list(zip(js, stores))

            # The walk visits chunks last to first, skipping those inside long segments.
            loader = self.schedule.loader(pointers, range(len(self.bounds) - 1, -1, -1))
            cap = 1024
            out_s, out_e, out_c = (np.empty(cap, dtype=np.int64) for _ in range(3))
            count = 0
            pos, phase = self.T, 2
            j_loaded, store = -1, None
            while phase != 0:
                j = self.chunk_of_end(pos) if phase == 2 else self.chunk_of_start(pos)
                if j != j_loaded:
                    j_loaded, store = loader.get(j)
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
        """Backward pass: checkpoints (reversed-problem states) at every chunk end,
        (logZ, mantissa, exponent) and the final state.

        With ``cache`` (a dict), chunks and their backward rows are kept while
        they fit in ``schedule.CHUNK_CACHE_BYTES``, so the emit pass neither
        reads nor recomputes them; the result is bit for bit the same either way.
        """
        checkpoints, state = self.schedule.checkpoints("backward", self._backward_status, cache)
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
            self._vanished(j, status)
        raise UncertifiedError()

    def posterior_pass(self, consumer=None, trackers=(), keep_forward_checkpoints=False):
        """The backward pass, then the emit pass: the forward pass over every
        chunk in order, its rows combined with the chunk's backward rows into
        gamma, b and chg for ``consumer`` and ``trackers``, and the fast path's
        certificate summed on the way. Returns (logZ, forward checkpoints or
        None)."""
        with self.reading():
            cache = {}
            backward, (log_z, zm, zexp), bend = self.backward_checkpoints(cache)
            rows = self.schedule.forward_rows(backward, cache, keep_forward_checkpoints, self._forward_status)
            try:
                return self._emit(rows, log_z, zm, zexp, bend, consumer, trackers, keep_forward_checkpoints)
            finally:
                rows.close()   # a chunk-parallel helper thread stops before the readers do

    def _emit(self, rows, log_z, zm, zexp, bend, consumer, trackers, keep_forward_checkpoints):
        # Losses of the backward pass flushed before reaching boundary 0.
        cert = _lost_at_end(bend, log_z)
        log_ratio = -math.inf
        carry = np.zeros(self.C)
        nb = len(self.bounds)
        lost_fwd = lost_bwd = False
        width = self.bounds[0][1] - self.bounds[0][0]
        for tr in trackers:
            if hasattr(tr, "begin"):   # trackers that need Z while they are fed
                tr.begin(log_z, zm, zexp)
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
            terms, ratio = self.backend.posterior_chunk(fstore, bstore, *scaled, carry, a, n,
                                                        last, gamma, boundary, change)
            cert += terms
            log_ratio = max(log_ratio, ratio)
            self.certificate = (cert, log_ratio)
            if not self.backend.exact and not _certified(cert, log_ratio, self.T):
                raise UncertifiedError()
            if not self.backend.exact:
                lost_fwd = lost_fwd or fstore.any_loss()
                lost_bwd = lost_bwd or bstore.any_loss()
            for tr in trackers:
                tr.feed(a, b, chunk.x, gamma, boundary, change, fstore, bstore)
            if consumer is not None:
                consumer.chunk(a, gamma, boundary, change)
        fstate, forward_checkpoints = next(rows)
        cert += _lost_at_end(fstate, log_z)
        self.certificate = (cert, log_ratio)
        if not self.backend.exact and not _certified(cert, log_ratio, self.T):
            raise UncertifiedError()
        log_zf, _, _ = _partition(fstate)
        if not abs(log_zf - log_z) <= 1e-9 * max(1.0, abs(log_z)):
            if not self.backend.exact:
                raise UncertifiedError()
            raise AssertionError(f"forward and backward disagree: {log_zf} vs {log_z}")
        self.lost = (lost_fwd, lost_bwd)   # which linear passes flushed anything (diagnostics)
        for tr in trackers:
            tr.finish(log_z, zm, zexp)
        return log_z, (forward_checkpoints if keep_forward_checkpoints else None)

    # -- sampling ------------------------------------------------------------
    def sample(self, n: int, seed: int, forward_checkpoints, sink=None) -> list[Segments]:
        """``n`` posterior samples, walked back from the contig end chunk by chunk
        (sampling.py) through rows recomputed from ``forward_checkpoints``; the
        backend walks every sample of a batch through a chunk (on the GPU in one
        launch). Batches of SAMPLE_BATCH samples bound the walks' working memory
        and the time to notice a cancel; each sample's stream depends on its
        index only, so batching changes nothing. With ``sink``, each batch goes
        to ``sink(first_index, samples)`` instead of the returned list."""
        out = []
        for first in range(0, n, SAMPLE_BATCH):
            batch = self._sample_batch(first, min(SAMPLE_BATCH, n - first), seed, forward_checkpoints)
            if sink is not None:
                sink(first, batch)     # streamed: memory stays one batch whatever n is
            else:
                out.extend(batch)
        return out

    def _sample_batch(self, first: int, n: int, seed: int, forward_checkpoints) -> list[Segments]:
        from .sampling import SampleWalk, sample_seeds

        K = self.backend.fwd.K
        rngs = [np.random.default_rng(s) for s in sample_seeds(seed, self.name, n, first)]
        walks = [SampleWalk(self.T) for _ in range(n)]

        def rows(js):
            chunks = self.read_chunks(js)
            stores = [self.backend.new_store(b - a + 1, with_tail=True) for a, b in (self.bounds[j] for j in js)]
            self.backend.recompute_rows([forward_checkpoints[j] for j in js], chunks, stores)
            out = []
            for j, chunk, store in zip(js, chunks, stores):
                store.log_offset = forward_checkpoints[j].scale_offset
                out.append((j, chunk, self.backend.sample_rows(store)))
            return out

        order = range(len(self.bounds) - 1, -1, -1)
        with self.reading():
            loader = self.schedule.loader(rows, order)
            for j in order:
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled(self.name)
                _, chunk, rows_j = loader.get(j)
                a, b = self.bounds[j]
                ck = forward_checkpoints[j]

                def ring_log(label, ck=ck):
                    off = offset_log(ck.scale_offset)
                    return np.array([ck.log_ring_entry(label, slot) - off for slot in range(K)])

                self.backend.walk_chunk(walks, rngs, a, b, chunk, rows_j, ring_log)
        return [walk.segments() for walk in walks]


def _certified(terms: float, log_ratio: float, T: int) -> bool:
    """The fast path's certificate (docs/algorithms.md, "Linear fast path and its
    certificate"): the losses' terms, times 1 / (1 - (T + 1) * ratio) for the
    paths both passes lost, at most CERTIFICATE_TOLERANCE; the factor must be
    at most 2 (else the bound is not worth having)."""
    if log_ratio > -math.inf:
        spread = math.log(T + 1) + log_ratio
        if not spread <= -math.log(2.0):
            return False
        terms /= 1.0 - math.exp(spread)
    return terms <= CERTIFICATE_TOLERANCE


def _best_final(state) -> tuple[float, int]:
    """The best final score and label, on the true scale."""
    score, label = state.best_final()
    return score - offset_log(state.scale_offset), label


def _partition(state) -> tuple[float, float, int]:
    """(logZ, mantissa, exponent) of a final state, on the true scale."""
    return unscale_partition(*state.log_partition(), state.scale_offset)


def _lost_at_end(state, log_z: float) -> float:
    return state.lost_at_end(log_z + offset_log(state.scale_offset))
