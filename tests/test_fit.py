"""Expected counts (docs/algorithms.md, "Expected counts") against brute-force enumeration and the plain
reference, and EM (docs/algorithms.md, "Fitting: EM"): the closed-form M-step, Baum-Welch for K = 1,
monotone log-likelihood, recovery of a simulated model, and the `flashseg fit` command."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from brute import enumerate_segmentations, random_case, score_segmentation
from cli_helpers import run_main
from flashseg.cli import cli
from flashseg.core import ArrayEmissions, SemiMarkovModel, expected_counts, log_partition
from flashseg.core import fit as em
from flashseg.core import reference
from flashseg.core.emissions import EmissionModel
from flashseg.io.model import load_model

ROOT = Path(__file__).resolve().parents[1]
MARKS_MODEL = ROOT / "configs" / "models" / "marks-4.yaml"


def brute_counts(model, x):
    T, C = x.shape
    K = model.max_duration
    segmentations = enumerate_segmentations(T, C)
    scores = np.array([score_segmentation(model, x, s) for s in segmentations])
    log_z = np.logaddexp.reduce(scores)
    with np.errstate(invalid="ignore"):
        weights = np.exp(scores - log_z)
    out = {"initial": np.zeros(C), "transitions": np.zeros((C, C)), "durations": np.zeros((K, C)),
           "tail_segments": np.zeros(C), "tail_excess": np.zeros(C)}
    for p, segs in zip(weights, segmentations):
        if not p > 0:
            continue
        out["initial"][segs[0][2]] += p
        for (_, _, c), (_, _, c2) in zip(segs[:-1], segs[1:]):
            out["transitions"][c, c2] += p
        for s, e, c in segs:
            d = e - s
            if d <= K:
                out["durations"][d - 1, c] += p
            else:
                out["tail_segments"][c] += p
                out["tail_excess"][c] += p * (d - K)
    return log_z, out


def assert_counts(got, log_z, want, atol=1e-10):
    assert got.log_partition == pytest.approx(log_z, abs=1e-9 * max(1.0, abs(log_z)))
    for name, value in want.items():
        np.testing.assert_allclose(getattr(got, name), value, atol=atol, rtol=1e-9, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), T=st.integers(1, 7), C=st.integers(1, 3), K=st.integers(1, 4),
       tail=st.sampled_from(["none", "geometric", "mixed"]), self_loops=st.booleans(),
       p_neginf=st.sampled_from([0.0, 0.2]))
def test_expected_counts_match_brute_force(seed, T, C, K, tail, self_loops, p_neginf):
    model, x = random_case(seed, T, C, K, tail, self_loops, p_neginf, 2.0)
    log_z, want = brute_counts(model, x)
    if not np.isfinite(log_z):
        return
    for chunk in (1, 3, 64):
        assert_counts(expected_counts(model, ArrayEmissions(x), chunk_size=chunk), log_z, want)


def reference_counts(model, x):
    """The same statistics from the plain reference's E, A, B, G (log space, every duration spelled out)."""
    T, C = x.shape
    K = model.max_duration
    E, A = reference.forward(model, x)
    B, G = reference.backward(model, x)
    log_z = reference.log_partition(model, x)
    durations = np.zeros((K, C))
    tail_n, tail_x = np.zeros(C), np.zeros(C)
    rho = model.tail_or_none()
    phi = [None] + [model.log_duration(d) for d in range(1, T + 1)]
    for s in range(T):
        run = np.zeros(C)          # segment sums added bin by bin (no differences of -inf)
        for e in range(s + 1, T + 1):
            d = e - s
            run = run + x[e - 1]
            with np.errstate(invalid="ignore"):
                v = E[s] + run + phi[d] + B[e] - log_z
            p = np.where(np.isnan(v), 0.0, np.exp(v))
            if d <= K:
                durations[d - 1] += p
            else:
                tail_n += np.where(np.isfinite(rho), p, 0.0)
                tail_x += np.where(np.isfinite(rho), p * (d - K), 0.0)
    with np.errstate(invalid="ignore"):
        trans = np.exp(A[1:T, :, None] + model.transition[None] + G[1:T, None, :] - log_z)
    return log_z, {"initial": np.exp(E[0] + G[0] - log_z), "transitions": np.nan_to_num(trans).sum(axis=0),
                   "durations": durations, "tail_segments": tail_n, "tail_excess": tail_x}


@pytest.mark.parametrize("tail,scale", [("geometric", 3.0), ("mixed", 3.0), ("none", 3.0), ("geometric", 400.0)])
def test_expected_counts_match_the_reference_at_realistic_shapes(tail, scale):
    # scale 400: scores hundreds of nats apart, so the linear mirror of the duration
    # ring must hand over to the log ring where its entries would flush
    model, x = random_case(7, 600, 4, 12, tail, False, 0.05, scale)
    log_z, want = reference_counts(model, x)
    for chunk in (37, 600):
        assert_counts(expected_counts(model, ArrayEmissions(x), chunk_size=chunk), log_z, want, atol=1e-9)


