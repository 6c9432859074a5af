"""Compiled kernels + chunk driver against the plain reference and brute force."""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashseg.core import SemiMarkovModel, Segments, api
from flashseg.core import reference as ref
from flashseg.errors import NoValidSegmentation

from brute import (BruteForce, case_strategy, flushed_by_both_case, integer_case, late_kill_case, lost_minority_case,
                   random_case, random_emissions, random_model)
from consumers import Collect

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_all(model, x, chunk_size):
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=chunk_size)
    g, b, c = col.arrays()
    return res.log_partition, g, b, c


def close(a, b, rel=1e-9, abs_=1e-12):
    np.testing.assert_allclose(a, b, rtol=rel, atol=abs_)


@settings(max_examples=60, **SETTINGS)
@given(case=case_strategy(max_T=7, max_C=3), chunk=st.sampled_from([1, 2, 3, 1000]))
def test_kernels_match_brute_force(case, chunk):
    model, x = case
    en = BruteForce(model, x)
    if not np.isfinite(en.log_partition):
        with pytest.raises(NoValidSegmentation):
            api.log_partition(model, x, chunk_size=chunk)
        with pytest.raises(NoValidSegmentation):
            api.viterbi(model, x, chunk_size=chunk)
        return
    lz, g, b, c = run_all(model, x, chunk)
    assert lz == pytest.approx(en.log_partition, rel=1e-9, abs=1e-9)
    close(g, en.gamma(), abs_=1e-10)
    close(b[1:], en.boundary()[1:], abs_=1e-10)
    close(c[1:], en.change()[1:], abs_=1e-10)
    vit = api.viterbi(model, x, chunk_size=chunk)
    map_score, map_path = en.map()
    assert vit.score == pytest.approx(map_score, rel=1e-9, abs=1e-9)
    if en.map_gap() > 1e-6:
        assert vit.segments.tuples() == list(map_path)
        post = api.posterior(model, x, segments=vit.segments, chunk_size=chunk).calls
        close(post.seg_post, [en.segment_posterior(*s) for s in vit.segments.tuples()], abs_=1e-10)


@settings(max_examples=25, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(1, 600), C=st.integers(1, 4),
       K=st.integers(1, 12), tail=st.sampled_from(["none", "geometric", "mixed"]),
       loops=st.booleans(), p=st.sampled_from([0.0, 0.05]), scale=st.sampled_from([1.0, 5.0, 100.0]))
def test_kernels_match_reference(seed, T, C, K, tail, loops, p, scale):
    model, x = random_case(seed, T, C, K, tail, loops, p, scale)
    try:
        want_z = ref.log_partition(model, x)
    except NoValidSegmentation:
        with pytest.raises(NoValidSegmentation):
            api.log_partition(model, x)
        return
    lz, g, b, c = run_all(model, x, 64)
    assert lz == pytest.approx(want_z, rel=1e-9)
    assert api.log_partition(model, x, chunk_size=29) == pytest.approx(want_z, rel=1e-9)
    rg, rb, rc = ref.posteriors(model, x)
    # Scores of sd 100 make some cases fall back to the exact log-space path,
    # whose posteriors carry a few ulp(|log Z|) absolute per bin (the linear
    # path's integer exponents avoid that), summed over up to T bins in
    # gamma's running sums (seed 1439: |log Z| = 6568, 1.3e-11 after 55 bins).
    close(g, rg, abs_=max(1e-11, 8 * T * np.finfo(np.float64).eps * abs(lz)))
    close(b[1:], rb[1:])
    close(c[1:], rc[1:])
    score, path = ref.viterbi(model, x)
    vit = api.viterbi(model, x, chunk_size=37)
    assert vit.score == pytest.approx(score, rel=1e-9)
    segs = vit.segments
    calls = api.posterior(model, x, segments=segs, chunk_size=50).calls
    close(calls.seg_post, ref.segment_posterior(model, x, segs.tuples()))
    runs = api.posterior(model, x, decode=True, chunk_size=41).calls
    want_runs = ref.posterior_decode(model, x)
    if runs.tuples() == want_runs:
        close(runs.seg_post, ref.run_posterior(model, x, want_runs))


