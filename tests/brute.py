"""Brute force over every segmentation, plus random models and cases for tests.

Every segmentation of ``[0, T)`` (every composition of T into durations,
every labelling of its segments) is listed and scored straight from docs/model.md, "The model";
all posteriors are sums of ``P(segmentation)`` over the segmentations with
the property. Nothing here shares code with ``flashseg.core``: the duration
score, including the geometric tail, is recomputed from the model's arrays.

The number of segmentations is ``C (C + 1)^(T - 1)`` (49152 at T = 8, C = 3).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from hypothesis import strategies as st

from flashseg.core.model import SemiMarkovModel

__all__ = [
    "log_duration", "score_segmentation", "enumerate_segmentations", "BruteForce",
    "random_model", "random_emissions", "random_case", "integer_case", "late_kill_case", "flushed_by_both_case",
    "lost_minority_case", "model_strategy", "case_strategy",
    "n_segmentations",
]


# ---------------------------------------------------------------- scoring

def log_duration(model: SemiMarkovModel, d: int, c: int) -> float:
    """dur[c](d) per docs/model.md, "Tails", tail included (re-derived, not model.log_duration)."""
    K = model.duration.shape[0]
    if d <= K:
        return float(model.duration[d - 1, c])
    if model.tail_log_rho is None or model.tail_log_rho[c] == -math.inf:
        return -math.inf
    return float(model.duration[K - 1, c]) + (d - K) * float(model.tail_log_rho[c])


def score_segmentation(model: SemiMarkovModel, x: np.ndarray, segments) -> float:
    """Score of one segmentation (list of (s, e, c)), term by term as docs/model.md, "The model", writes it."""
    T = x.shape[0]
    total = 0.0
    prev = None
    for s, e, c in segments:
        total += sum(float(x[i, c]) for i in range(s, e))
        total += log_duration(model, e - s, c)
        total += float(model.initial[c]) if s == 0 else float(model.transition[prev, c])
        if e == T:
            total += float(model.final[c])
        prev = c
    return total


@functools.lru_cache(maxsize=64)
def enumerate_segmentations(T: int, C: int) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """Every segmentation of [0, T) into labelled segments, as tuples of (s, e, c)."""
    out = []
    for n_cuts in range(T):
        for cuts in itertools.combinations(range(1, T), n_cuts):
            bounds = (0,) + cuts + (T,)
            spans = list(zip(bounds[:-1], bounds[1:]))
            for labels in itertools.product(range(C), repeat=len(spans)):
                out.append(tuple((s, e, c) for (s, e), c in zip(spans, labels)))
    return tuple(out)


def n_segmentations(T: int, C: int) -> int:
    return C * (C + 1) ** (T - 1)


@functools.lru_cache(maxsize=64)
def _layout(T: int, C: int):
    """Padded arrays over the enumeration, for vectorised scoring and sums."""
    segs = enumerate_segmentations(T, C)
    N, M = len(segs), T
    starts = np.zeros((N, M), dtype=np.int64)
    ends = np.zeros((N, M), dtype=np.int64)
    labels = np.zeros((N, M), dtype=np.int64)
    valid = np.zeros((N, M), dtype=bool)
    n_seg = np.zeros(N, dtype=np.int64)
    bin_label = np.zeros((N, T), dtype=np.int64)
    is_start = np.zeros((N, T), dtype=bool)
    for k, seg in enumerate(segs):
        n_seg[k] = len(seg)
        for j, (s, e, c) in enumerate(seg):
            starts[k, j], ends[k, j], labels[k, j], valid[k, j] = s, e, c, True
            bin_label[k, s:e] = c
            is_start[k, s] = True
    return starts, ends, labels, valid, n_seg, bin_label, is_start


class BruteForce:
    """All segmentations of one (model, x) with their scores and probabilities."""

    def __init__(self, model: SemiMarkovModel, x: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        self.model, self.x = model, x
        self.T, self.C = T, C = x.shape
        self.segmentations = enumerate_segmentations(T, C)
        starts, ends, labels, valid, n_seg, self.bin_label, self.is_start = _layout(T, C)
        self._starts, self._ends, self._labels, self._valid = starts, ends, labels, valid
        # seg_score[s, e, c] = emission sum + duration score of one segment
        seg_score = np.zeros((T + 1, T + 1, C))
        for s in range(T):
            for e in range(s + 1, T + 1):
                for c in range(C):
                    seg_score[s, e, c] = (sum(float(x[i, c]) for i in range(s, e))
                                          + log_duration(model, e - s, c))
        rows = np.arange(len(self.segmentations))
        score = np.where(valid, seg_score[starts, ends, labels], 0.0).sum(axis=1)
        score = score + model.initial[labels[:, 0]]
        trans = model.transition[labels[:, :-1], labels[:, 1:]]
        score = score + np.where(valid[:, 1:], trans, 0.0).sum(axis=1)
        score = score + model.final[labels[rows, n_seg - 1]]
        self.scores = score
        finite = score[np.isfinite(score)]
        if finite.size:
            m = finite.max()
            self.log_partition = float(m + np.log(np.sum(np.exp(finite - m))))
        else:
            self.log_partition = -math.inf
        with np.errstate(invalid="ignore"):
            self.probs = (np.exp(score - self.log_partition) if finite.size
                          else np.zeros_like(score))

    # ------------------------------------------------------------ summaries
    def _p(self, mask) -> float:
        return float(self.probs[mask].sum())

    def gamma(self) -> np.ndarray:
        g = np.empty((self.T, self.C))
        for i in range(self.T):
            for c in range(self.C):
                g[i, c] = self._p(self.bin_label[:, i] == c)
        return g

    def boundary(self) -> np.ndarray:
        b = np.array([self._p(self.is_start[:, i]) for i in range(self.T)])
        b[0] = 1.0
        return b

    def change(self) -> np.ndarray:
        ch = np.ones(self.T)
        for i in range(1, self.T):
            ch[i] = self._p(self.bin_label[:, i - 1] != self.bin_label[:, i])
        return ch

    def start_probs(self) -> np.ndarray:
        """(T, C): P(a label-c segment starts at s), s = 0..T-1."""
        return np.array([[self._p(self.is_start[:, s] & (self.bin_label[:, s] == c))
                          for c in range(self.C)] for s in range(self.T)])

    def end_probs(self) -> np.ndarray:
        """(T, C): P(a label-c segment ends at e), row e - 1 for e = 1..T."""
        out = np.empty((self.T, self.C))
        for e in range(1, self.T + 1):
            ends_here = (np.ones(len(self.probs), dtype=bool) if e == self.T
                         else self.is_start[:, e])
            for c in range(self.C):
                out[e - 1, c] = self._p(ends_here & (self.bin_label[:, e - 1] == c))
        return out

    def segment_posterior(self, s: int, e: int, c: int) -> float:
        mask = np.any(self._valid & (self._starts == s) & (self._ends == e)
                      & (self._labels == c), axis=1)
        return self._p(mask)

    def run_posterior(self, s: int, e: int, c: int) -> float:
        lab = self.bin_label
        mask = np.all(lab[:, s:e] == c, axis=1)
        if s > 0:
            mask &= lab[:, s - 1] != c
        if e < self.T:
            mask &= lab[:, e] != c
        return self._p(mask)

    def map(self) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        k = int(np.argmax(self.scores))
        return float(self.scores[k]), self.segmentations[k]

    def map_tiebroken(self) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        """MAP with the ties of docs/algorithms.md, "Viterbi and traceback": among the exactly-best segmentations, the one
        whose (label, duration) sequence read from the contig end is smallest
        (lowest last label, then shortest last duration, then lowest previous
        label, ...). Meaningful when scores are exact (integer-valued inputs)."""
        best = self.scores.max()
        tied = [self.segmentations[k] for k in np.flatnonzero(self.scores == best)]

        def key(seg):
            return tuple(v for s, e, c in reversed(seg) for v in (c, e - s))

        return float(best), min(tied, key=key)

    def map_gap(self) -> float:
        """Score gap between the best and the second-best segmentation (inf if one)."""
        top = np.sort(self.scores)[::-1]
        if len(top) < 2 or top[1] == -math.inf:
            return math.inf
        return float(top[0] - top[1])

    def probability_of(self) -> dict:
        """{segmentation tuple: probability} over every segmentation."""
        return dict(zip(self.segmentations, self.probs.tolist()))


# ---------------------------------------------------------------- random cases

TAILS = ("none", "geometric", "mixed")


def random_model(rng: np.random.Generator, C: int, K: int, tail="geometric",
                 self_loops: bool = True, p_neginf: float = 0.0) -> SemiMarkovModel:
    """A random model. ``tail``: "none" (tail_log_rho None), "geometric" (every
    label has rho in (0.05, 0.95)), "mixed" (each label has a tail with
    probability 1/2, else log rho = -inf); True/False mean geometric/none.
    Each log entry of duration, transition, initial and final is -inf with
    probability ``p_neginf``; without ``self_loops`` the diagonal is -inf."""
    if tail is True:
        tail = "geometric"
    elif tail is False or tail is None:
        tail = "none"
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}")

    def holes(a):
        return np.where(rng.random(a.shape) < p_neginf, -np.inf, a)

    duration = holes(rng.normal(-1.0, 1.5, size=(K, C)))
    transition = holes(rng.normal(-1.0, 1.0, size=(C, C)))
    if not self_loops:
        np.fill_diagonal(transition, -np.inf)
    initial = holes(rng.normal(-1.0, 1.0, size=C))
    final = holes(rng.normal(0.0, 1.0, size=C))
    if tail == "none":
        rho = None
    else:
        rho = np.log(rng.uniform(0.05, 0.95, size=C))
        if tail == "mixed":
            rho = np.where(rng.random(C) < 0.5, -np.inf, rho)
    return SemiMarkovModel(duration, rho, transition, initial, final)


def random_emissions(rng: np.random.Generator, T: int, C: int, scale: float = 1.0,
                     p_neginf: float = 0.0) -> np.ndarray:
    """(T, C) normal(0, scale) log scores, each -inf with probability ``p_neginf``."""
    x = rng.normal(0.0, scale, size=(T, C))
    return np.where(rng.random((T, C)) < p_neginf, -np.inf, x)


def random_case(seed: int, T: int, C: int, K: int, tail, self_loops: bool, p_neginf: float, scale: float):
    """(model, x) from one seed: -inf holes in the model with probability
    ``p_neginf`` and in the scores with a fifth of it (the hypothesis tests
    against the plain reference draw their cases here)."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, C, K, tail, self_loops, p_neginf)
    return model, random_emissions(rng, T, C, scale, p_neginf / 5)


