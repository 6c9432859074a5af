"""Chunk-parallel passes (core/parallel.py) against the sequential driver,
the plain reference and brute force.

Every chunk starts from a guess that is certified at its junction or re-run
in sequence; these tests force both outcomes (a long burn-in that mixes, and
``burn_in=0``, which no junction accepts) and check that only the speed can
change, never the numbers.
"""
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashseg.core import SemiMarkovModel, api
from flashseg.core import reference as ref
from flashseg.core.cpu import CpuBackend
from flashseg.core.driver import ContigRun, UncertifiedError
from flashseg.core.parallel import junction_offset, normalise, shift_partition, unscale_partition
from flashseg.errors import DataError, NoValidSegmentation

from brute import BruteForce, case_strategy, flushed_by_both_case, integer_case, late_kill_case, random_case, random_model, score_segmentation
from consumers import Collect

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def everything(model, x, chunk, threads=1, burn_in=None):
    """All the driver's outputs for one contig."""
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=chunk, threads=threads, burn_in=burn_in)
    vit = api.viterbi(model, x, chunk_size=chunk, threads=threads, burn_in=burn_in)
    calls = api.posterior(model, x, segments=vit.segments, chunk_size=chunk, threads=threads,
                          burn_in=burn_in).calls
    runs = api.posterior(model, x, decode=True, chunk_size=chunk, threads=threads, burn_in=burn_in).calls
    samples = api.sample(model, x, n=3, seed=5, name="chrP", chunk_size=chunk, threads=threads,
                         burn_in=burn_in)
    return dict(log_z=res.log_partition, fell_back=res.exact_fallback, per_bin=col.arrays(), vit=vit,
                calls=calls, runs=runs, samples=[s.tuples() for s in samples])


