"""Chunk-parallel passes: every chunk of one contig advanced at once, then certified.

Each pass of the chunk driver (forward, backward, max-plus) is one sequential
chain: chunk j starts from the state in which chunk j - 1 ended. On one long
contig that chain keeps one core (or one GPU multiprocessor) busy and leaves
the rest idle. Here every chunk instead starts from a *guess*: a fresh state
placed ``burn_in`` bins before the chunk, every label equally likely to start
there, advanced over those bins. A semi-Markov chain forgets where it
started, so after the burn-in the guess is, up to rounding, the true state
times one constant (log space: plus one constant). All chunks run on a
thread pool at once; then, in chunk order, each guess is checked against the
end state of the previous chunk (itself certified):

* the same values are zero (or -inf), the same tails are live (max-plus:
  started at the same bin), and
* every carried value gives the same ratio within ``JUNCTION_TOLERANCE``
  (plus the rounding that log-space values carry at their magnitude).

The recursions are linear with non-negative coefficients (max-plus: they
commute with adding a constant), so everything computed from an accepted
guess is the true value times the same constant within that relative
tolerance. The constant is kept as the state's ``scale_offset`` ``(k, r)``
(values = true values x 2**k x e**r, ``|r| <= ln 2 / 2``); the driver
removes it where absolute values matter (logZ, posteriors, the MAP score,
the certificate). A rejected guess costs a sequential re-run of its chunk
from the previous chunk's end state, which is exact: a rejection changes no
number, only the speed. Accepted guesses move results within the band their
junctions measured (``PassStats.band``; docs/algorithms.md, "What threads
and chunk sizes change"). The re-run stops early where it
meets the guess's own chain at an inner boundary of the chunk (a junction
test there; chunks whose rows are not kept), and the burn-in of later chunks
doubles. Flushes of the linear fast path stay certified: a guess starts its
chunk with no ghosts, and the losses carried into the chunk are restored
afterwards (ghosts are carried through a chunk by adding its scores, per
label, as the kernel does); values so far below their state's largest that
the two chains may have flushed them at different bins are left out of the
ratio test and charged to the ghosts (``NEGLIGIBLE_LOG``).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .numeric import LN2_HI, LN2_LO

# Accepted guesses match the true state to this relative error in every value
# (errors add up over the junctions of a contig: PassStats.band).
JUNCTION_TOLERANCE = 1e-12
# Log-space values carry absolute rounding of their own magnitude: this many
# units in the last place of the largest value are allowed on top.
LOG_ULPS = 64


def burn_in_bins(K: int) -> int:
    """Bins a guess runs before its chunk: several maximal segments, so that
    every ring entry at the chunk start was written after the chain forgot."""
    return 8 * K + 256


def normalise(k: int, r: float) -> tuple[int, float]:
    """The same factor 2**k e**r with |r| <= ln 2 / 2."""
    q = math.floor(r / (LN2_HI + LN2_LO) + 0.5)
    return int(k + q), (r - q * LN2_HI) - q * LN2_LO


def add_offsets(a, b) -> tuple[int, float]:
    """The product of two factors (log-space offsets, k = 0, are added as they are)."""
    if not a[0] and not b[0]:
        return 0, a[1] + b[1]
    return normalise(a[0] + b[0], a[1] + b[1])


def offset_log(offset) -> float:
    """The natural log of an offset's factor (for logs of moderate size)."""
    k, r = offset
    return k * LN2_HI + k * LN2_LO + r


def unscale_partition(log_z: float, zm: float, zexp: int, offset) -> tuple[float, float, int]:
    """(logZ, mantissa, exponent) of a partition computed from values scaled by ``offset``."""
    return shift_partition(log_z, zm, zexp, (-offset[0], -offset[1]))


def shift_partition(log_z: float, zm: float, zexp: int, offset) -> tuple[float, float, int]:
    """Z times the offset's factor, in the driver's three forms."""
    if not offset[0] and not offset[1]:
        return log_z, zm, zexp
    if not zm > 0.0:
        return log_z, zm, zexp
    k, r = normalise(*offset)
    m, e = math.frexp(zm * math.exp(r))
    zexp = int(zexp + k + e)
    return math.log(m) + zexp * LN2_HI + zexp * LN2_LO, m, zexp


