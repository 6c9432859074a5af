"""CPU backend: prepared model arrays and per-pass states around the numba kernels.

A backend hands the chunk driver three recursions with one calling
convention: ``state.advance(chunk, store)``. ``chunk`` is an
:class:`EmissionChunk` (log scores plus the linear factors shared by the
forward and backward passes); ``store`` is a :class:`ForwardStore` (or
:class:`ViterbiStore`) to fill, or None.
"""
from __future__ import annotations

import math
import numpy as np

from .model import SemiMarkovModel

LN2_HI = 6.93147180369123816490e-01  # ln 2 split so k * LN2_HI is exact for |k| < 2**20
LN2_LO = 1.90821492927058770002e-10

# Finite model log-scores beyond this make the linear kernel's bounds invalid
# (a weight could overflow); such models run in exact log space instead.
LINEAR_MAX_MODEL_SCORE = 50.0
# Finite log-weights below this are stored as 0 in linear space; the loss is
# bounded by the flush accounting (see cpu_kernels.FLOOR).
LINEAR_MIN_LOG_WEIGHT = -700.0


class EmissionChunk:
    """One chunk of emissions in both representations (forward orientation).

    ``reverse`` marks a chunk to be read last row first (the backward pass);
    the arrays themselves are shared, never copied.
    """

    __slots__ = ("x", "f", "k", "reverse")

    def __init__(self, x, f, k, reverse=False):
        self.x, self.f, self.k, self.reverse = x, f, k, reverse

    @classmethod
    def from_log(cls, x: np.ndarray) -> "EmissionChunk":
        """Factors for one chunk; raises ValueError("<code> <bin>") on bad values."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        f = np.empty_like(x)
        k = np.empty(len(x), dtype=np.int64)
        bad, code = _kernels().emission_factors(x, f, k)
        if bad >= 0:
            raise BadEmission(int(bad), int(code))
        return cls(x, f, k)

    def reversed(self) -> "EmissionChunk":
        return EmissionChunk(self.x, self.f, self.k, not self.reverse)


class BadEmission(ValueError):
    """A chunk holds NaN (code 1), +inf (2) or a bin where every label is -inf (3)."""

    def __init__(self, local_bin: int, code: int):
        self.local_bin, self.code = local_bin, code
        super().__init__(f"bad emission at chunk bin {local_bin} (code {code})")


class ForwardStore:
    """Per-boundary forward values of one chunk: rows 0..n for boundaries t0..t0+n.

    Values are mantissas with one binary exponent per boundary:
    true E[t, c] = E[r, c] * 2**sexp[r]. ``ghost`` is the natural log of the
    mass flushed so far (an upper bound, -inf when nothing was lost).
    """

    def __init__(self, n_rows: int, C: int, is_log: bool = False, with_tail: bool = False):
        self.E = np.empty((n_rows, C))
        self.A = np.empty((n_rows, C))
        # The tail L is read by the sampler only; the other passes skip it.
        self.L = np.empty((n_rows, C)) if with_tail else np.empty((0, C))
        self.sexp = np.empty(n_rows, dtype=np.int64)
        # Ghost rows are meaningful only where ghost_flag is set (all -inf elsewhere).
        self.ghost = np.empty((n_rows, C))
        self.ghost_flag = np.zeros(n_rows, dtype=np.uint8)
        self.rows = n_rows
        self.is_log = is_log   # E, A, L hold natural logs (exact backend)
        self.with_tail = with_tail
        # (k, r): rows of a chunk-parallel pass hold the true values times 2**k * e**r.
        self.log_offset = (0, 0.0)
        # The GPU backend leaves the rows' device copy here (E, A, sexp), stored
        # last row first when device_reversed.
        self.device_rows = None
        self.device_reversed = False

    def head(self, rows: int) -> "ForwardStore":
        """A store over the first ``rows`` rows of this one, ghost flags cleared:
        the emit pass reuses one buffer per chunk instead of faulting in fresh pages."""
        out = ForwardStore.__new__(ForwardStore)
        out.E, out.A, out.sexp, out.ghost = self.E[:rows], self.A[:rows], self.sexp[:rows], self.ghost[:rows]
        out.L = self.L[:rows] if self.with_tail else self.L
        out.ghost_flag = self.ghost_flag[:rows]
        out.ghost_flag[:] = 0
        out.rows, out.is_log, out.with_tail = rows, self.is_log, self.with_tail
        out.log_offset = (0, 0.0)
        out.device_rows, out.device_reversed = None, False
        return out

    def ghost_rows(self) -> np.ndarray:
        """ghost with -inf where not flagged (tests and diagnostics)."""
        return np.where(self.ghost_flag[:, None].astype(bool), self.ghost, -np.inf)

    def any_loss(self) -> bool:
        return bool(self.ghost_flag.any())

    def clear_flags(self) -> None:
        """Before the kernel fills the rows again (it flags only the rows that lose)."""
        self.ghost_flag[:] = 0

    def add_carried_ghost(self, ghost: np.ndarray, x: np.ndarray) -> None:
        """Rows computed from a guess started with no ghosts (chunk-parallel
        passes): add the losses carried into the chunk, ``ghost`` at row 0, then
        plus each bin's scores ``x`` in the order the rows were computed, as the
        kernel would have."""
        if not np.isfinite(ghost).any():
            return
        carried = ghost[None, :] + np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        own = np.where(self.ghost_flag[:, None].astype(bool), self.ghost, -np.inf)
        self.ghost[:] = np.logaddexp(own, carried)
        self.ghost_flag[:] = np.isfinite(self.ghost).any(axis=1)

    def _log(self, values, rows):
        k, r = self.log_offset
        if self.is_log:
            return values - (k * LN2_HI + k * LN2_LO + r) if k or r else values
        with np.errstate(divide="ignore"):
            return np.log(values) + (self.sexp[rows] - k) * math.log(2.0) - r

    def log_E(self, rows, cols):
        return self._log(self.E[rows, cols], rows)

    def log_A(self, rows, cols):
        return self._log(self.A[rows, cols], rows)

    def log_L(self, rows, cols):
        return self._log(self.L[rows, cols], rows)

    def flipped(self) -> "ForwardStore":
        out = ForwardStore.__new__(ForwardStore)
        out.E, out.A, out.L = self.E[::-1], self.A[::-1], self.L[::-1]
        out.sexp, out.ghost, out.ghost_flag = self.sexp[::-1], self.ghost[::-1], self.ghost_flag[::-1]
        out.rows, out.is_log, out.with_tail = self.rows, self.is_log, self.with_tail
        out.log_offset = self.log_offset
        out.device_rows, out.device_reversed = self.device_rows, not self.device_reversed
        return out


class ViterbiStore:
    def __init__(self, n_rows: int, C: int):
        self.a_start = np.empty((n_rows, C), dtype=np.int64)
        self.e_prev = np.empty((n_rows, C), dtype=np.int64)


def _kernels():
    from . import cpu_kernels

    return cpu_kernels


def _scaled_exp(v: np.ndarray) -> tuple[np.ndarray, int]:
    """exp(v) as mantissas times 2**k with one k (v's finite maximum near 1)."""
    finite = v[np.isfinite(v)]
    k = int(np.floor(finite.max() / math.log(2.0))) if finite.size else 0
    return np.exp(v - k * math.log(2.0)), k


class PreparedModel:
    """Model arrays in the layouts the kernels read (one orientation)."""

    def __init__(self, model: SemiMarkovModel):
        self.model = model
        K, C = model.duration.shape
        self.K, self.C = K, C
        phi = model.duration.T.copy()                          # (C, K), phi[c, d-1]
        m_idx = (np.arange(2 * K) - 1) % K
        self.phicirc = np.ascontiguousarray(phi[:, m_idx])     # (C, 2K)
        self.phiK = np.ascontiguousarray(phi[:, K - 1])
        self.lrho = np.ascontiguousarray(model.tail_or_none())
        self.trans = np.ascontiguousarray(model.transition)
        self.initial = model.initial
        self.final = model.final

        scores = np.concatenate([model.duration.ravel(), model.transition.ravel(),
                                 model.initial, model.final, self.lrho])
        finite = scores[np.isfinite(scores)]
        self.linear_ok = bool(finite.size == 0 or finite.max() <= LINEAR_MAX_MODEL_SCORE)

        def lin(v):
            out = np.exp(v)
            out[v < LINEAR_MIN_LOG_WEIGHT] = 0.0
            return out

        w = lin(phi)
        self.wcirc = np.ascontiguousarray(w[:, m_idx])
        self.wpos = np.ascontiguousarray(np.isfinite(phi)[:, m_idx])
        self.wK = np.ascontiguousarray(w[:, K - 1])
        self.phiK_finite = np.isfinite(self.phiK)
        self.rho = np.where(np.isfinite(self.lrho), np.exp(self.lrho), 0.0)
        self.Tr = np.ascontiguousarray(lin(model.transition))
        self.TrT = np.ascontiguousarray(self.Tr.T)   # column reads made contiguous
        self.trpos = np.ascontiguousarray(np.isfinite(model.transition))
        # Bound on how much any duration weight can multiply a lost value.
        wmax = np.where(np.isfinite(phi), phi, -np.inf).max(axis=1)
        self.mw = np.maximum(1.0, np.exp(np.minimum(wmax, 700.0)))
        self.init_m, self.init_k = _scaled_exp(model.initial)
        self.final_m, self.final_k = _scaled_exp(model.final)


def positive_log(values: np.ndarray) -> np.ndarray:
    """log of non-negative values, -inf for zeros (no warnings)."""
    with np.errstate(divide="ignore"):
        return np.log(values)


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
        self.istate[0] = t
        self.istate[1] = 0
        self.E[:] = self._guess_E

    @property
    def t(self) -> int:
        """The boundary this state stands at (bins consumed so far)."""
        return int(self.istate[0])

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
        self.istate = np.array([0, pm.init_k], dtype=np.int64)

    _guess_E = 1.0

    def set_ghost(self, ghost: np.ndarray) -> None:
        self.ghost[:] = ghost

    def junction_view(self):
        """(log of every value in units of 2**sexp, sexp, None): what the recursion carries."""
        ring = positive_log(self.ring) + positive_log(self.P)[:, None]
        return (np.concatenate([ring.ravel(), positive_log(self.tail), positive_log(self.A),
                                positive_log(self.E)]), int(self.istate[1]), None)


    def advance(self, chunk: EmissionChunk, store: ForwardStore | None = None) -> int:
        pm = self.pm
        k = _kernels()
        dummy2 = np.empty((0, pm.C))
        s = store
        return int(k.forward_linear(
            chunk.x, chunk.f, chunk.k, chunk.reverse, self.ring, self.P, self.umax, self.tail, self.A, self.E, self.ghost,
            self.istate, pm.wcirc, pm.wpos, pm.wK, pm.phiK_finite, pm.rho, pm.TrT, pm.trpos,
            s is not None, s is not None and s.with_tail,
            s.E if s else dummy2, s.A if s else dummy2, s.L if s else dummy2,
            s.sexp if s else np.empty(0, dtype=np.int64), s.ghost if s else dummy2,
            s.ghost_flag if s else np.empty(0, dtype=np.uint8)))

    def log_partition(self) -> tuple[float, float, int]:
        """(logZ, mantissa in [0.5, 1), binary exponent) at the final boundary."""
        zm = float(np.dot(self.A, self.pm.final_m))
        return _split_z(zm, int(self.istate[1]) + self.pm.final_k)

    def log_ring_entry(self, c: int, slot: int) -> float:
        v = self.ring[c, slot] * self.P[c]
        return math.log(self.ring[c, slot]) + math.log(self.P[c]) + int(self.istate[1]) * math.log(2.0) \
            if v > 0 else -math.inf

    def lost_at_end(self, log_z: float) -> float:
        """Certificate term of the ghosts at the contig end (B[T] = final)."""
        g = self.ghost
        ok = np.isfinite(g) & np.isfinite(self.pm.final)
        return float(np.sum(self.pm.mw[ok] * np.exp(g[ok] + self.pm.final[ok] - log_z)))


class LogSpaceState(_KernelState):
    """Forward state of the exact log-space recursion at one boundary."""

    def __init__(self, pm: PreparedModel):
        self.pm = pm
        C, K = pm.C, pm.K
        self.ring = np.full((C, K), -np.inf)
        self.tail = np.full(C, -np.inf)
        self.A = np.full(C, -np.inf)
        self.E = pm.initial.copy()
        self.istate = np.array([0, 0], dtype=np.int64)

    def junction_view(self):
        """(every log value the recursion carries, 0, None)."""
        return np.concatenate([self.ring.ravel(), self.tail, self.A, self.E]), 0, None

    def advance(self, chunk: EmissionChunk, store: ForwardStore | None = None) -> int:
        pm = self.pm
        dummy2 = np.empty((0, pm.C))
        s = store
        return int(_kernels().forward_logspace(
            chunk.x, chunk.reverse, self.ring, self.tail, self.A, self.E, self.istate,
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
        return _split_z(zm, k)

    def log_ring_entry(self, c: int, slot: int) -> float:
        return float(self.ring[c, slot])

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
        self.istate = np.array([0, 0], dtype=np.int64)

    def junction_view(self):
        """(every max-plus value the recursion carries, 0, where each live tail started)."""
        values = np.concatenate([(self.ring + self.off[:, None]).ravel(), self.tail, self.A, self.E])
        return values, 0, np.where(np.isfinite(self.tail), self.tail_start, -1)

    def advance(self, chunk: EmissionChunk, store: ViterbiStore | None = None) -> int:
        pm = self.pm
        empty = np.empty((0, pm.C), dtype=np.int64)
        return int(_kernels().viterbi_forward(
            chunk.x, self.ring, self.off, self.tail, self.tail_start, self.A, self.E, self.istate,
            pm.phicirc, pm.phiK, pm.lrho, pm.trans, store is not None,
            store.a_start if store else empty, store.e_prev if store else empty))

    def best_final(self) -> tuple[float, int]:
        v = self.A + self.pm.final
        c = int(np.argmax(v))  # argmax returns the lowest label on ties
        return float(v[c]), c


def _split_z(zm: float, zexp: int) -> tuple[float, float, int]:
    if not zm > 0.0:
        return -math.inf, 0.0, 0
    m, e = math.frexp(zm)
    zexp += e
    return math.log(m) + zexp * math.log(2.0), m, zexp


class CpuBackend:
    """Numba kernels; ``exact=True`` selects the log-space forward."""

    name = "cpu"

    def __init__(self, model: SemiMarkovModel, exact: bool = False):
        self.fwd = PreparedModel(model)
        self.bwd = PreparedModel(model.reversed())
        self.exact = exact or not self.fwd.linear_ok

    def forward_state(self, backward: bool = False):
        pm = self.bwd if backward else self.fwd
        return LogSpaceState(pm) if self.exact else LinearState(pm)

    def viterbi_state(self) -> ViterbiState:
        return ViterbiState(self.fwd)

    def new_store(self, n_rows: int, with_tail: bool = False) -> ForwardStore:
        return ForwardStore(n_rows, self.fwd.C, is_log=self.exact, with_tail=with_tail)

    def recompute_rows(self, states, chunks, stores) -> list:
        """Rows of ``chunks[i]`` from copies of ``states[i]`` into ``stores[i]``; the statuses."""
        return [state.copy().advance(chunk, store) for state, chunk, store in zip(states, chunks, stores)]

    def sample_rows(self, store: ForwardStore):
        """What :meth:`walk_chunk` reads of a chunk's forward rows (logs at true scale)."""
        from .sampling import log_rows

        return log_rows(store)

    def walk_chunk(self, walks, rngs, a, b, chunk, rows, ring_log) -> None:
        """Every sample's walk through chunk [a, b), one after another (sampling.py)."""
        from .sampling import walk_chunk_on_host

        walk_chunk_on_host(self.fwd, walks, rngs, a, b, chunk, rows, ring_log)

    def posterior_chunk(self, fstore, bstore, log_z, zm, zexp, carry, first_boundary, n,
                        with_last, gamma, boundary, change) -> float:
        pm = self.fwd
        if self.exact:
            _kernels().posterior_chunk_log(fstore.E, fstore.A, bstore.E, bstore.A, pm.trans,
                                           log_z, carry, first_boundary, n, gamma, boundary, change)
            return 0.0
        return float(_kernels().posterior_chunk(
            fstore.E, fstore.A, fstore.sexp, fstore.ghost, fstore.ghost_flag,
            bstore.E, bstore.A, bstore.sexp, bstore.ghost, bstore.ghost_flag,
            pm.Tr, pm.mw, 1.0 / zm, zexp, log_z, carry, first_boundary, n, with_last,
            gamma, boundary, change))