def test_expected_counts_without_the_duration_mirror():
    # a duration score above e^50 (a CRF's, not a probability) turns the linear mirror
    # off for its label: its duration terms come from the log ring instead
    model, x = random_case(5, 400, 3, 10, "geometric", False, 0.05, 3.0)
    duration = model.duration.copy()
    duration[:, 1] += 60.0
    model = SemiMarkovModel(duration, model.tail_log_rho, model.transition, model.initial, model.final)
    log_z, want = reference_counts(model, x)
    for chunk in (41, 400):
        assert_counts(expected_counts(model, ArrayEmissions(x), chunk_size=chunk), log_z, want, atol=1e-9)


@pytest.mark.parametrize("K,tail,self_loops", [(16, "geometric", False), (1, "none", True)])
def test_exact_path_threads_and_chunks_agree(monkeypatch, K, tail, self_loops):
    # K = 1: an HMM's chunk-parallel rows carry scale offsets, which its kernel
    # takes as one factor per chunk
    from flashseg.core import driver

    model, x = random_case(3, 5000, 5, K, tail, self_loops, 0.0, 4.0)
    fast = expected_counts(model, ArrayEmissions(x), chunk_size=700)
    parallel = expected_counts(model, ArrayEmissions(x), chunk_size=300, threads=2)
    monkeypatch.setattr(driver, "CERTIFICATE_TOLERANCE", -1.0)     # every fast pass fails: log space
    exact = expected_counts(model, ArrayEmissions(x), chunk_size=1000)
    for other in (parallel, exact):
        assert other.log_partition == pytest.approx(fast.log_partition, rel=1e-12)
        for name in ("initial", "transitions", "durations", "tail_segments", "tail_excess"):
            np.testing.assert_allclose(getattr(other, name), getattr(fast, name), rtol=1e-8, atol=1e-9)
    assert fast.segments.sum() == pytest.approx(fast.transitions.sum() + 1.0)


class _GammaSums:
    """A per-bin consumer that keeps what it was fed (and restarts with the core)."""

    def __init__(self):
        self.restart()

    def chunk(self, start, gamma, boundary, change):
        self.rows.append((start, gamma.copy(), boundary.copy(), change.copy()))

    def restart(self):
        self.rows = []