def test_reference_vs_kernels_long():
    rng = np.random.default_rng(7)
    model = random_model(rng, 3, 9, "geometric", True, 0.0)
    x = random_emissions(rng, 5000, 3, 2.0)
    lz, g, b, c = run_all(model, x, 1000)
    assert lz == pytest.approx(ref.log_partition(model, x), rel=1e-9)
    rg, rb, rc = ref.posteriors(model, x)
    close(g, rg)
    close(b[1:], rb[1:])
    close(c[1:], rc[1:])


@pytest.mark.parametrize("tail", ["none", "geometric"])
def test_chunk_size_invariance(tail):
    rng = np.random.default_rng(3)
    K = 6
    model = random_model(rng, 3, K, tail, True, 0.05)
    x = random_emissions(rng, 400, 3, 3.0, 0.01)
    results = []
    for chunk in [1, 7, max(1, K - 1), K, K + 1, 1000]:
        lz, g, b, c = run_all(model, x, chunk)
        vit = api.viterbi(model, x, chunk_size=chunk)
        samples = api.sample(model, x, n=3, seed=11, name="chrT", chunk_size=chunk)
        results.append((lz, g, b, c, vit.score, vit.segments.tuples(), [s.tuples() for s in samples]))
    base = results[0]
    for other in results[1:]:
        assert other[0] == pytest.approx(base[0], rel=1e-12)
        for i in (1, 2, 3):
            close(other[i], base[i], rel=1e-10, abs_=1e-13)
        assert other[4] == pytest.approx(base[4], rel=1e-12)
        assert other[5] == base[5]
        assert other[6] == base[6]


def test_hmm_case_equals_forward_backward():
    """K = 1, tail none, duration [0], self-loops: an ordinary HMM."""
    rng = np.random.default_rng(5)
    C, T = 4, 3000
    P = rng.dirichlet(np.ones(C), size=C)
    pi = rng.dirichlet(np.ones(C))
    loglik = rng.normal(0, 2, size=(T, C))
    model = SemiMarkovModel(np.zeros((1, C)), None, np.log(P), np.log(pi), np.zeros(C))
    # scaled forward-backward, written independently
    lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    alpha = np.empty((T, C))
    scale = np.empty(T)
    a = pi * lik[0]
    scale[0] = a.sum()
    alpha[0] = a / scale[0]
    for t in range(1, T):
        a = (alpha[t - 1] @ P) * lik[t]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    beta = np.ones((T, C))
    for t in range(T - 2, -1, -1):
        beta[t] = P @ (lik[t + 1] * beta[t + 1]) / scale[t + 1]
    gamma = alpha * beta
    log_z = np.log(scale).sum() + loglik.max(axis=1).sum()
    change = np.zeros(T)
    for t in range(1, T):
        xi = alpha[t - 1][:, None] * P * (lik[t] * beta[t])[None, :] / scale[t]
        change[t] = xi.sum() - np.trace(xi)
    lz, g, b, c = run_all(model, loglik, 256)
    assert lz == pytest.approx(log_z, rel=1e-12)
    np.testing.assert_allclose(g, gamma, atol=1e-10)
    np.testing.assert_allclose(c[1:], change[1:], atol=1e-10)
    np.testing.assert_allclose(b[1:], 1.0, atol=1e-10)


def test_dlogz_dx_equals_gamma():
    torch = pytest.importorskip("torch", reason="torch is a test dependency for autograd checks")
    rng = np.random.default_rng(9)
    model = random_model(rng, 3, 4, "geometric", True, 0.0)
    T = 30
    x = random_emissions(rng, T, 3, 1.5)
    xt = torch.tensor(x, requires_grad=True, dtype=torch.float64)
    dur = torch.tensor(np.stack([model.log_duration(d) for d in range(1, T + 1)]))
    trans = torch.tensor(model.transition)
    E = [torch.tensor(model.initial)]
    A = [torch.full((3,), -math.inf, dtype=torch.float64)]
    for t in range(1, T + 1):
        terms = torch.stack([E[s] + xt[s:t].sum(0) + dur[t - s - 1] for s in range(t)])
        A.append(torch.logsumexp(terms, 0))
        E.append(torch.logsumexp(A[t][:, None] + trans, 0))
    log_z = torch.logsumexp(A[T] + torch.tensor(model.final), 0)
    log_z.backward()
    _, g, _, _ = run_all(model, x, 8)
    np.testing.assert_allclose(xt.grad.numpy(), g, atol=1e-10)


