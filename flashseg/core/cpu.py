"""CPU backend: per-pass states around the numba kernels (``cpu_kernels.py``).

The backend contract is ``backend.py``'s; a state's arrays are the ones the
kernels update in place, so a checkpoint is a copy of them.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import Backend
from .chunks import EmissionChunk, ForwardStore, ViterbiStore
from .model import SemiMarkovModel
from .numeric import positive_log, split_partition
from .prepared import PreparedModel


def _kernels():
    from . import cpu_kernels

    return cpu_kernels


class _KernelState:
    """A state is the prepared model plus numpy arrays the kernels update in place."""

    pm: PreparedModel
    # Chunk-parallel passes (parallel.py) start chunks from guessed states:
    # such a state holds the true values times 2**k * e**r, (k, r) this offset.
    scale_offset = (0, 0.0)
    # Log-space states start a guess with E = 0 (log 1); the linear one overrides.
    _guess_E = 0.0

    def as_guess(self, t: int) -> None:
        """Make a fresh state a guess at boundary ``t``: every label may start there, equally.

        Used only by chunk-parallel passes, which certify the guess afterwards.
        """
        self.t_sexp[0] = t
        self.t_sexp[1] = 0
        self.E[:] = self._guess_E

    @property
    def t(self) -> int:
        """The boundary this state stands at (bins consumed so far)."""
        return int(self.t_sexp[0])

    def copy(self):
        """An independent copy (a checkpoint): every array copied, the model shared."""
        out = self.__class__.__new__(self.__class__)
        for name, value in vars(self).items():
            setattr(out, name, value.copy() if isinstance(value, np.ndarray) else value)
        return out


class LinearState(_KernelState):
    """Forward state of the certified linear-space recursion at one boundary."""

    def __init__(self, pm: PreparedModel):
        self.pm = pm
        C, K = pm.C, pm.K
        self.ring = np.zeros((C, K))
        self.P = np.ones(C)
        self.umax = np.zeros(C)
        self.tail = np.zeros(C)
        self.A = np.zeros(C)
        self.E = pm.init_m.copy()
        self.ghost = np.full(C, -np.inf)
        self.t_sexp = np.array([0, pm.init_k], dtype=np.int64)

    _guess_E = 1.0

    def set_ghost(self, ghost: np.ndarray) -> None:
        self.ghost[:] = ghost

    def junction_view(self):
        """(log of every value in units of 2**sexp, sexp, None): what the recursion carries."""
        ring = positive_log(self.ring) + positive_log(self.P)[:, None]
        return (np.concatenate([ring.ravel(), positive_log(self.tail), positive_log(self.A),
                                positive_log(self.E)]), int(self.t_sexp[1]), None)


    def advance(self, chunk: EmissionChunk, store: ForwardStore | None = None) -> int:
        pm = self.pm
        k = _kernels()
        dummy2 = np.empty((0, pm.C))
        s = store
        return int(k.forward_linear(
            chunk.x, chunk.f, chunk.k, chunk.reverse, self.ring, self.P, self.umax, self.tail, self.A, self.E, self.ghost,
            self.t_sexp, pm.wcirc, pm.wpos, pm.wK, pm.phiK_finite, pm.rho, pm.TrT, pm.trpos,
            s is not None, s is not None and s.with_tail,
            s.E if s else dummy2, s.A if s else dummy2, s.L if s else dummy2,
            s.sexp if s else np.empty(0, dtype=np.int64), s.ghost if s else dummy2,
            s.ghost_flag if s else np.empty(0, dtype=np.uint8)))

    def log_partition(self) -> tuple[float, float, int]:
        """(logZ, mantissa in [0.5, 1), binary exponent) at the final boundary."""
        zm = float(np.dot(self.A, self.pm.final_m))
        return split_partition(zm, int(self.t_sexp[1]) + self.pm.final_k)

    def log_ring_entry(self, c: int, slot: int) -> float:
        v = self.ring[c, slot] * self.P[c]
        return math.log(self.ring[c, slot]) + math.log(self.P[c]) + int(self.t_sexp[1]) * math.log(2.0) \
            if v > 0 else -math.inf

    def lost_at_end(self, log_z: float) -> float:
        """Certificate term of the ghosts at the contig end (B[T] = final)."""
        g = self.ghost
        ok = np.isfinite(g) & np.isfinite(self.pm.final)
        return float(np.sum(self.pm.max_weight[ok] * np.exp(g[ok] + self.pm.final[ok] - log_z)))


class LogSpaceState(_KernelState):
    """Forward state of the exact log-space recursion at one boundary."""

    def __init__(self, pm: PreparedModel):
        self.pm = pm
        C, K = pm.C, pm.K
        self.ring = np.full((C, K), -np.inf)
        self.tail = np.full(C, -np.inf)
        self.A = np.full(C, -np.inf)
        self.E = pm.initial.copy()
        self.t_sexp = np.array([0, 0], dtype=np.int64)

    def junction_view(self):
        """(every log value the recursion carries, in units of 2**sexp; sexp; None)."""
        return np.concatenate([self.ring.ravel(), self.tail, self.A, self.E]), int(self.t_sexp[1]), None

    def advance(self, chunk: EmissionChunk, store: ForwardStore | None = None) -> int:
        pm = self.pm
        dummy2 = np.empty((0, pm.C))
        s = store
        return int(_kernels().forward_logspace(
            chunk.x, chunk.k, chunk.reverse, self.ring, self.tail, self.A, self.E, self.t_sexp,
            pm.phicirc, pm.phiK, pm.lrho, pm.trans, s is not None, s is not None and s.with_tail,
            s.E if s else dummy2, s.A if s else dummy2, s.L if s else dummy2,
            s.sexp if s else np.empty(0, dtype=np.int64)))

    def log_partition(self) -> tuple[float, float, int]:
        v = self.A + self.pm.final
        m = v.max()
        if not np.isfinite(m):
            return -math.inf, 0.0, 0
        k = int(math.floor(m / math.log(2.0)))
        zm = float(np.sum(np.exp(v - k * math.log(2.0))))
        return split_partition(zm, k + int(self.t_sexp[1]))

    def log_ring_entry(self, c: int, slot: int) -> float:
        return float(self.ring[c, slot]) + int(self.t_sexp[1]) * math.log(2.0)

    def lost_at_end(self, log_z: float) -> float:
        return 0.0

    @property
    def ghost(self):
        return np.full(self.pm.C, -np.inf)


class ViterbiState(_KernelState):
    """Max-plus forward state at one boundary."""

    def __init__(self, pm: PreparedModel):
        self.pm = pm
        C, K = pm.C, pm.K
        self.ring = np.full((C, K), -np.inf)
        self.off = np.zeros(C)
        self.tail = np.full(C, -np.inf)
        self.tail_start = np.full(C, -1, dtype=np.int64)
        self.A = np.full(C, -np.inf)
        self.E = pm.initial.copy()
        self.t_sexp = np.array([0, 0], dtype=np.int64)

    def junction_view(self):
        """(every max-plus value the recursion carries, 0, where each live tail started)."""
        values = np.concatenate([(self.ring + self.off[:, None]).ravel(), self.tail, self.A, self.E])
        return values, 0, np.where(np.isfinite(self.tail), self.tail_start, -1)

    def advance(self, chunk: EmissionChunk, store: ViterbiStore | None = None) -> int:
        pm = self.pm
        empty = np.empty((0, pm.C), dtype=np.int64)
        return int(_kernels().viterbi_forward(
            chunk.x, self.ring, self.off, self.tail, self.tail_start, self.A, self.E, self.t_sexp,
            pm.phicirc, pm.phiK, pm.lrho, pm.trans, store is not None,
            store.a_start if store else empty, store.e_prev if store else empty))

    def best_final(self) -> tuple[float, int]:
        v = self.A + self.pm.final
        c = int(np.argmax(v))  # argmax returns the lowest label on ties
        return float(v[c]), c


class CpuBackend(Backend):
    """Numba kernels; ``exact=True`` selects the log-space forward."""

    name = "cpu"

    def __init__(self, model: SemiMarkovModel, exact: bool = False):
        self.fwd = PreparedModel(model)
        self.bwd = PreparedModel(model.reversed())
        self.exact = exact or not self.fwd.linear_ok

    def forward_state(self, backward: bool = False, batch: int = 1):
        if batch != 1:
            raise ValueError("the CPU backend advances one chunk at a time")
        pm = self.bwd if backward else self.fwd
        return LogSpaceState(pm) if self.exact else LinearState(pm)

    def viterbi_state(self, batch: int = 1) -> ViterbiState:
        if batch != 1:
            raise ValueError("the CPU backend advances one chunk at a time")
        return ViterbiState(self.fwd)

    def new_store(self, n_rows: int, with_tail: bool = False) -> ForwardStore:
        return ForwardStore(n_rows, self.fwd.C, is_log=self.exact, with_tail=with_tail)

    def sample_rows(self, store: ForwardStore):
        """What :meth:`walk_chunk` reads of a chunk's forward rows (logs at true scale)."""
        from .sampling import log_rows

        return log_rows(store)

    def walk_chunk(self, walks, rngs, a, b, chunk, rows, ring_log) -> None:
        """Every sample's walk through chunk [a, b), one after another (sampling.py)."""
        from .sampling import walk_chunk_on_host

        walk_chunk_on_host(self.fwd, walks, rngs, a, b, chunk, rows, ring_log)

    def posterior_chunk(self, fstore, bstore, log_z, zm, zexp, carry, first_boundary, n,
                        with_last, gamma, boundary, change) -> tuple[float, float]:
        pm = self.fwd
        if self.exact:
            _kernels().posterior_chunk_log(fstore.E, fstore.A, fstore.sexp, bstore.E, bstore.A, bstore.sexp,
                                           pm.trans, math.log(zm), zexp, carry, first_boundary, n,
                                           gamma, boundary, change)
            return 0.0, -math.inf
        terms, log_ratio = _kernels().posterior_chunk(
            fstore.E, fstore.A, fstore.sexp, fstore.ghost, fstore.ghost_flag,
            bstore.E, bstore.A, bstore.sexp, bstore.ghost, bstore.ghost_flag,
            pm.Tr, pm.tr_up, pm.max_weight, 1.0 / zm, zexp, log_z, carry, first_boundary, n, with_last,
            gamma, boundary, change)
        return float(terms), float(log_ratio)
