"""EM for a semi-Markov model on exact expected counts (docs/algorithms.md,
"Fitting: EM").

The E-step is :func:`flashseg.core.api.expected_counts` (durations,
transitions, first labels, tails) plus the per-bin gamma weighted into each
emission family's statistics (:class:`EmissionStats`). The M-step maximises
the expected complete-data log-likelihood in closed form (the negative
binomial's dispersion numerically), with the floors of the module's
constants keeping probabilities off 0 and 1 and variances off 0. The core
reads no files: a sequence is an ``observations(a, b) -> (n, M)`` float64
callable (NaN = missing) and its number of bins.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .emissions import EmissionModel
from .model import SemiMarkovModel

#: Bernoulli p is kept in [P_FLOOR, 1 - P_FLOOR].
P_FLOOR = 1e-6
#: Poisson and negative-binomial means are at least this.
MEAN_FLOOR = 1e-6
#: NB dispersion (size) is searched in [DISPERSION_MIN, DISPERSION_MAX].
DISPERSION_MIN, DISPERSION_MAX = 1e-3, 1e6
#: A Gaussian sd is at least this fraction of the feature's pooled sd (and 1e-9).
SD_FLOOR = 1e-3
#: A fitted tail ratio is clamped to [RHO_MIN, 1 - RHO_MIN].
RHO_MIN = 1e-6
#: k-means++ runs of the initialisation; the lowest within-cluster sum of squares wins.
KMEANS_RUNS = 10


# ----------------------------------------------------------------- emission statistics


class EmissionStats:
    """Per-bin gamma weighted into one family's sufficient statistics.

    bernoulli, poisson: sum gamma * x and sum gamma over present values;
    negative_binomial: those plus a weighted histogram of counts per
    (label, feature); gaussian: plus sum gamma * x^2.
    """

    def __init__(self, family: str, C: int, M: int):
        self.family = family
        self.weight = np.zeros((C, M))
        self.first = np.zeros((C, M))
        self.second = np.zeros((C, M)) if family == "gaussian" else None
        self.histogram = [[np.zeros(0) for _ in range(M)] for _ in range(C)] \
            if family == "negative_binomial" else None

    def add(self, gamma: np.ndarray, x: np.ndarray) -> None:
        present = ~np.isnan(x)
        if present.all():   # the common case: no missing value, no masks to build
            xv = x
            self.weight += gamma.sum(axis=0)[:, None]
        else:
            xv = np.where(present, x, 0.0)
            self.weight += gamma.T @ present.astype(np.float64)
        self.first += gamma.T @ xv
        if self.second is not None:
            self.second += gamma.T @ (xv * xv)
        if self.histogram is not None:
            C, M = self.weight.shape
            for m in range(M):
                keep = present[:, m]
                counts = xv[keep, m].astype(np.int64)
                if not counts.size:
                    continue
                size = int(counts.max()) + 1
                for c in range(C):
                    h = np.bincount(counts, weights=gamma[keep, c], minlength=size)
                    old = self.histogram[c][m]
                    if old.size < h.size:
                        h[:old.size] += old
                        self.histogram[c][m] = h
                    else:
                        old[:h.size] += h

    def merge(self, other: "EmissionStats") -> None:
        self.weight += other.weight
        self.first += other.first
        if self.second is not None:
            self.second += other.second
        if self.histogram is not None:
            for c, row in enumerate(other.histogram):
                for m, h in enumerate(row):
                    old = self.histogram[c][m]
                    if old.size < h.size:
                        h = h.copy()
                        h[:old.size] += old
                        self.histogram[c][m] = h
                    else:
                        old[:h.size] += h


def fit_emissions(stats: EmissionStats, current: EmissionModel, pooled_sd: np.ndarray | None = None
                  ) -> EmissionModel:
    """The M-step of the emissions; a (label, feature) never observed keeps its value."""
    seen = stats.weight > 0
    mean = np.where(seen, stats.first / np.where(seen, stats.weight, 1.0), np.nan)
    old = current.params
    if stats.family == "bernoulli":
        p = np.where(seen, np.clip(mean, P_FLOOR, 1.0 - P_FLOOR), old["p"])
        return EmissionModel("bernoulli", current.features, {"p": p})
    if stats.family == "poisson":
        return EmissionModel("poisson", current.features,
                             {"mean": np.where(seen, np.maximum(mean, MEAN_FLOOR), old["mean"])})
    if stats.family == "negative_binomial":
        mu = np.where(seen, np.maximum(mean, MEAN_FLOOR), old["mean"])
        r = old["dispersion"].copy()
        from .emission_kernels import nb_profile

        for c in range(r.shape[0]):
            for m in range(r.shape[1]):
                if seen[c, m]:
                    h = stats.histogram[c][m]
                    new = nb_dispersion(h, mu[c, m])
                    v = np.flatnonzero(h > 0).astype(np.float64)
                    # the search is approximate: never step to a worse value than the old one
                    if nb_profile(v, h[h > 0], mu[c, m], new) >= nb_profile(v, h[h > 0], mu[c, m], r[c, m]):
                        r[c, m] = new
        return EmissionModel("negative_binomial", current.features, {"mean": mu, "dispersion": r})
    var = np.where(seen, stats.second / np.where(seen, stats.weight, 1.0) - np.nan_to_num(mean) ** 2, np.nan)
    floor = np.maximum(SD_FLOOR * (pooled_sd if pooled_sd is not None else 1.0), 1e-9)
    sd = np.where(seen, np.sqrt(np.maximum(var, floor ** 2)), old["sd"])
    return EmissionModel("gaussian", current.features, {"mean": np.where(seen, mean, old["mean"]), "sd": sd})


def nb_dispersion(histogram: np.ndarray, mu: float) -> float:
    """The size r maximising sum_v h[v] log NB(v; mu, r) (variance mu + mu^2 / r),
    by golden-section search on log r (the profile is unimodal in practice)."""
    values = np.flatnonzero(histogram > 0)
    if values.size == 0:
        return 1.0
    weights = histogram[values]
    v = values.astype(np.float64)
    from .emission_kernels import nb_profile

    lo, hi = math.log(DISPERSION_MIN), math.log(DISPERSION_MAX)
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    x1, x2 = b - golden * (b - a), a + golden * (b - a)
    f1, f2 = nb_profile(v, weights, mu, math.exp(x1)), nb_profile(v, weights, mu, math.exp(x2))
    for _ in range(80):
        if f1 < f2:
            a, x1, f1 = x1, x2, f2
            x2 = a + golden * (b - a)
            f2 = nb_profile(v, weights, mu, math.exp(x2))
        else:
            b, x2, f2 = x2, x1, f1
            x1 = b - golden * (b - a)
            f1 = nb_profile(v, weights, mu, math.exp(x1))
        if b - a < 1e-7:
            break
    return float(math.exp((a + b) / 2.0))


# ----------------------------------------------------------------- the model's M-step


def fit_durations(counts, K: int):
    """(K, C) log table and (C,) log rho (-inf: no tail) from expected counts:
    p_d = eta_d / N (d < K), rho = X / (X + eta_K + N_t),
    p_K = (1 - rho)(eta_K + N_t) / N, N = sum eta + N_t, so that the table and
    its tail p_K rho^(d - K) sum to exactly 1. A label with no expected
    segment keeps a flat table (the caller keeps its old one)."""
    eta, n_tail, excess = counts.durations, counts.tail_segments, counts.tail_excess
    C = eta.shape[1]
    table = np.zeros((K, C))
    log_rho = np.full(C, -np.inf)
    for c in range(C):
        total = eta[:, c].sum() + n_tail[c]
        if not total > 0:
            table[:, c] = np.nan
            continue
        p = eta[:, c] / total
        at_k = eta[K - 1, c] + n_tail[c]
        if at_k > 0 and excess[c] > 0:
            rho = min(max(excess[c] / (excess[c] + at_k), RHO_MIN), 1.0 - RHO_MIN)
            p[K - 1] = (1.0 - rho) * at_k / total
            log_rho[c] = math.log(rho)
        else:
            p[K - 1] = at_k / total
        with np.errstate(divide="ignore"):
            table[:, c] = np.log(p)
    return table, log_rho


def fit_transitions(counts: np.ndarray, allowed: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Row-normalised expected counts over the allowed entries (log); a row with
    no expected count keeps its old values."""
    out = old.copy()
    for c in range(counts.shape[0]):
        row = np.where(allowed[c], counts[c], 0.0)
        total = row.sum()
        if total > 0:
            with np.errstate(divide="ignore"):
                out[c] = np.where(allowed[c], np.log(row / total), -np.inf)
    return out