def test_underflow_counterexample_is_exact():
    """docs/algorithms.md, "Linear fast path and its certificate": shared scaling alone returns -inf here; the answer is -800."""
    model = SemiMarkovModel(np.zeros((1, 2)), None, np.array([[0.0, -np.inf], [-np.inf, 0.0]]),
                            np.zeros(2), np.array([-np.inf, 0.0]))
    x = np.array([[0.0, -800.0]])
    assert api.log_partition(model, x) == pytest.approx(-800.0, rel=1e-12)
    res = api.posterior(model, x, decode=True)
    assert res.exact_fallback, "the certificate must fire on the counterexample"
    # The uncertified single forward pass shows the failure the certificate guards against.
    assert api.log_partition(model, x, certify=False) == -math.inf


def test_certificate_fires_on_late_kill_and_fallback_is_exact():
    """A dominant path removed late by -inf emissions leaves only mass once flushed."""
    model, x = late_kill_case()
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=16)
    assert res.exact_fallback
    assert col.restarts == 1
    assert res.log_partition == pytest.approx(ref.log_partition(model, x), rel=1e-12)
    g, b, c = col.arrays()
    np.testing.assert_allclose(g, ref.posteriors(model, x)[0], atol=1e-12)


def test_peaked_duration_prior_and_huge_emissions():
    rng = np.random.default_rng(1)
    C, K, T = 3, 40, 500
    dur = np.full((K, C), -np.inf)
    dur[K - 1] = 0.0                      # every segment has exactly K bins ...
    dur[3, 1] = -2.0                      # ... except label 1 may have 4
    model = SemiMarkovModel(dur, np.log([0.5, 0.5, 0.5]), rng.normal(size=(C, C)),
                            np.zeros(C), np.zeros(C))
    x = rng.normal(0, 300, size=(T, C))   # emissions with sd in the hundreds
    lz, g, b, c = run_all(model, x, 77)
    assert lz == pytest.approx(ref.log_partition(model, x), rel=1e-9)
    rg, rb, rc = ref.posteriors(model, x)
    # |log Z| ~ 1e5 here: any log-space path (the reference, and the exact
    # fallback this case takes) carries ~ulp(1e5) = 1.5e-11 absolute.
    close(g, rg, abs_=1e-10)
    close(b[1:], rb[1:], abs_=1e-10)


def test_no_valid_segmentation_raises():
    model = SemiMarkovModel(np.zeros((2, 1)), None, np.zeros((1, 1)), np.zeros(1), np.zeros(1))
    x = np.zeros((5, 1))    # K = 2, no tail: 5 bins need >= 3 segments: fine
    api.log_partition(model, x)
    model2 = SemiMarkovModel(np.zeros((2, 1)), None, np.full((1, 1), -np.inf), np.zeros(1), np.zeros(1))
    with pytest.raises(NoValidSegmentation):
        api.log_partition(model2, x)
    with pytest.raises(NoValidSegmentation):
        api.viterbi(model2, x)


def test_emission_source_reads_any_range():
    """The driver reads chunks right to left too; a callable source works."""
    rng = np.random.default_rng(2)
    model = random_model(rng, 2, 5, "geometric", True, 0.0)
    x = random_emissions(rng, 200, 2, 1.0)
    calls = []

    def source(a, b):
        calls.append((a, b))
        return x[a:b]

    assert api.log_partition(model, source, 200, chunk_size=30) == pytest.approx(
        ref.log_partition(model, x), rel=1e-10)
    assert any(a > c for (a, _), (c, _) in zip(calls, calls[1:]))