# Linear-space values this far below their state's largest are within reach
# of the fast path's flushes (2**-736 below the running scale): the two chains
# may have flushed them at different times (their per-label products rebase
# at different bins). They are left out of the ratio test and charged to the
# ghosts instead, like a flush.
NEGLIGIBLE_LOG = -500.0 * math.log(2.0)


class Junction(NamedTuple):
    """An accepted junction: guess = exact x 2**k e**r in every carried value,
    each within ``spread / 2`` in log; ``charge`` (linear states, else None)
    the per-label log mass, in the guess's scale, to add to the guess's
    ghosts for negligible values the two chains do not share."""

    k: int
    r: float
    charge: np.ndarray | None
    spread: float


def junction_offset(exact, guess, tolerance: float = JUNCTION_TOLERANCE) -> Junction | None:
    """The :class:`Junction` of two states at the same boundary, or None (see
    the module docstring)."""
    if exact.t != guess.t:
        raise AssertionError(f"junction at boundaries {exact.t} and {guess.t}")
    ve, ee, te = exact.junction_view()
    vg, eg, tg = guess.junction_view()
    if te is not None and not np.array_equal(te, tg):
        return None
    fe, fg = np.isfinite(ve), np.isfinite(vg)
    if not fe.any() or not fg.any():
        return None
    linear = hasattr(guess, "set_ghost")
    if linear:
        tiny_e = ~fe | (ve - ve[fe].max() < NEGLIGIBLE_LOG)
        tiny_g = ~fg | (vg - vg[fg].max() < NEGLIGIBLE_LOG)
        negligible = tiny_e & tiny_g
    else:
        negligible = np.zeros(len(ve), dtype=bool)
    live = fe & ~negligible
    if not np.array_equal(live, fg & ~negligible) or not live.any():
        return None
    diff = vg[live] - ve[live]
    lo, hi = float(diff.min()), float(diff.max())
    magnitude = max(float(np.abs(ve[live]).max()), float(np.abs(vg[live]).max()))
    if not hi - lo <= 2.0 * tolerance + LOG_ULPS * np.finfo(np.float64).eps * magnitude:
        return None
    mid = 0.5 * (lo + hi)
    charge = None
    if linear:
        shared = negligible & fe & fg
        shared[shared] = np.abs(vg[shared] - ve[shared] - mid) <= 2.0 * tolerance
        owed = negligible & (fe | fg) & ~shared
        if owed.any():
            # Either chain's value, in the guess's scale, per label; the factor
            # covers the flush units the kernels charge (K + 1 for A, C for E).
            C = len(exact.A)
            K = (len(ve) - 3 * C) // C
            labels = np.concatenate([np.repeat(np.arange(C), K), np.tile(np.arange(C), 3)])
            value = np.fmax(vg, ve + mid)[owed] + eg * (LN2_HI + LN2_LO) + math.log(K + C + 2)
            charge = np.full(C, -np.inf)
            np.logaddexp.at(charge, labels[owed], value)
    if not linear and eg == ee:
        return Junction(0, mid, None, hi - lo)   # log space: one added constant, kept (exact ties stay exact)
    k, r = normalise(eg - ee, mid)
    return Junction(k, r, charge, hi - lo)


@dataclass
class PassStats:
    """How a chunk-parallel pass went: guesses accepted and chunks re-run in sequence."""

    accepted: int = 0
    rerun: int = 0
    rerun_bins: int = 0   # bins the re-runs advanced in sequence before their chain met the guess's
    # Sum of the accepted junctions' half-spreads: every value of the pass is
    # within this (in log, plus rounding) of the one-thread pass's value.
    band: float = 0.0


# A chunk whose rows are not kept is advanced in this many parts, its guess's
# state kept at the inner boundaries: a re-run from the exact state stops at
# the first of them where the two chains meet (a later junction test).
PARTS = 4


@dataclass
class _Piece:
    guess: object        # state at the chunk's first boundary; None if the guess died in its burn-in
    end: object          # state after the chunk, advanced from the guess
    status: int          # the chunk's advance status (-1, or the local bin where all mass vanished)
    chunk: object = None  # the chunk's emissions (None if the guess died first)
    store: object = None  # the chunk's rows, when the pass keeps them
    inner: list = None    # the guess's states at the inner part boundaries (no rows kept)