def fit_initial(counts: np.ndarray, old: np.ndarray) -> np.ndarray:
    total = counts.sum()
    if not total > 0:
        return old
    with np.errstate(divide="ignore"):
        return np.log(counts / total)


# ----------------------------------------------------------------- the EM loop


@dataclass
class Sequence:
    """One contig of training data: ``observations(a, b)`` -> (b - a, M) float64, NaN = missing."""

    name: str
    n_bins: int
    observations: object


@dataclass
class FitState:
    model: SemiMarkovModel
    emissions: EmissionModel
    log_likelihood: float = -math.inf
    history: list = field(default_factory=list)   # (iteration, training, validation or None)
    converged: bool = False


class _EmissionSource:
    """The core's emission callable for one sequence, scored with the current emissions."""

    def __init__(self, seq: Sequence, emissions: EmissionModel):
        self.seq, self.emissions = seq, emissions

    def __call__(self, a, b):
        return self.emissions.log_likelihood(self.seq.observations(a, b))


class _StatsConsumer:
    """Per-bin gamma of one sequence into emission statistics (restarts with the core)."""

    def __init__(self, seq: Sequence, family: str, C: int, M: int):
        self.seq, self.family, self.C, self.M = seq, family, C, M
        self.stats = EmissionStats(family, C, M)

    def chunk(self, start, gamma, boundary, change):
        self.stats.add(gamma, self.seq.observations(start, start + len(gamma)))

    def restart(self):
        self.stats = EmissionStats(self.family, self.C, self.M)