def integer_case(seed: int, T: int, C: int, K: int, tail: bool):
    """(model, x) with small integer scores: exact ties everywhere (docs/algorithms.md, "Viterbi and traceback")."""
    rng = np.random.default_rng(seed)
    dur = rng.integers(-2, 1, size=(K, C)).astype(float)
    rho = np.full(C, -1.0) if tail else None
    trans = rng.integers(-2, 1, size=(C, C)).astype(float)
    model = SemiMarkovModel(dur, rho, trans, np.zeros(C), np.zeros(C))
    return model, rng.integers(-1, 2, size=(T, C)).astype(float)


def late_kill_case():
    """(model, x): two labels that never switch; label 1 falls 1200 nats behind
    early on (the linear fast path flushes it), then label 0 becomes impossible
    at bin 50, so the flushed path is all that is left."""
    C, T = 2, 60
    trans = np.array([[0.0, -np.inf], [-np.inf, 0.0]])
    model = SemiMarkovModel(np.zeros((1, C)), None, trans, np.zeros(C), np.zeros(C))
    x = np.zeros((T, C))
    x[:30, 1] = -40.0
    x[50, 0] = -np.inf
    return model, x


def flushed_by_both_case():
    """(model, x, a_label): two forced paths (K = 1, labels alternate). The path
    B (label 1 - a_label) falls e^600 behind early and ends e^600 behind from
    the right, so both linear passes flush it, yet it wins by e^400 (log Z = 400)."""
    T = 36
    d = np.concatenate([np.full(10, -60.0), np.full(16, 100.0), np.full(10, -60.0)])
    x = np.zeros((T, 2))
    a_label = np.arange(T) % 2
    x[np.arange(T), 1 - a_label] = d
    trans = np.array([[-np.inf, 0.0], [0.0, -np.inf]])
    model = SemiMarkovModel(np.zeros((1, 2)), None, trans, np.zeros(2), np.zeros(2))
    return model, x, a_label


