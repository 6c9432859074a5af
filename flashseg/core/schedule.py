"""How the passes of one contig run over its chunks: in sequence, or every
chunk of a pass at once (docs/algorithms.md, "Chunks and output order" and
"Chunk-parallel passes").

The pass plan (``driver.ContigRun``) is written once against this interface:

``end_state(kind)``
    The state at the contig end after one pass that keeps nothing.
``checkpoints(kind, on_status=None, cache=None)``
    One pass keeping the state at the start of every chunk (the backward
    pass: of the reversed problem, at every chunk end); returns
    (checkpoints by chunk, final state). ``on_status(j, status, state)`` is
    called where all mass vanished. With ``cache`` (a dict), chunks and their
    rows are kept there for a later pass, as far as ``CHUNK_CACHE_BYTES``
    allows.
``forward_rows(backward_checkpoints, cache, keep_checkpoints)``
    The forward pass of the emit pass: yields (chunk, forward rows, flipped
    backward rows) for every chunk in order, backward rows recomputed from
    their checkpoints unless cached, then (final forward state, forward
    checkpoints or None).
``loader(rows_of, order)``
    ``get(j)`` for chunks in ``order`` (a walk that may skip some), where
    ``rows_of(group)`` computes a group's results: on demand in sequence,
    ahead on the pool when chunk-parallel.

A :class:`SequentialSchedule` runs one chunk after another in the calling
thread; a :class:`ChunkParallelSchedule` runs them on a pool (parallel.py).
Results are the same bit for bit except for the chunk-parallel passes' scale
offsets (see parallel.py).
"""
from __future__ import annotations

import os
import queue
import threading

from .parallel import ChunkPass, prefetch

# Per contig, the backward pass keeps up to this many bytes of chunks and
# their backward rows for the emit pass (instead of reading and recomputing
# them). It bounds memory whatever the contig length: beyond it, chunks are
# recomputed from checkpoints as usual. FLASHSEG_CHUNK_CACHE_MB overrides it.
CHUNK_CACHE_BYTES = int(float(os.environ.get("FLASHSEG_CHUNK_CACHE_MB", "256")) * (1 << 20))


class _RowBudget:
    """Stores for chunks whose rows a pass keeps, within CHUNK_CACHE_BYTES."""

    def __init__(self, run):
        self.run = run
        self.left = CHUNK_CACHE_BYTES

    def store(self, j):
        a, b = self.run.bounds[j]
        cost = (b - a + 1) * (self.run.C * 40 + 16)   # x, f, E, A, ghost rows; k, sexp
        if cost > self.left:
            return None
        self.left -= cost
        return self.run.backend.new_store(b - a + 1)


class SequentialSchedule:
    """Every pass one chunk after another, in the calling thread."""

    concurrent = False

    def __init__(self, run):
        self.run = run

    def _order(self, kind):
        n = len(self.run.bounds)
        return range(n - 1, -1, -1) if kind == "backward" else range(n)

    def _fresh(self, kind):
        backend = self.run.backend
        return backend.viterbi_state() if kind == "viterbi" else backend.forward_state(backward=kind == "backward")

    def end_state(self, kind):
        return self.checkpoints(kind, keep=False)[1]

    def checkpoints(self, kind, on_status=None, cache=None, keep=True):
        run = self.run
        state = self._fresh(kind)
        checkpoints = [None] * len(run.bounds)
        budget = _RowBudget(run) if cache is not None else None
        for j in self._order(kind):
            if keep:
                checkpoints[j] = state.copy()
            chunk = run.read(j)
            store = budget.store(j) if budget is not None else None
            if store is not None:
                cache[j] = (chunk, store)
            status = state.advance(chunk.reversed() if kind == "backward" else chunk, store)
            if status >= 0 and on_status is not None:
                on_status(j, status, state)
        return checkpoints, state

    def forward_rows(self, backward_checkpoints, cache, keep_checkpoints, on_status):
        run = self.run
        backend = run.backend
        state = backend.forward_state()
        forward_checkpoints = [] if keep_checkpoints else None
        # One set of buffers for the whole pass (consumers copy what they keep).
        width = run.bounds[0][1] - run.bounds[0][0]
        fbuf = backend.new_store(width + 1)
        bbuf = None
        for j, (a, b) in enumerate(run.bounds):
            n = b - a
            if j in cache:
                chunk, bstore = cache.pop(j)
            else:
                chunk = run.read(j)
                if bbuf is None:
                    bbuf = backend.new_store(width + 1)
                bstore = bbuf.head(n + 1)
                backward_checkpoints[j].copy().advance(chunk.reversed(), bstore)
            if forward_checkpoints is not None:
                forward_checkpoints.append(state.copy())
            fstore = fbuf.head(n + 1)
            status = state.advance(chunk, fstore)
            if status >= 0:
                on_status(j, status, state)
            yield chunk, fstore, bstore.flipped()
        yield state, forward_checkpoints

    def loader(self, rows_of, order):
        return _OnDemand(rows_of)


