"""What the chunk driver hands a backend and gets back: a chunk of emissions
(:class:`EmissionChunk`) and the rows a pass leaves for later use
(:class:`ForwardStore`, :class:`ViterbiStore`).

Every backend reads and fills these types; a backend may subclass a store to
keep its rows elsewhere (the GPU's stay on the device, ``gpu.GpuStore``).
"""
from __future__ import annotations

import math

import numpy as np

from .numeric import LN2_HI, LN2_LO


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
        from .host_kernels import emission_factors

        bad, code = emission_factors(x, f, k)
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
    true E[t, c] = E[r, c] * 2**sexp[r]; log-space stores (``is_log``) hold
    log E[r, c] relative to that: true log E = E[r, c] + sexp[r] ln 2. ``ghost`` is the natural log of the
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
        self.is_log = is_log   # E, A, L hold natural logs relative to 2**sexp (exact backend)
        self.with_tail = with_tail
        # (k, r): rows of a chunk-parallel pass hold the true values times 2**k * e**r.
        self.log_offset = (0, 0.0)

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
            return values + ((self.sexp[rows] - k) * LN2_HI + (self.sexp[rows] - k) * LN2_LO - r)
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
        return out


class ViterbiStore:
    """Argmax pointers of one chunk for the traceback: for boundaries t0..t0+n,
    ``a_start[r, c]`` the start of the best label-c segment ending there and
    ``e_prev[r, c]`` the best label before a label-c segment starting there."""

    def __init__(self, n_rows: int, C: int):
        self.a_start = np.empty((n_rows, C), dtype=np.int64)
        self.e_prev = np.empty((n_rows, C), dtype=np.int64)
