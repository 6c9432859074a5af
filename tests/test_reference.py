"""The plain reference (flashseg.core.reference) against brute-force enumeration,
an independent scaled HMM forward-backward, and autograd of logZ."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brute import (BruteForce, case_strategy, enumerate_segmentations, n_segmentations,
                   random_emissions, random_model, score_segmentation)
from flashseg.core import reference as ref
from flashseg.core.model import SemiMarkovModel
from flashseg.errors import NoValidSegmentation

TOL = dict(rtol=0, atol=1e-10)
BRUTE_LIMIT = 50_000    # segmentations enumerated per case
SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_logz(a, b):
    assert abs(a - b) <= 1e-10 + 1e-13 * abs(b), (a, b)


def lse(a):
    a = np.asarray(a, dtype=float)
    m = a.max()
    return m if m == -np.inf else m + math.log(np.exp(a - m).sum())


def all_segments(T, C):
    return [(s, e, c) for s in range(T) for e in range(s + 1, T + 1) for c in range(C)]


# ------------------------------------------------------------ brute force itself

def test_enumeration_tiles_and_counts():
    for T in range(1, 6):
        for C in range(1, 4):
            segs = enumerate_segmentations(T, C)
            assert len(segs) == n_segmentations(T, C) == len(set(segs))
            for seg in segs:
                assert seg[0][0] == 0 and seg[-1][1] == T
                assert all(a[1] == b[0] for a, b in zip(seg, seg[1:]))
                assert all(s < e and 0 <= c < C for s, e, c in seg)


def test_brute_vectorised_scores_equal_plain_scoring():
    rng = np.random.default_rng(1)
    for tail in ("none", "geometric", "mixed"):
        for K in (1, 2, 5):
            model = random_model(rng, 3, K, tail, True, 0.2)
            x = random_emissions(rng, 5, 3, 2.0, 0.2)
            bf = BruteForce(model, x)
            plain = np.array([score_segmentation(model, x, s) for s in bf.segmentations])
            np.testing.assert_array_equal(np.isfinite(plain), np.isfinite(bf.scores))
            fin = np.isfinite(plain)
            np.testing.assert_allclose(bf.scores[fin], plain[fin], rtol=0, atol=1e-12)


def test_brute_tail_formula_by_hand():
    # one label, K = 2, rho = 0.5: dur(4) = dur(2) + 2 log 0.5
    model = SemiMarkovModel(np.log([[0.3], [0.2]]), np.log([0.5]), np.array([[-np.inf]]),
                            np.zeros(1), np.zeros(1))
    x = np.array([[1.0], [2.0], [-1.0], [0.5]])
    bf = BruteForce(model, x)
    assert bf.segmentations[0] == ((0, 4, 0),)
    assert bf.log_partition == pytest.approx(2.5 + math.log(0.2) + 2 * math.log(0.5), abs=1e-14)


# ------------------------------------------------------------ reference == brute force

@SETTINGS
@given(case_strategy(max_segmentations=BRUTE_LIMIT))
def test_partition_and_posteriors_match_brute_force(case):
    check_against_brute_force(*case)


@pytest.mark.parametrize("seed", range(12))
def test_largest_shapes_match_brute_force(seed):
    # hypothesis favours small shapes; make sure the largest ones run every time
    rng = np.random.default_rng(1000 + seed)
    T, C = (8, 3) if seed % 3 == 0 else (7, 3) if seed % 3 == 1 else (8, 2)
    K = [1, 2, 3, T - 1, T, T + 1][seed % 6]
    tail = ("none", "geometric", "mixed")[seed % 3]
    p = 0.0 if seed < 6 else 0.1
    while True:
        model = random_model(rng, C, K, tail, seed % 2 == 0, p)
        x = random_emissions(rng, T, C, 2.0, p)
        if BruteForce(model, x).log_partition > -np.inf:
            break
    check_against_brute_force(model, x)


def check_against_brute_force(model, x):
    bf = BruteForce(model, x)
    T, C = x.shape
    if bf.log_partition == -np.inf:
        for f in (ref.log_partition, ref.posteriors, ref.viterbi,
                  lambda m, y: ref.sample(m, y, 1, np.random.default_rng(0)),
                  lambda m, y: ref.segment_posterior(m, y, [(0, T, 0)]),
                  lambda m, y: ref.run_posterior(m, y, [(0, T, 0)])):
            with pytest.raises(NoValidSegmentation):
                f(model, x)
        return
    logz = ref.log_partition(model, x)
    assert_logz(logz, bf.log_partition)

    E, A = ref.forward(model, x)
    B, G = ref.backward(model, x)
    assert not np.isnan(E).any() and not np.isnan(A).any()
    assert not np.isnan(B).any() and not np.isnan(G).any()
    assert_logz(lse(model.initial + G[0]), bf.log_partition)
    np.testing.assert_allclose(np.exp(E[:T] + G[:T] - logz), bf.start_probs(), **TOL)
    np.testing.assert_allclose(np.exp(A[1:] + B[1:] - logz), bf.end_probs(), **TOL)

    gamma, boundary, change = ref.posteriors(model, x)
    np.testing.assert_allclose(gamma, bf.gamma(), **TOL)
    np.testing.assert_allclose(boundary, bf.boundary(), **TOL)
    np.testing.assert_allclose(change, bf.change(), **TOL)
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, **TOL)

    segs = all_segments(T, C)
    np.testing.assert_allclose(ref.segment_posterior(model, x, segs),
                               [bf.segment_posterior(*s) for s in segs], **TOL)
    np.testing.assert_allclose(ref.run_posterior(model, x, segs),
                               [bf.run_posterior(*s) for s in segs], **TOL)


@SETTINGS
@given(case_strategy(max_segmentations=BRUTE_LIMIT))
def test_viterbi_matches_brute_force(case):
    model, x = case
    bf = BruteForce(model, x)
    if bf.log_partition == -np.inf:
        with pytest.raises(NoValidSegmentation):
            ref.viterbi(model, x)
        return
    score, path = ref.viterbi(model, x)
    best, best_path = bf.map()
    assert_logz(score, best)
    assert_logz(score_segmentation(model, x, path), best)
    if bf.map_gap() > 1e-6:
        assert tuple(path) == best_path


@st.composite
def integer_case(draw):
    """Integer-valued scores: sums are exact in any order, so ties are exact."""
    C = draw(st.integers(1, 3))
    T = draw(st.integers(1, 7 if C < 3 else 6))
    K = draw(st.integers(1, T + 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vals = np.array([-np.inf, -2.0, -1.0, 0.0])

    def pick(shape, p):
        return rng.choice(vals, size=shape, p=p)

    p = [0.1, 0.2, 0.3, 0.4]
    tail = draw(st.sampled_from(["none", "geometric", "mixed"]))
    rho = None if tail == "none" else rng.choice([-1.0, -2.0], size=C)
    if tail == "mixed":
        rho = np.where(rng.random(C) < 0.5, -np.inf, rho)
    model = SemiMarkovModel(pick((K, C), p), rho, pick((C, C), p), pick(C, p), pick(C, p))
    x = pick((T, C), [0.05, 0.25, 0.35, 0.35])
    return model, x


@SETTINGS
@given(integer_case())
def test_viterbi_tie_breaking_matches_spec(case):
    model, x = case
    bf = BruteForce(model, x)
    if bf.log_partition == -np.inf:
        return
    score, path = ref.viterbi(model, x)
    best, best_path = bf.map_tiebroken()
    assert score == best
    assert tuple(path) == best_path


def test_viterbi_tie_breaking_all_equal():
    T, C, K = 5, 2, 3
    zeros = dict(duration=np.zeros((K, C)), tail_log_rho=None,
                 initial=np.zeros(C), final=np.zeros(C))
    x = np.zeros((T, C))
    loops = SemiMarkovModel(transition=np.zeros((C, C)), **zeros)
    assert ref.viterbi(loops, x)[1] == [(0, 1, 0), (1, 2, 0), (2, 3, 0), (3, 4, 0), (4, 5, 0)]
    no_loops = SemiMarkovModel(transition=np.array([[-np.inf, 0], [0, -np.inf]]), **zeros)
    assert ref.viterbi(no_loops, x)[1] == [(0, 1, 0), (1, 2, 1), (2, 3, 0), (3, 4, 1), (4, 5, 0)]


@SETTINGS
@given(case_strategy(max_segmentations=BRUTE_LIMIT))
def test_posterior_decode_is_argmax_of_gamma(case):
    model, x = case
    bf = BruteForce(model, x)
    if bf.log_partition == -np.inf:
        return
    g = bf.gamma()
    top = np.sort(g, axis=1)
    if g.shape[1] > 1 and np.min(top[:, -1] - top[:, -2]) < 1e-8:
        return  # near-tie in a bin: argmax depends on rounding
    labels = np.argmax(g, axis=1)
    expected = []
    for i, c in enumerate(labels):
        if expected and expected[-1][2] == c:
            expected[-1] = (expected[-1][0], i + 1, int(c))
        else:
            expected.append((i, i + 1, int(c)))
    assert ref.posterior_decode(model, x) == expected


def test_posterior_decode_ties_take_lowest_label():
    # two labels, identical everything: gamma = 1/2 each, label 0 everywhere
    C = 2
    model = SemiMarkovModel(np.zeros((2, C)), None, np.zeros((C, C)), np.zeros(C), np.zeros(C))
    assert ref.posterior_decode(model, np.zeros((4, C))) == [(0, 4, 0)]


@SETTINGS
@given(case_strategy(max_T=12))
def test_backward_is_forward_of_reversed_model(case):
    model, x = case
    T = x.shape[0]
    E, A = ref.forward(model, x)
    B, G = ref.backward(model, x)
    Er, Ar = ref.forward(model.reversed(), x[::-1])
    # reading right to left, "segment starts at s and everything after" is
    # "segment ends at T - s and everything before"
    for ours, theirs in ((G, Ar), (B, Er)):
        rev = theirs[::-1]
        fin = np.isfinite(rev)
        np.testing.assert_array_equal(np.isfinite(ours[1:T]), fin[1:T])
        np.testing.assert_allclose(ours[1:T][fin[1:T]], rev[1:T][fin[1:T]], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(G[0], Ar[T], rtol=1e-12, atol=1e-10)


# ------------------------------------------------------------ sampling

def chi_square_p(samples, probs: dict) -> float:
    from scipy.stats import chisquare
    n = len(samples)
    counts = {}
    for s in samples:
        key = tuple(map(tuple, s))
        assert probs.get(key, 0.0) > 0.0, f"drew a segmentation of probability 0: {key}"
        counts[key] = counts.get(key, 0) + 1
    keys = sorted(probs, key=probs.get, reverse=True)
    obs, exp_, rare_obs, rare_exp = [], [], 0, 0.0
    for k in keys:
        if probs[k] * n >= 5:
            obs.append(counts.get(k, 0))
            exp_.append(probs[k] * n)
        else:  # pool cells too rare for the chi-square approximation
            rare_obs += counts.get(k, 0)
            rare_exp += probs[k] * n
    if rare_exp > 0:
        obs.append(rare_obs)
        exp_.append(rare_exp)
    exp_ = np.array(exp_) * (n / np.sum(exp_))
    return chisquare(obs, exp_).pvalue


@pytest.mark.parametrize("tail,self_loops,p_neginf,seed,n", [
    ("geometric", True, 0.0, 11, 20_000),
    ("mixed", False, 0.2, 12, 10_000),
    ("none", True, 0.15, 13, 10_000),
])
def test_samples_follow_enumerated_probabilities(tail, self_loops, p_neginf, seed, n):
    rng = np.random.default_rng(seed)
    T, C = 5, 2
    while True:  # a case with a valid segmentation (fixed seed: deterministic)
        model = random_model(rng, C, 3, tail, self_loops, p_neginf)
        x = random_emissions(rng, T, C, 1.0, p_neginf)
        bf = BruteForce(model, x)
        if bf.log_partition > -np.inf and np.count_nonzero(bf.probs > 1e-3) >= 5:
            break
    samples = ref.sample(model, x, n, np.random.default_rng(seed))
    assert chi_square_p(samples, bf.probability_of()) > 1e-3


def test_sample_is_reproducible_and_tiles():
    rng = np.random.default_rng(5)
    model = random_model(rng, 3, 4, "geometric", True, 0.0)
    x = random_emissions(rng, 40, 3, 1.0, 0.0)
    a = ref.sample(model, x, 20, np.random.default_rng(99))
    b = ref.sample(model, x, 20, np.random.default_rng(99))
    assert a == b
    for seg in a:
        assert seg[0][0] == 0 and seg[-1][1] == 40
        assert all(p[1] == q[0] for p, q in zip(seg, seg[1:]))
        assert np.isfinite(score_segmentation(model, x, seg))


# ------------------------------------------------------------ HMM special case

def hmm_forward_backward(log_init, log_trans, log_final, x):
    """Textbook scaled (linear-space) forward-backward with end weights."""
    P = np.exp(log_trans)
    b = np.exp(x)
    T, C = x.shape
    alpha = np.empty((T, C))
    scale = np.empty(T)
    a = np.exp(log_init) * b[0]
    for t in range(T):
        if t > 0:
            a = (alpha[t - 1] @ P) * b[t]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    end = float(alpha[T - 1] @ np.exp(log_final))
    log_z = np.log(scale).sum() + math.log(end)
    beta = np.empty((T, C))
    beta[T - 1] = np.exp(log_final) / end
    for t in range(T - 2, -1, -1):
        beta[t] = P @ (b[t + 1] * beta[t + 1]) / scale[t + 1]
    gamma = alpha * beta
    stay = np.ones(T)
    for t in range(T - 1):
        xi = alpha[t][:, None] * P * (b[t + 1] * beta[t + 1])[None, :] / scale[t + 1]
        stay[t + 1] = np.trace(xi)
    return log_z, gamma, 1.0 - stay


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_hmm_case_equals_ordinary_forward_backward(T, C, seed):
    rng = np.random.default_rng(seed)
    log_trans = rng.normal(-1.0, 1.0, size=(C, C))
    model = SemiMarkovModel(np.zeros((1, C)), None, log_trans,
                            rng.normal(-1, 1, size=C), rng.normal(0, 1, size=C))
    x = rng.normal(0.0, 2.0, size=(T, C))
    log_z, gamma_hmm, change_hmm = hmm_forward_backward(
        model.initial, log_trans, model.final, x)
    assert_logz(ref.log_partition(model, x), log_z)
    gamma, boundary, change = ref.posteriors(model, x)
    np.testing.assert_allclose(gamma, gamma_hmm, **TOL)
    np.testing.assert_allclose(boundary, 1.0, **TOL)
    np.testing.assert_allclose(change[1:], change_hmm[1:], **TOL)


def test_long_hmm_keeps_reference_precision():
    # logZ ~ -5000: a float64 log-space reference would drift ~1e-10 in gamma here
    rng = np.random.default_rng(8)
    T, C = 2000, 3
    log_trans = np.log(rng.dirichlet(np.ones(C) * 3, size=C))
    model = SemiMarkovModel(np.zeros((1, C)), None, log_trans, np.full(C, -math.log(C)),
                            np.zeros(C))
    x = rng.normal(-2.0, 1.0, size=(T, C))
    log_z, gamma_hmm, change_hmm = hmm_forward_backward(model.initial, log_trans, model.final, x)
    assert_logz(ref.log_partition(model, x), log_z)
    gamma, _, change = ref.posteriors(model, x)
    np.testing.assert_allclose(gamma, gamma_hmm, rtol=0, atol=1e-12)
    np.testing.assert_allclose(change[1:], change_hmm[1:], rtol=0, atol=1e-12)


def test_hmm_case_equals_hmmlearn():
    hmm_base = pytest.importorskip("hmmlearn.base", reason="hmmlearn (bench extra) not installed")

    class GivenLogLikelihoodHMM(hmm_base.BaseHMM):
        def _compute_log_likelihood(self, X):
            return X

        def _init(self, X, lengths=None):
            pass

        def _get_n_fit_scalars_per_param(self):
            return {}

    rng = np.random.default_rng(3)
    T, C = 200, 3
    trans = rng.dirichlet(np.ones(C), size=C)
    start = rng.dirichlet(np.ones(C))
    x = rng.normal(0.0, 2.0, size=(T, C))
    hmm = GivenLogLikelihoodHMM(n_components=C, implementation="log")
    hmm.startprob_, hmm.transmat_ = start, trans
    log_prob, post = hmm.score_samples(x)
    model = SemiMarkovModel(np.zeros((1, C)), None, np.log(trans), np.log(start), np.zeros(C))
    assert_logz(ref.log_partition(model, x), log_prob)
    np.testing.assert_allclose(ref.posteriors(model, x)[0], post, rtol=0, atol=1e-9)


# ------------------------------------------------------------ autograd: d logZ / dx = gamma

def torch_log_partition(model, x):
    """Log-space forward over every (start, duration), written with torch ops."""
    import torch
    T, C = x.shape
    K = model.max_duration
    dur = torch.tensor(model.duration)
    rho = torch.tensor(model.tail_or_none())
    trans = torch.tensor(model.transition)

    def phi(d):
        if d <= K:
            return dur[d - 1]
        return dur[K - 1] + (d - K) * rho

    enter = [torch.tensor(model.initial)]
    for t in range(1, T + 1):
        ends = torch.stack([enter[s] + x[s:t].sum(dim=0) + phi(t - s) for s in range(t)])
        ended = torch.logsumexp(ends, dim=0)
        if t == T:
            return torch.logsumexp(ended + torch.tensor(model.final), dim=0)
        enter.append(torch.logsumexp(ended[:, None] + trans, dim=0))


@settings(max_examples=40, deadline=None)
@given(case_strategy(max_T=8, max_C=3, p_neginf=(0.0,), self_loops=True))
def test_grad_of_log_partition_is_gamma(case):
    torch = pytest.importorskip("torch", reason="torch (test extra) not installed")
    model, x = case
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    logz = torch_log_partition(model, xt)
    logz.backward()
    assert_logz(float(logz.detach()), ref.log_partition(model, x))
    np.testing.assert_allclose(xt.grad.numpy(), ref.posteriors(model, x)[0], **TOL)


# ------------------------------------------------------------ edge cases

@pytest.mark.parametrize("T", [1, 3, 50])
def test_underflow_counterexample_from_algorithms(T):
    # C = 2, K = 1, no label switches, final = [-inf, 0], x[0] = [0, -800]
    no_switch = np.array([[0.0, -np.inf], [-np.inf, 0.0]])
    model = SemiMarkovModel(np.zeros((1, 2)), None, no_switch, np.zeros(2), np.array([-np.inf, 0.0]))
    x = np.zeros((T, 2))
    x[0] = [0.0, -800.0]
    assert_logz(ref.log_partition(model, x), -800.0)
    gamma, boundary, change = ref.posteriors(model, x)
    np.testing.assert_allclose(gamma[:, 1], 1.0, **TOL)
    np.testing.assert_allclose(change[1:], 0.0, **TOL)
    score, path = ref.viterbi(model, x)
    assert score == -800.0 and path == [(i, i + 1, 1) for i in range(T)]
    assert ref.run_posterior(model, x, [(0, T, 1)])[0] == pytest.approx(1.0, abs=1e-12)
    if T <= 3:
        assert_logz(BruteForce(model, x).log_partition, -800.0)


def test_no_valid_segmentation_raises():
    # one label, no self-transition, durations <= 2, five bins: impossible
    model = SemiMarkovModel(np.zeros((2, 1)), None, np.array([[-np.inf]]), np.zeros(1), np.zeros(1))
    x = np.zeros((5, 1))
    with pytest.raises(NoValidSegmentation):
        ref.log_partition(model, x)
    with pytest.raises(NoValidSegmentation):
        ref.viterbi(model, x)
    with pytest.raises(NoValidSegmentation):
        ref.sample(model, x, 3, np.random.default_rng(0))
    # a bin that every label forbids
    model2 = random_model(np.random.default_rng(0), 2, 3, "geometric", True, 0.0)
    x2 = np.zeros((4, 2))
    x2[2] = -np.inf
    with pytest.raises(NoValidSegmentation):
        ref.posteriors(model2, x2)


def test_long_segment_needs_tail():
    # K = 2 with a geometric tail: one label, no self-loop, T = 30 is one segment
    rho = math.log(0.9)
    model = SemiMarkovModel(np.log([[0.5], [0.25]]), np.array([rho]), np.array([[-np.inf]]),
                            np.zeros(1), np.zeros(1))
    x = np.full((30, 1), 0.1)
    assert_logz(ref.log_partition(model, x), 3.0 + math.log(0.25) + 28 * rho)
    assert ref.viterbi(model, x)[1] == [(0, 30, 0)]
    assert ref.segment_posterior(model, x, [(0, 30, 0)])[0] == pytest.approx(1.0, abs=1e-12)


def test_bad_emissions_rejected():
    model = random_model(np.random.default_rng(0), 2, 2, "none", True, 0.0)
    for bad in (np.full((3, 2), np.nan), np.full((3, 2), np.inf), np.zeros((3, 3)), np.zeros((0, 2))):
        with pytest.raises(ValueError):
            ref.forward(model, bad)