def split_chunk(chunk, reverse: bool, parts: int):
    """(steps before, part) for ``parts`` consecutive parts of a chunk in the
    order a pass reads it (``reverse``: last row first), sharing its arrays."""
    from .chunks import EmissionChunk

    n = len(chunk.x)
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    out = []
    for i in range(parts):
        if cuts[i + 1] == cuts[i]:
            continue
        lo, hi = (n - cuts[i + 1], n - cuts[i]) if reverse else (cuts[i], cuts[i + 1])
        out.append((cuts[i], EmissionChunk(chunk.x[lo:hi], chunk.f[lo:hi], chunk.k[lo:hi], reverse)))
    return out


class ChunkPass:
    """One pass (``"forward"``, ``"backward"`` or ``"viterbi"``) over a contig, chunk-parallel.

    ``run``: the driver's ContigRun (emissions, chunk bounds, backend);
    ``pool``: a concurrent.futures executor; ``workers``: its size (bounds the
    chunks in flight). :meth:`run` returns the checkpoints (the state at the
    start of every chunk, indexed by chunk) and the final state, both
    carrying ``scale_offset``; ``on_status(j, status, state)`` is called in
    processing order and raises as the sequential pass would.
    """

    def __init__(self, run, kind: str, pool, workers: int, burn_in: int | None = None, keep=None, emit=None):
        if kind not in ("forward", "backward", "viterbi"):
            raise ValueError(f"unknown pass {kind!r}")
        self.run_ = run
        self.kind = kind
        self.pool = pool
        # A backend that advances many chunks per launch (the GPU) takes them in
        # batches, two in flight; otherwise one chunk per pool task, twice the
        # workers in flight.
        self.batch = run.backend.batch_size(workers)
        self.window = 2 * self.batch if self.batch > 1 else max(2, 2 * int(workers))
        self.burn_in = burn_in_bins(run.backend.fwd.K) if burn_in is None else int(burn_in)
        # A rejected guess doubles the burn-in of later chunks, up to this
        # (a burn-in given explicitly stays as it is).
        self.max_burn_in = max(self.burn_in, run.chunk) if burn_in is None else self.burn_in
        self.stats = PassStats()
        # keep(j): a store for chunk j's rows (or None); kept rows end up in
        # self.rows[j], or go to emit(j, chunk, store) in chunk order.
        self.keep = keep
        self.emit = emit
        self.rows = {}

    # -- one chunk, on a worker ---------------------------------------------
    def _fresh(self, batch: int | None = None):
        backend = self.run_.backend
        kw = {} if batch is None else {"batch": batch}
        if self.kind == "viterbi":
            return backend.viterbi_state(**kw)
        return backend.forward_state(backward=self.kind == "backward", **kw)

    def _oriented(self, chunk):
        return chunk.reversed() if self.kind == "backward" else chunk

    def _span(self, j: int, burn_in: int):
        """(lo, hi, first) of chunk j's guess: its burn-in bins [lo, hi), and the
        boundary (of the pass's own problem) where it starts, or None when the
        burn-in reaches the contig's start (then it is no guess)."""
        run = self.run_
        a, b = run.bounds[j]
        if self.kind == "backward":
            # The reversed problem: boundaries count bins from the contig end.
            lo, hi = b, min(run.T, b + burn_in)
            return lo, hi, (None if hi == run.T else run.T - hi)
        lo, hi = max(0, a - burn_in), a
        return lo, hi, (None if lo == 0 else lo)

    def _speculate(self, j: int, store=None, burn_in: int = 0) -> _Piece:
        run = self.run_
        with run.backend.worker_context():
            state = self._fresh()
            lo, hi, first = self._span(j, burn_in)
            if first is not None:
                state.as_guess(first)
            if hi > lo:
                status = state.advance(self._oriented(run.read_range(lo, hi)))
                if status >= 0:
                    return _Piece(None, None, -1, None, store)
            if hasattr(state, "set_ghost"):
                state.set_ghost(np.full(run.C, -np.inf))
            guess = state.copy()
            chunk = run.read(j)
            if store is not None:
                status = state.advance(self._oriented(chunk), store)
                return _Piece(guess, state, status, chunk, store)
            inner = []
            status = -1
            for before, part in split_chunk(chunk, self.kind == "backward", PARTS):
                if before:
                    inner.append(state.copy())
                status = state.advance(part)
                if status >= 0:
                    status += before
                    break
            return _Piece(guess, state, status, chunk, None, inner)

    def _speculate_batch(self, jobs, burn_in: int) -> list:
        """:meth:`_speculate` for the chunks of ``jobs`` ((j, store) pairs, all
        keeping rows or none) at once: every launch advances one row per chunk
        (the backend's ``advance_rows``), and the rows' states are handed out
        as views, their host values read in one copy per batch."""
        run = self.run_
        B = len(jobs)
        with run.backend.worker_context():
            spans = [self._span(j, burn_in) for j, _ in jobs]
            ranges = []
            for (lo, hi, _), (j, _) in zip(spans, jobs):
                ranges += [(lo, hi), run.bounds[j]]
            read = run.read_many(ranges)          # in the order the chunks' own tasks would fail
            chunks = read[1::2]
            state = self._fresh(B)
            state.as_guess_rows([first for _, _, first in spans])
            dead = state.advance_rows([None if c is None else self._oriented(c) for c in read[0::2]]) >= 0
            if hasattr(state, "set_ghost"):
                state.set_ghost(np.full(run.C, -np.inf))
            guess = state.copy()
            if jobs[0][1] is not None:
                stores = [None if dead[b] else store for b, (_, store) in enumerate(jobs)]
                status = state.advance_rows([None if dead[b] else self._oriented(c) for b, c in enumerate(chunks)],
                                            stores)
                inner = [None] * B
            else:
                status, inner = self._advance_parts(state, chunks, dead)
            guesses, ends = guess.rows(host=True), state.rows(host=True)
        return [_Piece(None, None, -1, None, store) if dead[b] else
                _Piece(guesses[b], ends[b], int(status[b]), chunks[b], store, inner[b])
                for b, (_, store) in enumerate(jobs)]

    def _advance_parts(self, state, chunks, dead):
        """A batch's chunks in PARTS parts (as :meth:`_speculate`): (statuses, each
        row's states at its inner part boundaries)."""
        B = len(chunks)
        parts = [split_chunk(c, self.kind == "backward", PARTS) for c in chunks]
        inner = [[] for _ in range(B)]
        status = np.full(B, -1, dtype=np.int64)
        for p in range(PARTS):
            live = [not dead[b] and status[b] < 0 and p < len(parts[b]) for b in range(B)]
            if not any(live):
                break
            if any(live[b] and parts[b][p][0] for b in range(B)):
                snapshot = state.copy().rows()
                for b in range(B):
                    if live[b] and parts[b][p][0]:
                        inner[b].append(snapshot[b])
            got = state.advance_rows([parts[b][p][1] if live[b] else None for b in range(B)])
            for b in range(B):
                if live[b] and got[b] >= 0:
                    status[b] = got[b] + parts[b][p][0]
        return status, inner

    def _sequential(self, j: int, start, piece: _Piece):
        """Chunk j from an exact start state, in the calling thread.

        Returns (end state, status, meeting): without kept rows, the exact
        chain stops where it meets the guess's chain at an inner boundary;
        ``meeting`` is then (exact state there, junction, scores still ahead)
        and the end state is the guess's, else None.
        """
        if piece.chunk is None:
            piece.chunk = self.run_.read(j)
        chunk, store = piece.chunk, piece.store
        n = len(chunk.x)
        exact = start.copy()
        if store is not None or not piece.inner:
            if store is not None:
                store.clear_flags()
            status = exact.advance(self._oriented(chunk), store)
            self.stats.rerun_bins += n
            return exact, status, None
        for i, (before, part) in enumerate(split_chunk(chunk, self.kind == "backward", PARTS)):
            if i > 0 and i - 1 < len(piece.inner):
                junction = junction_offset(exact, piece.inner[i - 1])
                if junction is not None:
                    self.stats.band += junction.spread / 2
                    ahead = chunk.x[:n - before] if self.kind == "backward" else chunk.x[before:]
                    return piece.end, piece.status, (exact, junction, ahead)
            status = exact.advance(part)
            self.stats.rerun_bins += len(part.x)
            if status >= 0:
                return exact, status + before, None
        return exact, -1, None

    @staticmethod
    def _adopt_guess_end(end, exact, junction, ahead) -> None:
        """The guess's chain met the exact one inside the chunk: its end state,
        on the exact scale, with the exact chain's ghosts carried to the end."""
        k, r, charge, _ = junction
        end.scale_offset = add_offsets(exact.scale_offset, (k, r))
        if hasattr(end, "set_ghost"):
            carried = exact.ghost + offset_log((k, r)) + ahead.sum(axis=0)
            if charge is not None:
                carried = np.logaddexp(carried, charge + ahead.sum(axis=0))
            end.set_ghost(np.logaddexp(carried, end.ghost))

    # -- the certified chain, in the calling thread --------------------------
    def run(self, on_status=None):
        run = self.run_
        nb = len(run.bounds)
        order = list(range(nb)) if self.kind != "backward" else list(range(nb - 1, -1, -1))
        pending = deque()   # futures of the pieces of one chunk, or of a batch
        ready = deque()     # pieces of a finished batch not yet certified
        queued = 0          # chunks submitted and not yet certified
        submitted = 0
        held = []           # a chunk that keeps rows differently from the batch before it

        def top_up():
            nonlocal submitted, queued
            while (submitted < len(order) or held) and queued < self.window:
                jobs = held[:]
                held.clear()
                while len(jobs) < self.batch and submitted < len(order):
                    j = order[submitted]
                    submitted += 1
                    store = self.keep(j) if self.keep is not None else None
                    if jobs and (store is None) != (jobs[0][1] is None):
                        held.append((j, store))   # a batch keeps rows for all its chunks or none
                        break
                    jobs.append((j, store))
                if self.batch > 1:
                    pending.append(self.pool.submit(self._speculate_batch, jobs, self.burn_in))
                else:
                    (j, store), = jobs
                    pending.append(self.pool.submit(lambda j=j, store=store, burn_in=self.burn_in:
                                                    [self._speculate(j, store, burn_in)]))
                queued += len(jobs)

        checkpoints = [None] * nb
        prev = None
        try:
            top_up()
            for i, j in enumerate(order):
                if not ready:
                    ready.extend(pending.popleft().result())
                piece = ready.popleft()
                queued -= 1
                top_up()
                meeting = None
                if i == 0:
                    start, end, status = piece.guess, piece.end, piece.status
                    restore = True
                else:
                    junction = None if piece.guess is None else junction_offset(prev, piece.guess)
                    if junction is None:
                        self.stats.rerun += 1
                        # Slow mixing (max-plus paths may take tens of
                        # thousands of bins to coalesce): longer burn-ins for
                        # the chunks not yet submitted.
                        self.burn_in = min(self.max_burn_in, 2 * max(self.burn_in, 1))
                        start = prev.copy()
                        end, status, meeting = self._sequential(j, start, piece)
                        restore = False    # advanced from the exact state: its ghosts carried through
                        if meeting is not None:
                            self._adopt_guess_end(end, *meeting)
                    else:
                        self.stats.accepted += 1
                        self.stats.band += junction.spread / 2
                        start, end, status = piece.guess, piece.end, piece.status
                        k, r, charge, _ = junction
                        start.scale_offset = add_offsets(prev.scale_offset, (k, r))
                        if hasattr(start, "set_ghost"):
                            ghost = prev.ghost + offset_log((k, r))
                            start.set_ghost(ghost if charge is None else np.logaddexp(ghost, charge))
                        restore = True
                if restore or meeting is None:
                    end.scale_offset = start.scale_offset
                chunk = piece.chunk
                if restore and hasattr(end, "set_ghost"):
                    x = chunk.x[::-1] if self.kind == "backward" else chunk.x
                    end.set_ghost(np.logaddexp(start.ghost + x.sum(axis=0), end.ghost))
                    if piece.store is not None:
                        piece.store.add_carried_ghost(start.ghost, x)
                if piece.store is not None:
                    piece.store.log_offset = start.scale_offset
                run.backend.settle()   # what this thread did to the states is done
                if on_status is not None and status >= 0:
                    on_status(j, status, end)
                if piece.store is not None:
                    if self.emit is not None:
                        self.emit(j, chunk, piece.store)
                    else:
                        self.rows[j] = (chunk, piece.store)
                checkpoints[j] = start
                prev = end
        finally:
            for fut in pending:
                fut.cancel()
        return checkpoints, prev


def prefetch(pool, workers: int, fn, items, window: int | None = None):
    """Yield fn(item) for items in order, computing up to ``window`` (default
    workers + 2) ahead on ``pool`` (results wait in memory: rows of a chunk
    each, so no further)."""
    window = int(workers) + 2 if window is None else int(window)
    items = list(items)
    pending = deque()
    nxt = 0
    try:
        while nxt < len(items) or pending:
            while nxt < len(items) and len(pending) < window:
                pending.append(pool.submit(fn, items[nxt]))
                nxt += 1
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
