"""Posterior sampling's walks (docs/algorithms.md, "Sampling").

Every sample walks back from the contig end, chunk by chunk, through the
forward rows the driver recomputes for each chunk. The walk itself is a
resumable kernel (``cpu_kernels.sample_walk`` on the host, the Triton
``sample_walk_kernel`` on the GPU) that stops whenever it needs something
only the caller has: more uniforms of its random stream, room for more
segments, or a label's ring entries from the chunk's checkpoint. This
module holds what both backends share: a walk's state between calls
(:class:`SampleWalk`), the per-sample seeds, and the host's loop over one
chunk (:func:`walk_chunk_on_host`).

A sample's uniforms are consumed strictly in order from its own generator,
and a generator's stream does not depend on how it is cut into batches, so
the samples depend only on the seed, never on batch sizes, thread counts or
the device.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .results import Segments


def sample_seeds(seed: int, name: str, n: int, first: int = 0):
    """The seed sequences of samples first .. first + n - 1 of contig ``name``:
    the same in a per-contig and a whole-genome run (docs/algorithms.md,
    "Sampling"), and the same whichever batch asks (child i of the contig's
    sequence is made directly, as ``spawn`` would make it)."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, digest]
    return [np.random.SeedSequence(entropy, spawn_key=(i,)) for i in range(first, first + n)]


class SampleWalk:
    """One sample's walk: its state, unused uniforms and segments (last first).

    st_i = [phase, pos, label, tail end], st_f = [log u, log survival]
    (see cpu_kernels.sample_walk); u[u_pos:] are the stream's next uniforms.
    """

    def __init__(self, T: int):
        self.st_i = np.array([2, T, -1, -1], dtype=np.int64)
        self.st_f = np.zeros(2)
        self.u = np.empty(0)
        self.u_pos = 0
        self.start = np.empty(16, dtype=np.int64)
        self.end = np.empty(16, dtype=np.int64)
        self.label = np.empty(16, dtype=np.int64)
        self.n_out = 0

    def grow(self, need: int = 1) -> None:
        """Room for at least ``need`` more segments."""
        cap = max(2 * len(self.start), self.n_out + need)
        self.start, self.end, self.label = (np.resize(v, cap) for v in (self.start, self.end, self.label))

    def add(self, start, end, label) -> None:
        """Append segments found by a walk elsewhere (the device), in walk order."""
        k = len(start)
        if self.n_out + k > len(self.start):
            self.grow(k)
        sl = slice(self.n_out, self.n_out + k)
        self.start[sl], self.end[sl], self.label[sl] = start, end, label
        self.n_out += k

    def unused_uniforms(self) -> np.ndarray:
        """The stream's drawn but unused uniforms, which the walk's next draws take first."""
        self.u = self.u[self.u_pos:]
        self.u_pos = 0
        return self.u

    def segments(self) -> Segments:
        k = self.n_out
        return Segments(self.start[:k][::-1].copy(), self.end[:k][::-1].copy(),
                        self.label[:k][::-1].astype(np.int32))


def log_rows(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The host walk's rows: logs of a store's E, A and L at true scale."""
    n, C = store.E.shape
    every = (np.arange(n)[:, None], np.arange(C)[None, :])
    return tuple(np.ascontiguousarray(f(*every)) for f in (store.log_E, store.log_A, store.log_L))


def walk_chunk_on_host(pm, walks, rngs, a, b, chunk, rows, ring_log) -> None:
    """Advance every walk through chunk [a, b) with the compiled host walk.

    ``rows`` = :func:`log_rows` of the chunk's forward store; ``ring_log(c)``
    the logs of label c's ring entries at the chunk's checkpoint (true scale).
    """
    from . import cpu_kernels as kern

    K, C = pm.K, pm.C
    lE, lA, lL = rows
    logs = np.empty(max(K, C))
    lrho = np.ascontiguousarray(pm.lrho)
    ring = np.empty((C, K))
    ring_ready = np.zeros(C, dtype=np.bool_)
    for walk, rng in zip(walks, rngs):
        while True:
            code, walk.u_pos, walk.n_out, label = kern.sample_walk(
                walk.st_i, walk.st_f, a, b, chunk.x, lE, lA, lL, ring, ring_ready, pm.phicirc,
                lrho, pm.trans, pm.final, K, walk.u, walk.u_pos, walk.start, walk.end, walk.label,
                walk.n_out, logs)
            if code == kern.WALK_CHUNK_DONE:
                break
            if code == kern.WALK_NEED_UNIFORMS:
                # Batches grow: many samples may walk at once.
                batch = min(4096, max(16, 2 * len(walk.u)))
                walk.u = np.concatenate([walk.unused_uniforms(), rng.random(batch)])
            elif code == kern.WALK_NEED_SPACE:
                walk.grow()
            elif code == kern.WALK_NEED_RING:
                ring[label] = ring_log(label)
                ring_ready[label] = True
            else:
                raise AssertionError("sampling from an all-zero distribution")