def test_path_flushed_by_both_passes_is_caught():
    """Two forced paths (K = 1, labels must alternate). The winner B falls
    e^600 behind early (the forward flushes it) and ends e^600 behind from the
    right (the backward flushes it), yet wins by e^400 overall. Each pass's
    losses meet the other pass's (also wrong) values; the certificate's
    factor for paths lost by both passes catches it."""
    model, x, a_label = flushed_by_both_case()
    want = ref.log_partition(model, x)
    assert want == pytest.approx(400.0, rel=1e-12)
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=7)
    assert res.exact_fallback
    assert res.log_partition == pytest.approx(want, rel=1e-12)
    g, _, _ = col.arrays()
    np.testing.assert_allclose(g[:, 0], a_label, atol=1e-12)   # B has label 1 - a_label


def test_a_lost_path_that_is_not_the_map_is_caught():
    """A path both passes flush that is not the MAP but carries 40% of Z (the
    MAP check of the old certificate passed it, and log Z came out 0.51 low)."""
    model, x, share = lost_minority_case()
    want = ref.log_partition(model, x)
    assert share == pytest.approx(0.4013, abs=1e-4)
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=7)
    assert res.exact_fallback
    assert res.log_partition == pytest.approx(want, rel=1e-12)
    g, b, c = col.arrays()
    rg, rb, rc = ref.posteriors(model, x)
    close(g, rg, abs_=1e-12)
    close(b[1:], rb[1:])


def test_the_certificate_passes_where_both_passes_flush_harmlessly():
    """The bundled demo flushes in both passes (long segments of other labels),
    and nothing it lost matters: no exact recomputation."""
    from flashseg.core.cpu import CpuBackend
    from flashseg.core.driver import ContigRun
    from flashseg.io.model import load_model
    from flashseg.io.tracks import open_track_set
    import flashseg

    demo = os.path.join(os.path.dirname(flashseg.__file__), "data", "demo")
    spec = load_model(os.path.join(demo, "model.yaml"))
    with open_track_set([(os.path.join(demo, "tracks.h5"), 1.0)], spec.label_names) as tracks:
        run = ContigRun(CpuBackend(spec.model), tracks.emissions("chr1"), tracks.n_bins("chr1"), 300, "chr1")
        run.posterior_pass()
    assert run.lost == (True, True)


def test_sampling_frequencies_match_enumeration():
    from scipy import stats

    from brute import BruteForce

    rng = np.random.default_rng(12)
    model = random_model(rng, 2, 3, "geometric", True, 0.0)
    x = random_emissions(rng, 5, 2, 1.0)
    en = BruteForce(model, x)
    probs = en.probability_of()
    n = 20000
    samples = api.sample(model, x, n=n, seed=3, name="chrS", chunk_size=2)
    counts = {}
    for s in samples:
        key = tuple(s.tuples())
        assert key in probs and probs[key] > 0, key
        counts[key] = counts.get(key, 0) + 1
    keys = sorted(probs, key=probs.get, reverse=True)
    expected = np.array([probs[k] * n for k in keys])
    observed = np.array([counts.get(k, 0) for k in keys])
    big = expected >= 5
    exp_pooled = np.append(expected[big], expected[~big].sum())
    obs_pooled = np.append(observed[big], observed[~big].sum())
    assert stats.chisquare(obs_pooled, exp_pooled).pvalue > 1e-3


def test_samples_depend_on_seed_and_name_only():
    rng = np.random.default_rng(4)
    model = random_model(rng, 3, 4, "geometric", True, 0.0)
    x = random_emissions(rng, 300, 3, 1.0)
    a = api.sample(model, x, n=4, seed=1, name="chr1", chunk_size=50)
    b = api.sample(model, x, n=4, seed=1, name="chr1", chunk_size=300)
    c = api.sample(model, x, n=4, seed=1, name="chr2", chunk_size=50)
    assert [s.tuples() for s in a] == [s.tuples() for s in b]
    assert [s.tuples() for s in a] != [s.tuples() for s in c]
    for s in a:
        assert s.start[0] == 0 and s.end[-1] == 300 and (s.start[1:] == s.end[:-1]).all()


@settings(max_examples=40, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(1, 7), C=st.integers(1, 3), K=st.integers(1, 4),
       tail=st.booleans(), chunk=st.sampled_from([1, 2, 1000]))