def assert_same(par, seq, model, x, rel=1e-9, abs_=1e-10):
    assert par["log_z"] == pytest.approx(seq["log_z"], rel=rel, abs=1e-9)
    for a, b in zip(par["per_bin"], seq["per_bin"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=abs_)
    assert par["vit"].score == pytest.approx(seq["vit"].score, rel=rel, abs=1e-9)
    if par["vit"].segments.tuples() != seq["vit"].segments.tuples():
        # Only a near-tie may change the path: both must score the MAP.
        for segs in (par["vit"].segments, seq["vit"].segments):
            assert score_segmentation(model, x, segs.tuples()) == pytest.approx(seq["vit"].score, rel=rel)
    else:
        np.testing.assert_allclose(par["calls"].seg_post, seq["calls"].seg_post, atol=abs_)
        np.testing.assert_allclose(par["calls"].start_post, seq["calls"].start_post, atol=abs_)
    if par["runs"].tuples() == seq["runs"].tuples():
        np.testing.assert_allclose(par["runs"].seg_post, seq["runs"].seg_post, atol=abs_)
    assert par["samples"] == seq["samples"]


def mixing_case(seed=0, T=3000, C=4, K=12):
    """Chromatin-like data: runs of a true label, scores that favour it."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, C, K, "geometric", False, 0.0)
    truth = np.repeat(rng.integers(0, C, size=T // 20 + 1), 20)[:T]
    x = rng.normal(size=(T, C)) + 2.0 * (np.arange(C)[None, :] == truth[:, None])
    return model, x


def pass_stats(model, x, chunk, burn_in=None, exact=False):
    with ThreadPoolExecutor(2) as pool:
        run = ContigRun(CpuBackend(model, exact=exact), api.ArrayEmissions(x), len(x), chunk,
                        pool=pool, workers=2, burn_in=burn_in)
        run.posterior_pass()
        run.viterbi()
    return run.pass_stats


@pytest.mark.parametrize("exact", [False, True])
def test_guesses_are_accepted_on_mixing_data(exact):
    """The speculation must actually work: every junction of a mixing contig is accepted."""
    model, x = mixing_case()
    stats = pass_stats(model, x, 250, exact=exact)
    n_junctions = math.ceil(len(x) / 250) - 1
    for kind in ("forward", "backward", "viterbi"):
        assert stats[kind].accepted == n_junctions and stats[kind].rerun == 0, (kind, stats[kind])


def test_no_burn_in_rejects_every_guess():
    """A guess placed at the chunk start itself is not the true state: every
    junction is re-run in sequence (the fallback path the next test checks)."""
    model, x = mixing_case(T=1000)
    stats = pass_stats(model, x, 100, burn_in=0)
    for kind in ("forward", "backward", "viterbi"):
        assert stats[kind].accepted == 0 and stats[kind].rerun == 9, (kind, stats[kind])


@pytest.mark.parametrize("burn_in", [None, 0, 7])
def test_parallel_equals_sequential_on_mixing_data(burn_in):
    model, x = mixing_case(T=1500)
    seq = everything(model, x, 97)
    par = everything(model, x, 97, threads=2, burn_in=burn_in)
    assert_same(par, seq, model, x)
    # The uncertified forward alone, chunk-parallel too.
    assert api.log_partition(model, x, chunk_size=97, certify=False, threads=2, burn_in=burn_in) == \
        pytest.approx(seq["log_z"], rel=1e-12)


@settings(max_examples=30, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(2, 400), C=st.integers(1, 4),
       K=st.integers(1, 10), tail=st.sampled_from(["none", "geometric", "mixed"]),
       loops=st.booleans(), p=st.sampled_from([0.0, 0.05]), scale=st.sampled_from([1.0, 5.0, 100.0]),
       chunk=st.sampled_from([1, 3, 17, 64]), burn_in=st.sampled_from([None, 0, 2, 40]))
def test_parallel_matches_reference(seed, T, C, K, tail, loops, p, scale, chunk, burn_in):
    """Random models (tails, self-loops, -inf holes) and scores up to sd 100
    (flushes, certificate fallbacks): the parallel driver against the reference."""
    model, x = random_case(seed, T, C, K, tail, loops, p, scale)
    try:
        want_z = ref.log_partition(model, x)
    except NoValidSegmentation:
        with pytest.raises(NoValidSegmentation):
            api.log_partition(model, x, chunk_size=chunk, threads=2, burn_in=burn_in)
        with pytest.raises(NoValidSegmentation):
            api.viterbi(model, x, chunk_size=chunk, threads=2, burn_in=burn_in)
        return
    par = everything(model, x, chunk, threads=2, burn_in=burn_in)
    assert par["log_z"] == pytest.approx(want_z, rel=1e-9)
    rg, rb, rc = ref.posteriors(model, x)
    g, b, c = par["per_bin"]
    np.testing.assert_allclose(g, rg, atol=1e-10)
    np.testing.assert_allclose(b[1:], rb[1:], atol=1e-10)
    np.testing.assert_allclose(c[1:], rc[1:], atol=1e-10)
    score, _ = ref.viterbi(model, x)
    assert par["vit"].score == pytest.approx(score, rel=1e-9)
    assert score_segmentation(model, x, par["vit"].segments.tuples()) == pytest.approx(score, rel=1e-9)
    segs = par["vit"].segments
    np.testing.assert_allclose(par["calls"].seg_post, ref.segment_posterior(model, x, segs.tuples()),
                               atol=1e-10)
    seq = everything(model, x, chunk)
    assert par["samples"] == seq["samples"]


@settings(max_examples=40, **SETTINGS)
@given(case=case_strategy(min_T=2, max_T=7, max_C=3), chunk=st.sampled_from([1, 2, 3]),
       burn_in=st.sampled_from([None, 0, 1, 3]))
def test_parallel_matches_brute_force(case, chunk, burn_in):
    model, x = case
    en = BruteForce(model, x)
    if not np.isfinite(en.log_partition):
        with pytest.raises(NoValidSegmentation):
            api.log_partition(model, x, chunk_size=chunk, threads=2, burn_in=burn_in)
        return
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=chunk, threads=2, burn_in=burn_in)
    g, b, c = col.arrays()
    assert res.log_partition == pytest.approx(en.log_partition, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(g, en.gamma(), atol=1e-10)
    np.testing.assert_allclose(b[1:], en.boundary()[1:], atol=1e-10)
    np.testing.assert_allclose(c[1:], en.change()[1:], atol=1e-10)
    vit = api.viterbi(model, x, chunk_size=chunk, threads=2, burn_in=burn_in)
    map_score, map_path = en.map()
    assert vit.score == pytest.approx(map_score, rel=1e-9, abs=1e-9)
    if en.map_gap() > 1e-6:
        assert vit.segments.tuples() == list(map_path)


@settings(max_examples=30, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(2, 60), C=st.integers(1, 3), K=st.integers(1, 4),
       tail=st.booleans(), chunk=st.sampled_from([1, 2, 5]), burn_in=st.sampled_from([None, 0, 3]))
def test_parallel_viterbi_exact_ties(seed, T, C, K, tail, chunk, burn_in):
    """Integer scores: accepted guesses differ from the true state by an exact
    constant, so ties break exactly as in the sequential pass (docs/algorithms.md, "Viterbi and traceback")."""
    model, x = integer_case(seed, T, C, K, tail)
    try:
        want = api.viterbi(model, x, chunk_size=chunk)
    except NoValidSegmentation:
        return
    got = api.viterbi(model, x, chunk_size=chunk, threads=2, burn_in=burn_in)
    assert got.score == want.score
    assert got.segments.tuples() == want.segments.tuples()


def test_flushes_and_certificate_fallbacks_in_parallel():
    """The certificate cases of test_core_kernels, chunk-parallel: losses
    carried into a chunk started from a guess must still be charged."""
    model, x = late_kill_case()
    for burn_in in (None, 0, 4):
        col = Collect()
        res = api.posterior(model, x, consumer=col, chunk_size=16, threads=2, burn_in=burn_in)
        assert res.exact_fallback
        assert res.log_partition == pytest.approx(ref.log_partition(model, x), rel=1e-12)
        np.testing.assert_allclose(col.arrays()[0], ref.posteriors(model, x)[0], atol=1e-12)
    # Dominant path flushed by both passes (see test_core_kernels).
    model, x, _ = flushed_by_both_case()
    res = api.posterior(model, x, chunk_size=7, threads=2, burn_in=2)
    assert res.exact_fallback
    assert res.log_partition == pytest.approx(400.0, rel=1e-12)


def test_ghosts_carried_into_guessed_chunks_keep_the_certificate():
    """Mass flushed early on is carried (as a ghost) through every later chunk;
    chunks started from guesses must carry it too, or the certificate would
    miss it. The ghost rows of the chunk-parallel forward pass must match the
    sequential pass's (up to the factor 2 by which its flush units may differ)."""
    from flashseg.core.parallel import offset_log

    rng = np.random.default_rng(3)
    C, T, chunk = 3, 900, 100
    model = random_model(rng, C, 4, "geometric", True, 0.0)
    x = rng.normal(size=(T, C))
    x[20, 2] = -900.0            # label 2 drops 900 nats in one bin: flushed, then recovers
    be = CpuBackend(model)
    src = api.ArrayEmissions(x)
    run = ContigRun(be, src, T, chunk)
    state = be.forward_state()
    seq_rows = []
    for j, (a, b) in enumerate(run.bounds):
        store = be.new_store(b - a + 1)
        state.advance(run.read(j), store)
        seq_rows.append(store.ghost_rows())
    assert np.isfinite(seq_rows[-1][:, 2]).all(), "the early loss must reach the last chunk"
    with ThreadPoolExecutor(2) as pool:
        prun = ContigRun(be, src, T, chunk, pool=pool, workers=2)
        cache = {}
        _, end = prun.schedule.checkpoints("forward", None, cache)
    assert prun.pass_stats["forward"].accepted == len(run.bounds) - 1
    for j, want in enumerate(seq_rows):
        _, store = cache[j]
        got = store.ghost_rows() - offset_log(store.log_offset)
        assert np.array_equal(np.isfinite(got), np.isfinite(want)), j
        live = np.isfinite(want)
        np.testing.assert_allclose(got[live], want[live], rtol=0, atol=math.log(4.0))
    final = end.ghost - offset_log(end.scale_offset)
    np.testing.assert_allclose(final, state.ghost, rtol=0, atol=math.log(4.0))
    # No burn-in, no rows kept: every chunk is re-run until its chain meets the
    # guess's at an inner boundary, and the guess's end state takes the ghosts.
    with ThreadPoolExecutor(2) as pool:
        mrun = ContigRun(be, src, T, chunk, pool=pool, workers=2, burn_in=0)
        _, mend = mrun.schedule.checkpoints("forward")
    stats = mrun.pass_stats["forward"]
    assert stats.rerun == len(run.bounds) - 1 and stats.rerun_bins < stats.rerun * chunk, stats
    np.testing.assert_allclose(mend.ghost - offset_log(mend.scale_offset), state.ghost, rtol=0,
                               atol=math.log(4.0))
    seq = api.posterior(model, x, chunk_size=chunk)
    par = api.posterior(model, x, chunk_size=chunk, threads=2)
    assert seq.exact_fallback == par.exact_fallback
    assert par.log_partition == pytest.approx(seq.log_partition, rel=1e-12)


def test_bad_bins_are_named_as_in_sequence():
    model, x = mixing_case(T=1200)
    y = x.copy()
    y[777, 1] = np.nan
    with pytest.raises(DataError, match="bin 777"):
        api.posterior(model, y, chunk_size=100, threads=2)
    y = x.copy()
    y[640] = -np.inf
    with pytest.raises(NoValidSegmentation, match="bin 640"):
        api.viterbi(model, y, chunk_size=100, threads=2)


def test_one_contig_on_many_threads_uses_the_chunk_pool():
    """decode_contigs runs a lone contig chunk-parallel: same result as one thread."""
    model, x = mixing_case(T=2000)
    jobs = [{"name": "chrA", "emissions": x, "n_bins": len(x)}]
    one = next(api.decode_contigs(model, jobs, threads=1, chunk_size=128, n_samples=2, seed=3))
    many = next(api.decode_contigs(model, jobs, threads=2, chunk_size=128, n_samples=2, seed=3))
    assert many.log_partition == pytest.approx(one.log_partition, rel=1e-12)
    assert many.calls.tuples() == one.calls.tuples()
    np.testing.assert_allclose(many.calls.seg_post, one.calls.seg_post, atol=1e-10)
    assert [s.tuples() for s in many.samples] == [s.tuples() for s in one.samples]


def test_junction_offset():
    """Proportional states give their ratio; anything else is rejected."""
    model, x = mixing_case(T=400)
    be = CpuBackend(model)
    from flashseg.core.chunks import EmissionChunk

    exact = be.forward_state()
    exact.advance(EmissionChunk.from_log(x))
    scaled = exact.copy()
    scaled.t_sexp[1] += 5
    scaled.E *= 1.5
    scaled.A *= 1.5
    scaled.tail *= 1.5
    scaled.P *= 1.5
    k, r, charge, spread = junction_offset(exact, scaled)
    assert charge is None and 0 <= spread <= 2e-12
    assert k + r / math.log(2.0) == pytest.approx(5 + math.log2(1.5), abs=1e-12)
    scaled.E[0] *= 1.0 + 1e-9        # one value off by a billionth
    assert junction_offset(exact, scaled) is None
    other = exact.copy()
    other.ring[0, 0] = 0.0 if other.ring[0, 0] else 1.0   # a different zero pattern
    assert junction_offset(exact, other) is None


def test_offsets_round_trip_partitions():
    k, r = normalise(3, 5.0)
    assert abs(r) <= math.log(2.0) / 2 and k + r / math.log(2.0) == pytest.approx(3 + 5.0 / math.log(2.0))
    log_z, zm, zexp = 12.5, math.frexp(math.exp(12.5))[0], math.frexp(math.exp(12.5))[1]
    shifted = shift_partition(log_z, zm, zexp, (40, 0.3))
    assert shifted[0] == pytest.approx(log_z + 40 * math.log(2.0) + 0.3, rel=1e-15)
    back = unscale_partition(*shifted, (40, 0.3))
    assert back[0] == pytest.approx(log_z, rel=1e-15) and back[2] == zexp


def test_values_flushed_by_one_chain_only_are_charged(monkeypatch):
    """Long durations (K = 256) and strong scores: values near the flush floor
    are flushed at different bins by the guess's chain and the true one. The
    guesses must still be accepted, those values charged to the ghosts, and
    the results be the sequential ones."""
    from flashseg.core import parallel

    C, K, T = 6, 256, 24000
    rng = np.random.default_rng(9)
    d = np.arange(1, K + 1)[:, None]
    dur = -d / np.linspace(8, K / 2, C)[None, :]
    dur -= np.log(np.exp(dur).sum(axis=0, keepdims=True))
    P = rng.dirichlet(np.ones(C), size=C)
    np.fill_diagonal(P, 0.0)
    with np.errstate(divide="ignore"):
        trans = np.log(P / P.sum(axis=1, keepdims=True))
    model = SemiMarkovModel(dur, np.log(np.full(C, 0.97)), trans, np.full(C, -np.log(C)), np.zeros(C))
    truth = np.repeat(rng.integers(0, C, size=T // 37 + 1), 37)[:T]
    x = -0.5 * (truth[:, None] + rng.uniform(-1, 1, size=(T, 1)) - np.arange(C)[None, :]) ** 2
    charges = []
    real = parallel.junction_offset

    def recording(exact, guess, tolerance=parallel.JUNCTION_TOLERANCE):
        out = real(exact, guess, tolerance)
        if out is not None and out[2] is not None:
            charges.append(out[2])
        return out

    monkeypatch.setattr(parallel, "junction_offset", recording)
    seq = everything(model, x, 3000)
    stats = pass_stats(model, x, 3000)
    assert stats["forward"].accepted == stats["backward"].accepted == 7, stats
    assert charges and all(np.isfinite(c).any() for c in charges)
    par = everything(model, x, 3000, threads=2)
    assert not par["fell_back"]
    assert_same(par, seq, model, x)


def test_rejected_guesses_lengthen_the_burn_in():
    """Starting from no burn-in at all, each rejection doubles the burn-in of
    the chunks submitted later, until guesses are accepted; results unchanged."""
    from flashseg.core.parallel import ChunkPass

    model, x = mixing_case(T=3000)
    be = CpuBackend(model)
    src = api.ArrayEmissions(x)
    seq = ContigRun(be, src, len(x), 100).viterbi()
    with ThreadPoolExecutor(2) as pool:
        run = ContigRun(be, src, len(x), 100, pool=pool, workers=1)
        chunk_pass = ChunkPass(run, "viterbi", pool, 1)
        chunk_pass.burn_in = 0
        checkpoints, end = chunk_pass.run()
    assert chunk_pass.stats.rerun >= 3 and chunk_pass.stats.accepted >= 10, chunk_pass.stats
    assert 0 < chunk_pass.burn_in <= chunk_pass.max_burn_in
    from flashseg.core.driver import _best_final

    assert _best_final(end)[0] == pytest.approx(seq[0], rel=1e-12)


@pytest.mark.parametrize("exact", [False, True])
def test_reruns_stop_where_the_chains_meet(exact):
    """Without a burn-in every guess is rejected. A chunk whose rows are not
    kept (every Viterbi chunk) is then re-run from the exact state only until
    it meets the guess's chain, at the first inner boundary (a quarter of the
    chunk); chunks with rows (here all of the posterior passes') are re-run
    whole. The results stay the sequential ones."""
    from flashseg.core.parallel import PARTS

    model, x = mixing_case(T=4000)
    chunk = 800
    stats = pass_stats(model, x, chunk, burn_in=0, exact=exact)
    for kind in ("forward", "backward", "viterbi"):
        s = stats[kind]
        assert s.accepted == 0 and s.rerun == 4, (kind, s)
        part = chunk // PARTS if kind == "viterbi" else chunk
        assert s.rerun_bins == s.rerun * part, (kind, s)
    seq = everything(model, x, chunk)
    par = everything(model, x, chunk, threads=2, burn_in=0)
    assert_same(par, seq, model, x)


def _all_outputs(model, x, chunk, threads, burn_in):
    """logZ, per-bin posteriors, decoded runs and the MAP of one contig, with
    each pass's junction band (docs/algorithms.md, "Chunk-parallel passes")."""
    col = Collect()
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        backend = CpuBackend(model)
        run = ContigRun(backend, api.ArrayEmissions(x), len(x), chunk, pool=pool, workers=threads,
                        burn_in=burn_in)
        from flashseg.core.trackers import SegmentTracker

        tracker = SegmentTracker(backend.fwd, len(x), "run", decode=True)
        try:
            log_z, _ = run.posterior_pass(col, [tracker])
        except UncertifiedError:
            return None
        score, segs = run.viterbi()
        band = {kind: stats.band for kind, stats in getattr(run, "pass_stats", {}).items()}
    finally:
        if pool is not None:
            pool.shutdown()
    return dict(log_z=log_z, per_bin=col.arrays(), runs=tracker.calls, score=score, segs=segs.tuples(),
                band=band)


@settings(max_examples=40, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(200, 1500), C=st.integers(1, 5),
       K=st.integers(1, 12), loops=st.booleans(), chunk=st.sampled_from([7, 31, 200]),
       threads=st.sampled_from([2, 4]), burn_in=st.sampled_from([None, 40, 200]))
def test_threads_and_chunk_sizes_move_results_only_within_the_stated_bound(seed, T, C, K, loops, chunk,
                                                                              threads, burn_in):
    """docs/algorithms.md, "What threads and chunk sizes change": one thread
    gives the same bits at every chunk size; chunk-parallel passes stay
    within their junctions' band (beta, each pass's sum of accepted
    half-spreads, at most 1e-12 per junction): |d log Z| <= beta_backward,
    per-bin posteriors within 4 (beta_forward + beta_backward) + 1e-13,
    segment posteriors within that plus 8 eps |log Z|, the MAP score within
    beta_viterbi plus the rounding of its logs."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, C, K, "geometric", loops, 0.0)
    truth = np.repeat(rng.integers(0, C, size=T // 10 + 1), 10)[:T]
    x = rng.normal(size=(T, C)) + 2.0 * (np.arange(C)[None, :] == truth[:, None])
    one = _all_outputs(model, x, 1 << 20, 1, None)
    if one is None:
        return   # the fast path fell back: exact log space, checked elsewhere
    seq = _all_outputs(model, x, chunk, 1, None)
    assert seq["log_z"] == one["log_z"] and seq["score"] == one["score"] and seq["segs"] == one["segs"]
    for a, b in zip(seq["per_bin"], one["per_bin"]):
        np.testing.assert_array_equal(a, b)
    assert seq["runs"].tuples() == one["runs"].tuples()
    np.testing.assert_array_equal(seq["runs"].seg_post, one["runs"].seg_post)

    par = _all_outputs(model, x, chunk, threads, burn_in)
    assert par is not None, "the certificate failed with threads only"
    n_junctions = -(-T // chunk) - 1
    beta_f, beta_b, beta_v = (par["band"].get(k, 0.0) for k in ("forward", "backward", "viterbi"))
    assert max(beta_f, beta_b, beta_v) <= n_junctions * 1e-12 + 1e-15
    eps = np.finfo(np.float64).eps
    assert abs(par["log_z"] - one["log_z"]) <= beta_b + 4 * eps * abs(one["log_z"])
    bound = 4 * (beta_f + beta_b) + 1e-13
    for a, b in zip(par["per_bin"], one["per_bin"]):
        assert np.abs(a - b).max() <= bound
    # Max-plus values are logs: each bin's addition rounds at their magnitude.
    assert abs(par["score"] - one["score"]) <= beta_v + T * eps * abs(one["score"])
    if par["segs"] != one["segs"]:
        # Only a tie within the band may change the path: it must score the MAP.
        assert score_segmentation(model, x, par["segs"]) == pytest.approx(one["score"], abs=2 * beta_v + 1e-9)
    if par["runs"].tuples() == one["runs"].tuples():
        # Segment posteriors are exp(log numerator - log Z), logs at the contig's
        # scale: their rounding is eps |log Z|, however the rows were scaled.
        seg_bound = bound + 8 * eps * abs(one["log_z"])
        assert np.abs(par["runs"].seg_post - one["runs"].seg_post).max(initial=0.0) <= seg_bound