@pytest.mark.parametrize("exact", [False, True])
def test_counts_behind_the_passes_are_bit_for_bit_the_same(monkeypatch, exact):
    # threads=2 with K > 1: the counts and the consumer run on a helper thread
    # (core/pipeline.py) fed copies of the rows; nothing may change, not even
    # rounding, on the fast path or after the certificate's fallback
    from flashseg.core import driver

    if exact:
        monkeypatch.setattr(driver, "CERTIFICATE_TOLERANCE", -1.0)
    model, x = random_case(4, 3000, 4, 12, "geometric", False, 0.02, 4.0)
    runs = []
    for threads in (1, 2):
        consumer = _GammaSums()
        counts = expected_counts(model, ArrayEmissions(x), chunk_size=250, threads=threads, consumer=consumer)
        runs.append((counts, consumer.rows))
    (one, rows1), (two, rows2) = runs
    assert one.log_partition == two.log_partition
    for name in ("initial", "transitions", "durations", "tail_segments", "tail_excess"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    assert len(rows1) == len(rows2) == 12
    for a, b in zip(rows1, rows2):
        assert a[0] == b[0] and all(np.array_equal(u, v) for u, v in zip(a[1:], b[1:]))


def test_an_error_behind_the_passes_reaches_the_caller():
    class Broken(_GammaSums):
        def chunk(self, start, gamma, boundary, change):
            if start > 0:
                raise RuntimeError("consumer failed")
            super().chunk(start, gamma, boundary, change)

    model, x = random_case(4, 2000, 3, 8, "geometric", False, 0.0, 2.0)
    with pytest.raises(RuntimeError, match="consumer failed"):
        expected_counts(model, ArrayEmissions(x), chunk_size=250, threads=2, consumer=Broken())


def test_counts_are_the_gradient_of_log_z():
    model, x = random_case(11, 300, 3, 6, "geometric", True, 0.0, 2.0)
    counts = expected_counts(model, ArrayEmissions(x))
    h = 1e-5

    def log_z_with(**change):
        parts = dict(duration=model.duration, tail_log_rho=model.tail_log_rho, transition=model.transition,
                     initial=model.initial, final=model.final)
        for key, (index, delta) in change.items():
            a = parts[key].copy()
            a[index] += delta
            parts[key] = a
        return log_partition(SemiMarkovModel(**parts), ArrayEmissions(x))

    def slope(key, index):
        return (log_z_with(**{key: (index, h)}) - log_z_with(**{key: (index, -h)})) / (2 * h)

    assert slope("transition", (0, 2)) == pytest.approx(counts.transitions[0, 2], rel=1e-5)
    assert slope("duration", (3, 1)) == pytest.approx(counts.durations[3, 1], rel=1e-5)
    assert slope("initial", 2) == pytest.approx(counts.initial[2], rel=1e-5, abs=1e-8)
    assert slope("tail_log_rho", 1) == pytest.approx(counts.tail_excess[1], rel=1e-5)


# ------------------------------------------------------------ the M-step


def test_duration_m_step_sums_to_one_and_maximises():
    rng = np.random.default_rng(0)
    K, C = 6, 3
    from flashseg.core.expected import ExpectedCounts

    counts = ExpectedCounts.zeros(K, C)
    counts.durations[:] = rng.gamma(1.0, 5.0, (K, C))
    counts.tail_segments[:] = rng.gamma(1.0, 3.0, C)
    counts.tail_excess[:] = counts.tail_segments * rng.uniform(1, 20, C)
    table, log_rho = em.fit_durations(counts, K)

    def objective(tab, lr, c):
        phi_k = tab[K - 1]
        return ((counts.durations[:, c] * tab).sum() + counts.tail_segments[c] * phi_k
                + counts.tail_excess[c] * lr)

    for c in range(C):
        rho = math.exp(log_rho[c])
        total = np.exp(table[:, c]).sum() + np.exp(table[K - 1, c]) * rho / (1 - rho)
        assert total == pytest.approx(1.0, abs=1e-14)
        best = objective(table[:, c], log_rho[c], c)
        for _ in range(50):                          # any other normalised table + tail scores lower
            p = np.exp(table[:, c]) * np.exp(rng.normal(0, 0.05, K))
            r = min(0.999, rho * math.exp(rng.normal(0, 0.05)))
            p /= p[:-1].sum() + p[-1] / (1 - r)
            assert objective(np.log(p), math.log(r), c) <= best + 1e-12


def baum_welch(x, p, trans, init, iterations):
    """An independent Baum-Welch for a Bernoulli HMM (scaled forward-backward, final free)."""
    T, M = x.shape
    for _ in range(iterations):
        e = np.prod(np.where(x[:, None, :] == 1, p[None], 1 - p[None]), axis=2)          # (T, C)
        alpha = np.zeros_like(e)
        scale = np.zeros(T)
        alpha[0] = init * e[0]
        scale[0] = alpha[0].sum()
        alpha[0] /= scale[0]
        for t in range(1, T):
            alpha[t] = (alpha[t - 1] @ trans) * e[t]
            scale[t] = alpha[t].sum()
            alpha[t] /= scale[t]
        beta = np.ones_like(e)
        for t in range(T - 2, -1, -1):
            beta[t] = trans @ (e[t + 1] * beta[t + 1]) / scale[t + 1]
        gamma = alpha * beta
        xi = np.einsum("tc,cd,td->cd", alpha[:-1], trans, e[1:] * beta[1:] / scale[1:, None])
        log_l = np.log(scale).sum()
        init = gamma[0]
        trans = xi / xi.sum(axis=1, keepdims=True)
        p = (gamma.T @ x) / gamma.sum(axis=0)[:, None]
    return p, trans, init, log_l


def test_k1_fit_is_baum_welch():
    rng = np.random.default_rng(5)
    C, M, T = 3, 4, 4000
    truth = rng.uniform(0.05, 0.95, (C, M))
    labels = np.repeat(rng.integers(0, C, T // 20), 20)
    x = (rng.random((T, M)) < truth[labels]).astype(float)
    p0 = rng.uniform(0.2, 0.8, (C, M))
    trans0 = rng.dirichlet(np.ones(C) * 5, C) * 0.3 + np.eye(C) * 0.7
    init0 = np.ones(C) / C
    seq = em.Sequence("s", T, lambda a, b: x[a:b])
    state = em.FitState(SemiMarkovModel(np.zeros((1, C)), None, np.log(trans0), np.log(init0), np.zeros(C)),
                        EmissionModel("bernoulli", tuple("abcd"), {"p": p0}))
    state = em.em(state, [seq], allowed=np.ones((C, C), bool), max_iter=6, tol=0.0, chunk_size=777)
    p, trans, init, log_l = baum_welch(x, p0, trans0, init0, 6)
    assert state.log_likelihood == pytest.approx(log_l, rel=1e-12)     # of the model after 5 updates
    p, trans, init, _ = baum_welch(x, p0, trans0, init0, 5)
    # em() made 5 updates too (the 6th E-step only measured)
    np.testing.assert_allclose(state.emissions.params["p"], p, atol=1e-9)
    np.testing.assert_allclose(np.exp(state.model.transition), trans, atol=1e-9)
    np.testing.assert_allclose(np.exp(state.model.initial), init, atol=1e-9)


# ------------------------------------------------------------ EM on simulated data


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "sim"
    result = CliRunner().invoke(cli, ["simulate", "-m", str(MARKS_MODEL), "--contig", "chr1:16000000",
                                      "--contig", "chr2:8000000", "-o", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    return out


def sequences_of(path):
    from flashseg.io.observations import open_observations

    f = open_observations(path)
    return [em.Sequence(c, f.n_bins(c), (lambda c: lambda a, b: f.read(c, a, b))(c)) for c in f.contigs]


def test_em_never_decreases_and_recovers_the_model(simulated):
    truth = load_model(MARKS_MODEL)
    seqs = sequences_of(simulated / "observations.h5")
    C, K = 4, 64
    state, psd = em.initial_state(seqs, "bernoulli", truth.emissions.features, C, 1, seed=0)
    state = em.em(state, seqs, allowed=np.ones((C, C), bool), max_iter=30, tol=1e-6, pooled_sd=psd)
    hmm_history = [h[1] for h in state.history]
    allowed = ~np.eye(C, dtype=bool)
    state = em.FitState(em.semi_markov_from_hmm(state.model, K, allowed), state.emissions)
    state = em.em(state, seqs, allowed=allowed, max_iter=40, tol=1e-7, pooled_sd=psd)
    for history in (hmm_history, [h[1] for h in state.history]):
        steps = np.diff(history)
        assert (steps >= -1e-9 * abs(history[-1])).all(), steps
    # states come out ordered by mean signal: match them to the truth by emission profile
    order = [int(np.argmin(np.abs(state.emissions.params["p"] - row).sum(axis=1)))
             for row in truth.emissions.params["p"]]
    assert sorted(order) == list(range(C))
    np.testing.assert_allclose(state.emissions.params["p"][order], truth.emissions.params["p"], atol=0.03)
    fitted = state.model.mean_durations()[order]
    np.testing.assert_allclose(fitted, truth.model.mean_durations(), rtol=0.1)


def invoke(*argv, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_fit_command_writes_a_model_every_command_reads(simulated, tmp_path, capsys):
    obs = simulated / "observations.h5"
    out, log = tmp_path / "fitted.yaml", tmp_path / "iterations.tsv"
    invoke("fit", "--observations", obs, "--states", 4, "--max-duration", 16, "-o", out, "--log", log,
           "--validation", obs, "--max-iter", 4, "--seed", 3)
    text = out.read_text()
    assert text.startswith("# Fitted by flashseg") and "sha256=" in text and "# command: flashseg" in text
    spec = load_model(out)
    assert spec.warnings == [] and spec.max_duration == 16 and spec.label_names == ["E1", "E2", "E3", "E4"]
    assert spec.emissions.family == "bernoulli" and spec.tail == "geometric"
    assert (np.diag(spec.model.transition) == -np.inf).all()
    rows = [line.split("\t") for line in log.read_text().splitlines()[1:]]
    assert [r[1] for r in rows].count("em") == 4 and all(r[4] != "NA" for r in rows)
    train = [float(r[3]) for r in rows if r[1] == "em"]
    assert np.all(np.diff(train) >= -1e-9 * abs(train[-1]))
    invoke("decode", "-m", out, "--observations", obs, "-o", tmp_path / "calls.bed")
    info = invoke("info", "--json", out).output
    assert '"family": "bernoulli"' in info
    # --init: labels, K and family come from the model; conflicts are usage errors
    again = tmp_path / "again.yaml"
    invoke("fit", "--observations", obs, "--init", out, "-o", again, "--max-iter", 2)
    assert load_model(again).label_names == spec.label_names
    code, _, err = run_main(["fit", "--observations", str(obs), "--init", str(out), "--max-duration", "8",
                             "-o", str(tmp_path / "x.yaml")], capsys)
    assert code == 2 and "--max-duration 8 (the init model has 16)" in err
    code, _, err = run_main(["fit", "--observations", str(obs), "--states", "3", "-o", str(obs)], capsys)
    assert code == 2 and not (tmp_path / "x.yaml").exists()


def test_plain_hmm_fit_writes_the_hmm_form(simulated, tmp_path):
    out = tmp_path / "hmm.yaml"
    invoke("fit", "--observations", simulated / "observations.h5", "--states", 3, "--max-duration", 1, "-o", out,
           "--max-iter", 3)
    spec = load_model(out)
    assert spec.model.is_plain_hmm and spec.tail == "none"
    assert np.isfinite(np.diag(spec.model.transition)).all()
    data = yaml.safe_load(out.read_text())
    assert data["final"] == "free" and data["labels"][0]["duration"] == {"family": "table", "log": [0.0]}
