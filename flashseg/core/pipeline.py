"""The emit pass's consumers on one helper thread, behind the passes
(only :mod:`flashseg.core.api` uses this module).

An E-step does three things per chunk: the forward rows, their combination
with the backward rows into posteriors (both in the pass), and the expected
counts and emission statistics (consumers). The consumers' work depends only
on the rows, so with two threads it runs on a helper while the pass computes
the next chunk. Jobs run one at a time in submission order, so every sum is
added in the same order as in the calling thread: results are the same bit
for bit. At most ``DEPTH`` chunks wait, so memory stays bounded.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

DEPTH = 2


class Pipeline:
    """``with Pipeline() as pipe:`` wrap a tracker and a consumer with
    :meth:`tracker` and :meth:`consumer` and hand them to the pass; leaving
    the block waits for every job (and raises a job's error, unless the block
    already raised one)."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flashseg-consumer")
        self._pending = deque()

    def submit(self, fn, *args):
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > DEPTH:
            self._pending.popleft().result()

    def drain(self):
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.drain()
            else:   # the pass failed: let queued jobs finish (they touch the consumers), keep its error
                for job in self._pending:
                    job.exception()
                self._pending.clear()
        finally:
            self._pool.shutdown(wait=True)
        return False

    def tracker(self, tracker):
        return _Tracker(self, tracker)

    def consumer(self, consumer):
        return None if consumer is None else _Consumer(self, consumer)


class _Tracker:
    """An :class:`~flashseg.core.expected.ExpectedCountsTracker` fed through the pipeline."""

    def __init__(self, pipe, tracker):
        self.pipe, self.inner = pipe, tracker

    def begin(self, log_z, zm, zexp):
        self.inner.begin(log_z, zm, zexp)

    def feed(self, a, b, x, gamma, boundary, change, fstore, bstore):
        self.pipe.submit(self.inner.accumulate, *self.inner.prepare(a, b, x, fstore, bstore))

    def finish(self, log_z, zm, zexp):
        self.pipe.drain()
        self.inner.finish(log_z, zm, zexp)


class _Consumer:
    """A per-bin consumer fed copies of the pass's buffers through the pipeline."""

    def __init__(self, pipe, consumer):
        self.pipe, self.inner = pipe, consumer

    def chunk(self, start, gamma, boundary, change):
        self.pipe.submit(self.inner.chunk, start, gamma.copy(), boundary.copy(), change.copy())