def e_step(model: SemiMarkovModel, emissions: EmissionModel, sequences, *, threads: int = 1,
           chunk_size: int = 32768):
    """(summed ExpectedCounts, summed EmissionStats) over the sequences."""
    from .api import expected_counts

    C, M = model.n_labels, emissions.n_features
    per_job = max(1, threads // max(1, len(sequences)))

    def one(seq):
        consumer = _StatsConsumer(seq, emissions.family, C, M)
        counts = expected_counts(model, _EmissionSource(seq, emissions), seq.n_bins, consumer=consumer,
                                 chunk_size=chunk_size, threads=per_job)
        return counts, consumer.stats

    if threads > 1 and len(sequences) > 1:
        with ThreadPoolExecutor(min(threads, len(sequences))) as pool:
            results = list(pool.map(one, sequences))
    else:
        results = [one(seq) for seq in sequences]
    total, stats = results[0]
    for counts, s in results[1:]:
        total = total + counts
        stats.merge(s)
    return total, stats


def log_likelihood(model: SemiMarkovModel, emissions: EmissionModel, sequences, *, threads: int = 1,
                   chunk_size: int = 32768) -> float:
    """sum of log Z over the sequences (the data's log-likelihood under the model)."""
    from .api import log_partition

    def one(seq):
        return log_partition(model, _EmissionSource(seq, emissions), seq.n_bins, chunk_size=chunk_size)

    if threads > 1 and len(sequences) > 1:
        with ThreadPoolExecutor(min(threads, len(sequences))) as pool:
            return float(sum(pool.map(one, sequences)))
    return float(sum(one(seq) for seq in sequences))


def m_step(state: FitState, counts, stats: EmissionStats, allowed: np.ndarray, pooled_sd=None) -> FitState:
    model = state.model
    K = model.max_duration
    if K > 1:
        table, log_rho = fit_durations(counts, K)
        keep = np.isnan(table).any(axis=0)
        table[:, keep] = model.duration[:, keep]
        old_rho = model.tail_or_none()
        log_rho[keep] = old_rho[keep]
        tail = log_rho if model.tail_log_rho is not None else None
    else:
        table, tail = model.duration, model.tail_log_rho
    transition = fit_transitions(counts.transitions, allowed, model.transition)
    initial = fit_initial(counts.initial, model.initial)
    new_model = SemiMarkovModel(table, tail, transition, initial, model.final)
    return FitState(new_model, fit_emissions(stats, state.emissions, pooled_sd), state.log_likelihood,
                    state.history)


def em(state: FitState, sequences, *, allowed: np.ndarray, max_iter: int = 200, tol: float = 1e-4,
       threads: int = 1, chunk_size: int = 32768, validation=(), pooled_sd=None, report=None) -> FitState:
    """EM from ``state`` until the training log-likelihood changes by less than
    ``tol`` relative, or ``max_iter`` iterations. ``report(iteration, train,
    validation or None, seconds)`` is called after every E-step; the
    log-likelihood reported at iteration i is that of the model after i - 1
    M-steps (iteration 1: the initial model)."""
    import time

    previous = None
    for iteration in range(1, max_iter + 1):
        t0 = time.perf_counter()
        counts, stats = e_step(state.model, state.emissions, sequences, threads=threads, chunk_size=chunk_size)
        train = counts.log_partition
        held = (log_likelihood(state.model, state.emissions, validation, threads=threads, chunk_size=chunk_size)
                if validation else None)
        state.log_likelihood = train
        state.history.append((iteration, train, held))
        converged = previous is not None and abs(train - previous) <= tol * abs(previous)
        if not converged and iteration < max_iter:
            new = m_step(state, counts, stats, allowed, pooled_sd)
            state = FitState(new.model, new.emissions, train, state.history)
        if report is not None:
            report(iteration, train, held, time.perf_counter() - t0)
        if converged:
            state.converged = True
            break
        previous = train
    return state


# ----------------------------------------------------------------- initialisation


def sample_rows(sequences, n: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` observation rows drawn uniformly over all bins (fixed by rng)."""
    total = sum(s.n_bins for s in sequences)
    want = min(n, total)
    picks = np.sort(rng.choice(total, size=want, replace=False))
    out = []
    offset = 0
    for seq in sequences:
        mine = picks[(picks >= offset) & (picks < offset + seq.n_bins)] - offset
        offset += seq.n_bins
        step = 1 << 16
        for a in range(0, seq.n_bins, step):
            sel = mine[(mine >= a) & (mine < a + step)]
            if sel.size:
                out.append(seq.observations(a, min(seq.n_bins, a + step))[sel - a])
    return np.vstack(out)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 20,
              weights: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding then Lloyd iterations on rows ``x`` with ``weights``
    (default 1 each; NaN must be filled already). Returns (k, M) centres."""
    n = len(x)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    first = rng.choice(n, p=w / w.sum())
    centres = [x[first]]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        score = w * d2
        total = score.sum()
        i = rng.choice(n, p=score / total) if total > 0 else rng.integers(n)
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
    centres = np.array(centres, dtype=np.float64)
    for _ in range(iterations):
        label = _nearest(x, centres)
        moved = False
        for j in range(k):
            members = label == j
            mass = w[members].sum()
            if mass > 0:
                new = (w[members, None] * x[members]).sum(axis=0) / mass
                moved = moved or not np.allclose(new, centres[j])
                centres[j] = new
        if not moved:
            break
    return centres


def mixture_log_likelihood(emissions: EmissionModel, rows: np.ndarray, weights: np.ndarray,
                           iterations: int = 10) -> float:
    """Log-likelihood of the weighted ``rows`` under a mixture of the emission
    states, the mixing weights fitted by EM with the emissions held (a start's
    score: how well its states explain the bins, ignoring their order)."""
    L = emissions.log_likelihood(rows)
    log_pi = np.full(L.shape[1], -math.log(L.shape[1]))
    total = -math.inf
    for _ in range(iterations + 1):
        q = L + log_pi
        top = q.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(q - top).sum(axis=1))
        total = float((weights * norm).sum())
        mass = (np.exp(q - norm[:, None]) * weights[:, None]).sum(axis=0)
        with np.errstate(divide="ignore"):
            log_pi = np.log(mass / mass.sum())
    return total


def _filled(x):
    return np.where(np.isnan(x), np.nanmean(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0), x)


def _nearest(x, centres):
    d = (x * x).sum(axis=1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
    return np.argmin(d, axis=1)


def order_by_profile(centres: np.ndarray) -> np.ndarray:
    """A stable state order: by decreasing mean signal over the features, ties by index."""
    return np.lexsort((np.arange(len(centres)), -centres.mean(axis=1)))


def initial_emissions(family: str, features, centres: np.ndarray, x: np.ndarray) -> EmissionModel:
    """Emission parameters from cluster centres (and the sample's spread)."""
    C, M = centres.shape
    if family == "bernoulli":
        return EmissionModel(family, features, {"p": np.clip(centres, 0.01, 0.99)})
    if family == "poisson":
        return EmissionModel(family, features, {"mean": np.maximum(centres, 0.01)})
    if family == "negative_binomial":
        return EmissionModel(family, features, {"mean": np.maximum(centres, 0.01), "dispersion": np.ones((C, M))})
    sd = np.nanstd(x, axis=0)
    return EmissionModel(family, features, {"mean": centres, "sd": np.tile(np.maximum(sd, 1e-3), (C, 1))})


def hard_counts(sequences, emissions: EmissionModel, C: int, K: int):
    """Labels of every bin by its most likely state, and what their runs give:
    first labels, transitions between runs (between bins when K = 1) and run
    lengths as ExpectedCounts, to start EM from."""
    from .expected import ExpectedCounts

    counts = ExpectedCounts.zeros(K, C)
    for seq in sequences:
        labels = np.concatenate([np.argmax(emissions.log_likelihood(seq.observations(a, min(seq.n_bins, a + (1 << 16)))),
                                           axis=1) for a in range(0, seq.n_bins, 1 << 16)])
        if not labels.size:
            continue
        counts.initial[labels[0]] += 1
        if K == 1:
            np.add.at(counts.transitions, (labels[:-1], labels[1:]), 1.0)
            counts.durations[0] += np.bincount(labels, minlength=C)
            continue
        edges = np.flatnonzero(np.diff(labels)) + 1
        starts = np.concatenate([[0], edges])
        lengths = np.diff(np.append(starts, labels.size))
        run_labels = labels[starts]
        np.add.at(counts.transitions, (run_labels[:-1], run_labels[1:]), 1.0)
        short = lengths <= K
        np.add.at(counts.durations, (lengths[short] - 1, run_labels[short]), 1.0)
        np.add.at(counts.tail_segments, run_labels[~short], 1.0)
        np.add.at(counts.tail_excess, run_labels[~short], (lengths[~short] - K).astype(np.float64))
    return counts


def pooled_sd(sample: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.nanstd(sample, axis=0), nan=1.0)


def initial_state(sequences, family: str, features, C: int, K: int, *, seed: int = 0,
                  allowed: np.ndarray | None = None, sample_size: int = 100_000) -> tuple[FitState, np.ndarray]:
    """A deterministic starting model for a seed: k-means++ on a sample of bins
    gives the emissions (states ordered by profile), the bins' most likely states
    give first labels, transitions and run lengths, smoothed so that no entry
    EM could use starts at 0. Returns (state, pooled sd of the sample)."""
    rng = np.random.default_rng(seed)
    x = sample_rows(sequences, sample_size, rng)
    # The best of several k-means++ runs, as scikit-learn's n_init (EM's result
    # depends much on where it starts), judged by the likelihood of the sample
    # under the mixture of the emissions they give, not by the within-cluster
    # sum of squares: that prefers splitting the bulk of the genome (quiescent
    # bins) over separating rare, distinct states, which EM then cannot undo.
    # k-means runs on the distinct rows, weighted by their counts: binary marks
    # have a few hundred patterns among 100,000 bins.
    rows, counts_ = np.unique(_filled(x), axis=0, return_counts=True)
    weights = counts_.astype(np.float64)
    best = None
    for _ in range(KMEANS_RUNS):
        centres = kmeans_pp(rows, min(C, len(rows)), rng, weights=weights)
        if len(centres) < C:   # fewer distinct rows than states: repeat some, slightly apart
            extra = centres[rng.integers(len(centres), size=C - len(centres))]
            centres = np.vstack([centres, extra + rng.normal(0, 1e-3, extra.shape)])
        score = mixture_log_likelihood(initial_emissions(family, features, centres, x), rows, weights)
        if best is None or score > best[0]:
            best = (score, centres)
    centres = best[1]
    centres = centres[order_by_profile(centres)]
    emissions = initial_emissions(family, features, centres, x)
    counts = hard_counts(sequences, emissions, C, K)
    if allowed is None:
        allowed = np.ones((C, C), dtype=bool) if K == 1 else ~np.eye(C, dtype=bool)
    with np.errstate(divide="ignore"):
        transition = np.where(allowed, np.log(np.where(allowed, counts.transitions + 1.0, 1.0)), -np.inf)
    transition = transition - np.logaddexp.reduce(np.where(allowed, transition, -np.inf), axis=1,
                                                  keepdims=True)
    initial = np.log((counts.initial + 1.0) / (counts.initial.sum() + C))
    if K == 1:
        model = SemiMarkovModel(np.zeros((1, C)), None, transition, initial, np.zeros(C))
    else:
        # Run lengths mixed half and half with a geometric law of the same mean,
        # so that every duration starts possible.
        smoothed = counts
        d = np.arange(1, K + 1, dtype=np.float64)[:, None]
        n_runs = counts.durations.sum(axis=0) + counts.tail_segments
        mean = np.where(n_runs > 0, ((d * counts.durations).sum(axis=0) + K * counts.tail_segments
                                     + counts.tail_excess) / np.maximum(n_runs, 1), 4.0)
        q = 1.0 - 1.0 / np.maximum(mean, 1.0 + 1e-6)                  # geometric on d >= 1
        geo = (1.0 - q) * q ** (d - 1)                                 # (K, C)
        weight = np.maximum(n_runs, 1.0)
        smoothed.durations = 0.5 * counts.durations + 0.5 * weight * geo
        smoothed.tail_segments = 0.5 * counts.tail_segments + 0.5 * weight * q ** K
        smoothed.tail_excess = 0.5 * counts.tail_excess + 0.5 * weight * q ** K / (1.0 - q)
        table, log_rho = fit_durations(smoothed, K)
        model = SemiMarkovModel(table, log_rho, transition, initial, np.zeros(C))
    return FitState(model, emissions), pooled_sd(x)


def semi_markov_from_hmm(hmm: SemiMarkovModel, K: int, allowed: np.ndarray) -> SemiMarkovModel:
    """The HMM's runs as a semi-Markov model with the same run-length law: label
    c's duration is geometric with ratio p_stay (table to K, tail beyond), the
    transitions between different labels renormalised (to ``allowed``)."""
    C = hmm.n_labels
    stay = np.clip(np.exp(np.diag(hmm.transition)), RHO_MIN, 1.0 - RHO_MIN)
    d = np.arange(1, K + 1, dtype=np.float64)[:, None]
    table = np.log1p(-stay)[None, :] + (d - 1) * np.log(stay)[None, :]
    off = np.where(allowed & ~np.eye(C, dtype=bool), hmm.transition, -np.inf)
    norm = np.logaddexp.reduce(off, axis=1, keepdims=True)
    transition = np.where(np.isfinite(norm), off - np.where(np.isfinite(norm), norm, 0.0), -np.inf)
    return SemiMarkovModel(table, np.log(stay), transition, hmm.initial, hmm.final)