class ChunkParallelSchedule:
    """Every chunk of a pass at once on ``pool`` (at most ``workers`` chunks in
    flight), each started from a guess certified at its junction (parallel.py);
    results carry scale offsets."""

    concurrent = True

    def __init__(self, run, pool, workers: int, burn_in: int | None = None):
        self.run = run
        self.pool = pool
        self.workers = max(1, int(workers))
        self.burn_in = burn_in

    def end_state(self, kind):
        return self.checkpoints(kind)[1]

    def checkpoints(self, kind, on_status=None, cache=None, emit=None):
        """With ``emit``, every chunk's rows are computed and handed to
        ``emit(j, chunk, store)`` in chunk order as soon as it is certified."""
        run = self.run
        if emit is not None:
            def keep(j):
                a, b = run.bounds[j]
                return run.backend.new_store(b - a + 1)
        else:
            keep = _RowBudget(run).store if cache is not None else None
        chunk_pass = ChunkPass(run, kind, self.pool, self.workers, self.burn_in, keep, emit)
        with run.reading():
            out = chunk_pass.run(on_status)
        run.pass_stats[kind] = chunk_pass.stats
        if cache is not None:
            cache.update(chunk_pass.rows)
        return out

    def _ahead(self, fn, items, window=None):
        """fn(item) for items in order, computed ahead on the pool."""
        backend = self.run.backend

        def on_worker(item):
            with backend.worker_context():
                return fn(item)

        return prefetch(self.pool, self.workers, on_worker, items, window)

    def _groups_ahead(self, rows_of, items):
        """rows_of(group) for consecutive groups of ``items``, as large as the
        backend advances at once (two groups ahead), or one item at a time
        (workers + 2 ahead); yields the items' results in order."""
        size = self.run.backend.batch_size(self.workers)
        items = list(items)
        if size == 1:
            return self._ahead(lambda item: rows_of([item])[0], items)
        groups = [items[i:i + size] for i in range(0, len(items), size)]
        return (r for group in self._ahead(rows_of, groups, window=2) for r in group)

    def forward_rows(self, backward_checkpoints, cache, keep_checkpoints, on_status):
        """The forward pass runs every chunk at once (on a helper thread) and
        hands over each chunk's rows as soon as it is certified; backward rows
        not kept by the backward pass are recomputed ahead on the pool."""
        run = self.run
        batch = run.backend.batch_size(self.workers)
        handed = queue.Queue(maxsize=(batch if batch > 1 else self.workers) + 2)
        stop = threading.Event()

        def emit(j, chunk, store):
            while True:
                try:
                    handed.put((j, chunk, store), timeout=0.1)
                    return
                except queue.Full:
                    if stop.is_set():
                        raise run.cancelled() from None

        def forward():
            try:
                result = self.checkpoints("forward", on_status, emit=emit)
            except BaseException as exc:   # handed to the consumer thread
                result = exc
            while not stop.is_set():
                try:
                    handed.put(result, timeout=0.1)
                    return
                except queue.Full:
                    pass

        def backward_rows(js):
            out = {j: cache.pop(j)[1] for j in js if j in cache}
            todo = [j for j in js if j not in out]
            if todo:
                stores = [run.backend.new_store(b - a + 1) for a, b in (run.bounds[j] for j in todo)]
                chunks = [c.reversed() for c in run.read_chunks(todo)]
                run.backend.recompute_rows([backward_checkpoints[j] for j in todo], chunks, stores)
                for j, store in zip(todo, stores):
                    store.log_offset = backward_checkpoints[j].scale_offset
                    out[j] = store
            return [out[j] for j in js]

        helper = threading.Thread(target=forward, name="flashseg-forward", daemon=True)
        helper.start()
        try:
            bstores = self._groups_ahead(backward_rows, range(len(run.bounds)))
            for _ in run.bounds:
                item = handed.get()
                if isinstance(item, BaseException):
                    raise item
                _, chunk, fstore = item
                yield chunk, fstore, next(bstores).flipped()
            item = handed.get()
            if isinstance(item, BaseException):
                raise item
            checkpoints, end = item
            yield end, checkpoints
        finally:
            stop.set()
            helper.join()

    def loader(self, rows_of, order):
        return _Ahead(self._groups_ahead(rows_of, order))


class _OnDemand:
    """``get(j)``: rows_of([j]) when asked for."""

    def __init__(self, rows_of):
        self.rows_of = rows_of

    def get(self, j):
        return self.rows_of([j])[0]


class _Ahead:
    """``get(j)`` along an iterator of (j, result) computed ahead; chunks the
    caller skips are passed over."""

    def __init__(self, results):
        self.results = results

    def get(self, j):
        while True:
            item = next(self.results)
            if item[0] == j:
                return item
