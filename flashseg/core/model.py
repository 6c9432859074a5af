"""The semi-Markov model as plain arrays (docs/model.md, "The model").

Everything here is in natural-log space; ``-inf`` forbids an event.
The core never reads files: ``flashseg.io.model`` turns a YAML model into
one of these.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SemiMarkovModel:
    """Arrays of an explicit-duration semi-Markov model.

    duration     (K, C)  log dur[c](d) stored at ``duration[d - 1, c]``, d = 1..K
    tail_log_rho (C,)    log rho per label for durations > K (geometric tail);
                         ``-inf`` for a label without a tail. ``None`` means
                         ``tail: none`` (durations > K forbidden for all labels).
    transition   (C, C)  log score, row = from, column = to
    initial      (C,)    log score of the first segment's label
    final        (C,)    log score of the last segment's label
    """

    duration: np.ndarray
    tail_log_rho: np.ndarray | None
    transition: np.ndarray
    initial: np.ndarray
    final: np.ndarray

    def __post_init__(self):
        def as_f64(a, name, shape):
            a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
            if a.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
            if np.isnan(a).any():
                raise ValueError(f"{name}: contains NaN")
            if np.isposinf(a).any():
                raise ValueError(f"{name}: contains +inf")
            a.setflags(write=False)
            object.__setattr__(self, name, a)

        dur = np.asarray(self.duration)
        if dur.ndim != 2 or dur.shape[0] < 1 or dur.shape[1] < 1:
            raise ValueError("duration: expected a (K, C) table with K >= 1 and C >= 1")
        K, C = dur.shape
        as_f64(self.duration, "duration", (K, C))
        as_f64(self.transition, "transition", (C, C))
        as_f64(self.initial, "initial", (C,))
        as_f64(self.final, "final", (C,))
        if self.tail_log_rho is not None:
            as_f64(self.tail_log_rho, "tail_log_rho", (C,))
            if (self.tail_log_rho >= 0).any():
                raise ValueError("tail_log_rho: rho must be < 1 (log rho < 0)")

    @property
    def n_labels(self) -> int:
        return self.duration.shape[1]

    @property
    def max_duration(self) -> int:
        return self.duration.shape[0]

    @property
    def has_tail(self) -> bool:
        return self.tail_log_rho is not None and bool(np.isfinite(self.tail_log_rho).any())

    @property
    def is_plain_hmm(self) -> bool:
        """K = 1 and no tail: every segment is one bin (an ordinary HMM), so a
        called "segment" is a bin and its runs are the calls worth reporting."""
        return self.max_duration == 1 and not self.has_tail

    def tail_or_none(self) -> np.ndarray:
        """log rho with ``-inf`` for every label that has no tail."""
        if self.tail_log_rho is None:
            return np.full(self.n_labels, -np.inf)
        return self.tail_log_rho

    def log_duration(self, d: int) -> np.ndarray:
        """phi_c(d) for every label, any d >= 1 (tail included)."""
        K = self.max_duration
        if d <= K:
            return self.duration[d - 1].copy()
        return self.duration[K - 1] + (d - K) * self.tail_or_none()

    def mean_durations(self) -> np.ndarray:
        """(C,) mean segment length in bins of each label's duration law as the
        model uses it: the table for d <= K and its geometric tail, normalised
        together (NaN for a label with no possible duration)."""
        K = self.max_duration
        d = np.arange(1, K + 1, dtype=np.float64)[:, None]
        top = self.duration.max(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.exp(self.duration - np.where(np.isfinite(top), top, 0.0))
            mass, first = w.sum(axis=0), (d * w).sum(axis=0)
            rho = np.exp(self.tail_or_none())
            w_k = w[K - 1]
            # sum_{j>=1} rho^j = rho/(1-rho);  sum_{j>=1} (K+j) rho^j = K rho/(1-rho) + rho/(1-rho)^2
            mass = mass + w_k * rho / (1 - rho)
            first = first + w_k * (K * rho / (1 - rho) + rho / (1 - rho) ** 2)
            return first / mass

    def reversed(self) -> "SemiMarkovModel":
        """The same model read right to left: init and final swap, transitions transpose.

        The backward pass is the forward pass of this model on the reversed
        emissions (docs/algorithms.md, "Recursions").
        """
        return SemiMarkovModel(self.duration, self.tail_log_rho,
                               self.transition.T.copy(), self.final, self.initial)