def test_viterbi_exact_ties_follow_the_spec(seed, T, C, K, tail, chunk):
    """Integer scores make exact ties common; the traceback must pick the
    docs/algorithms.md, "Viterbi and traceback" path (shortest duration at an end, lowest previous label, lowest
    last label), whatever the chunk size."""
    model, x = integer_case(seed, T, C, K, tail)
    en = BruteForce(model, x)
    if not np.isfinite(en.log_partition):
        return
    score, path = en.map_tiebroken()
    vit = api.viterbi(model, x, chunk_size=chunk)
    assert vit.score == score
    assert vit.segments.tuples() == list(path)


def test_chunk_cache_changes_nothing(monkeypatch):
    """Cached backward rows and recomputed ones are bit for bit the same."""
    from flashseg.core import schedule

    rng = np.random.default_rng(8)
    model = random_model(rng, 3, 5, "geometric", True, 0.05)
    x = random_emissions(rng, 500, 3, 3.0, 0.01)
    cached = run_all(model, x, 37)
    monkeypatch.setattr(schedule, "CHUNK_CACHE_BYTES", 0)
    recomputed = run_all(model, x, 37)
    monkeypatch.setattr(schedule, "CHUNK_CACHE_BYTES", 37 * 3 * 40 * 4)   # a few chunks only
    partly = run_all(model, x, 37)
    for a, b, c in zip(cached, recomputed, partly):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@settings(max_examples=25, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(1, 120), runs=st.booleans(),
       chunk=st.sampled_from([1, 7, 50]))
def test_posteriors_of_any_segment_list(seed, T, runs, chunk):
    """Overlapping, gapped, unsorted segments: exact-segment or run posteriors,
    b/chg at their ends and mean gamma, against the reference."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, 3, 4, "geometric", True, 0.0)
    x = random_emissions(rng, T, 3, 2.0)
    s = rng.integers(0, T, size=12)
    e = np.minimum(T, s + rng.integers(1, 30, size=12))
    c = rng.integers(0, 3, size=12)
    segs = Segments.from_lists(s, e, c)
    calls = api.posterior(model, x, segments=segs, runs=runs, chunk_size=chunk).calls
    triples = list(zip(s.tolist(), e.tolist(), c.tolist()))
    want = ref.run_posterior(model, x, triples) if runs else ref.segment_posterior(model, x, triples)
    close(calls.seg_post, want, abs_=1e-11)
    gamma, boundary, change = ref.posteriors(model, x)
    post = change if runs else boundary
    close(calls.start_post, np.where(s == 0, 1.0, post[np.minimum(s, T - 1)]), abs_=1e-11)
    close(calls.end_post, np.where(e == T, 1.0, post[np.minimum(e, T - 1)]), abs_=1e-11)
    close(calls.label_post, [gamma[a:b, k].mean() for a, b, k in triples], abs_=1e-11)
    assert calls.tuples() == triples


@pytest.mark.parametrize("threads", [2, 4])
def test_contigs_stop_when_the_caller_stops(threads):
    """An error on one contig stops the others at their next chunk (with 4
    threads for 2 contigs, the chunk-parallel passes' pool threads too)."""
    import threading
    import time

    rng = np.random.default_rng(5)
    model = random_model(rng, 2, 3, "geometric", True, 0.0)
    slow_reads = []

    def slow(a, b):
        slow_reads.append(a)
        time.sleep(0.01)
        return np.zeros((b - a, 2))

    def broken(a, b):
        raise RuntimeError("disk on fire")

    jobs = [{"name": "bad", "emissions": broken, "n_bins": 50},
            {"name": "slow", "emissions": slow, "n_bins": 5000}]
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="disk on fire"):
        list(api.decode_contigs(model, jobs, threads=threads, chunk_size=10))
    assert time.perf_counter() - t0 < 5.0
    assert len(slow_reads) < 200, "the slow contig should have stopped early"
    assert not any(t.name.startswith(("ThreadPoolExecutor", "flashseg-")) and t.is_alive()
                   for t in threading.enumerate())
