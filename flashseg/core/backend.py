"""The backend contract: what the chunk driver needs from a backend.

A backend runs the three recursions of docs/algorithms.md ("Recursions") for
one model, one chunk of emissions at a time. The driver (``driver.py``) owns
the order of passes, the checkpoints, the certificate and the consumers; a
backend owns the arithmetic and where the numbers live. Two implement it:
``cpu.CpuBackend`` (numba kernels) and ``gpu.GpuBackend`` (Triton kernels).

A backend provides:

``name``
    "cpu" or "cuda".
``fwd``, ``bwd``
    :class:`~flashseg.core.prepared.PreparedModel` of the model and of its
    reversal (the backward pass is the forward pass of the reversed model
    over the reversed emissions); the trackers and the sampler read them.
``exact``
    True when the forward states work in exact log space (no certificate).
``forward_state(backward=False, batch=1)``, ``viterbi_state(batch=1)``
    A fresh state at boundary 0 (see *States* below).
``new_store(n_rows, with_tail=False)``
    A :class:`~flashseg.core.chunks.ForwardStore` (or a subclass) for the
    rows of one chunk; ``with_tail`` keeps the tail rows the sampler reads.
``posterior_chunk(fstore, bstore, log_z, zm, zexp, carry, first_boundary, n,
with_last, gamma, boundary, change)``
    The per-bin posteriors of one chunk from its forward rows and its
    (flipped) backward rows, into ``gamma``, ``boundary`` and ``change``,
    ``carry`` updated; returns the chunk's certificate terms and largest
    loss-inflow log ratio (``(0, -inf)`` when exact; see the driver).
``sample_rows(store)``, ``walk_chunk(walks, rngs, a, b, chunk, rows, ring_log)``
    The posterior sampler's view of a chunk's forward rows, and every
    sample's walk back through that chunk (``sampling.py``).

and may override the defaults here for the chunk-parallel passes:
``batch_size(workers)`` (chunks advanced per call of ``advance_rows``),
``recompute_rows`` (rows of several chunks from their start states),
``worker_context()`` (what a pool thread runs its work in) and
``settle()`` (after work that another thread will read).

States
------
A state stands at one boundary ``t`` of the contig and carries what the
recursion needs to go on. Every state has ``advance(chunk, store=None) ->
status`` (consume an :class:`~flashseg.core.chunks.EmissionChunk`, filling
``store`` with one row per boundary; status -1, or the first chunk-local bin
at which all mass vanished), ``copy()``, ``t``, ``as_guess(t)`` (a fresh
state made the start of a guessed chunk), ``junction_view()`` (the values
the recursion carries, for the junction test of ``parallel.py``) and
``scale_offset``. Forward states add ``log_partition()``,
``lost_at_end(log_z)``, ``log_ring_entry(c, slot)``, ``ghost`` and (linear)
``set_ghost``; Viterbi states ``best_final()``. A backend whose
``batch_size`` exceeds 1 also gives states of ``batch`` rows with
``as_guess_rows``, ``advance_rows(chunks, stores)`` and ``rows(host)``.
"""
from __future__ import annotations

import contextlib


class Backend:
    """Base of the backends; the module docstring is the contract."""

    name = ""
    exact = False

    def forward_state(self, backward: bool = False, batch: int = 1):
        raise NotImplementedError

    def viterbi_state(self, batch: int = 1):
        raise NotImplementedError

    def new_store(self, n_rows: int, with_tail: bool = False):
        raise NotImplementedError

    def posterior_chunk(self, fstore, bstore, log_z, zm, zexp, carry, first_boundary, n,
                        with_last, gamma, boundary, change) -> tuple[float, float]:
        raise NotImplementedError

    def sample_rows(self, store):
        raise NotImplementedError

    def walk_chunk(self, walks, rngs, a, b, chunk, rows, ring_log) -> None:
        raise NotImplementedError

    # -- chunk-parallel passes: defaults for a backend that runs one chunk at a time
    def batch_size(self, workers: int) -> int:
        """Chunks one ``advance_rows`` call advances when ``workers`` may be in flight."""
        return 1

    def recompute_rows(self, states, chunks, stores) -> list:
        """Rows of ``chunks[i]`` from copies of ``states[i]`` into ``stores[i]``; the statuses."""
        return [state.copy().advance(chunk, store) for state, chunk, store in zip(states, chunks, stores)]

    def worker_context(self):
        """The context a pool thread runs a chunk's work in."""
        return contextlib.nullcontext()

    def settle(self) -> None:
        """Called after work whose results another thread reads next."""