def lost_minority_case():
    """(model, x, share): four labels in two lanes (0 <-> 1 and 2 <-> 3, K = 1,
    alternating). In lane one, the path B falls e^600 behind early and ends
    e^600 behind from the right, so both linear passes flush it; lane two's
    path C is never flushed and is the MAP by e^0.4. B still carries ``share``
    (about 40%) of Z: neither the MAP check nor either pass's certificate alone
    sees it."""
    T = 36
    d = np.concatenate([np.full(10, -60.0), np.full(16, 100.0), np.full(10, -60.0)])
    x = np.full((T, 4), -np.inf)
    a_label = np.arange(T) % 2
    x[np.arange(T), a_label] = 0.0
    x[np.arange(T), 1 - a_label] = d
    x[np.arange(T), 2 + np.arange(T) % 2] = 400.4 / T
    trans = np.full((4, 4), -np.inf)
    trans[0, 1] = trans[1, 0] = trans[2, 3] = trans[3, 2] = 0.0
    model = SemiMarkovModel(np.zeros((1, 4)), None, trans, np.zeros(4), np.zeros(4))
    share = 1.0 / (1.0 + math.exp(0.4) + math.exp(-400.0))
    return model, x, share


@st.composite
def model_strategy(draw, C=None, K=None, max_C: int = 3, max_K: int = 9,
                   tails=TAILS, self_loops=None, p_neginf=(0.0, 0.1, 0.3)):
    """Hypothesis strategy for a random SemiMarkovModel (fixed C/K when given)."""
    C = draw(st.integers(1, max_C)) if C is None else C
    K = draw(st.integers(1, max_K)) if K is None else K
    tail = draw(st.sampled_from(tails))
    loops = draw(st.booleans()) if self_loops is None else self_loops
    p = draw(st.sampled_from(p_neginf))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_model(np.random.default_rng(seed), C, K, tail, loops, p)


@st.composite
def case_strategy(draw, min_T: int = 1, max_T: int = 8, max_C: int = 3,
                  max_K=None, tails=TAILS, self_loops=None,
                  p_neginf=(0.0, 0.1, 0.3), scales=(0.5, 2.0, 10.0),
                  max_segmentations: int | None = None):
    """Hypothesis strategy for ``(model, x)``: T in [min_T, max_T], C <= max_C,
    K in 1..T+1 (or 1..max_K), -inf holes in model and emissions.
    ``max_segmentations`` (for brute-force tests) shrinks T while the
    enumeration would be larger; the defaults (T <= 8, C <= 3) stay under 50k."""
    C = draw(st.integers(1, max_C))
    T = draw(st.integers(min_T, max_T))
    if max_segmentations is not None:
        while T > min_T and n_segmentations(T, C) > max_segmentations:
            T -= 1
    K = draw(st.integers(1, T + 1 if max_K is None else max_K))
    model = draw(model_strategy(C=C, K=K, tails=tails, self_loops=self_loops,
                                p_neginf=p_neginf))
    p = draw(st.sampled_from(p_neginf))
    scale = draw(st.sampled_from(scales))
    seed = draw(st.integers(0, 2**32 - 1))
    x = random_emissions(np.random.default_rng(seed), T, C, scale, p)
    return model, x
