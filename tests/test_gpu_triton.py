"""Triton GPU backend on CPU through the Triton interpreter (TRITON_INTERPRET=1).

Parity with the CPU backend through the real chunk driver (api functions
with device="cuda"), each kernel against its torch reference, chunk-size
invariance, the certificate's exact fallback, and the device errors.
The interpreter costs ~30 ms per bin and pass, so shapes are tiny.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from flashseg.core import gpu

_USER_INTERPRET = os.environ.get("TRITON_INTERPRET")
if not gpu.interpreting() and gpu.gpu_available():
    pytest.skip("a CUDA GPU is present: the compiled kernels are tested in test_gpu_device.py "
                "(run this file alone with TRITON_INTERPRET=1 for the interpreter path)",
                allow_module_level=True)

# Triton reads the switch when it is imported (its tl.sum/tl.max are jit
# functions) and when each kernel is decorated: set it before both, then put
# the environment back so that other test modules of this process never see
# it; the fixture below sets it again only while this module's tests run.
os.environ["TRITON_INTERPRET"] = "1"
try:
    pytest.importorskip("torch", reason="torch is not installed (pip install 'flashseg[gpu]')")
    pytest.importorskip("triton", reason="triton is not installed (pip install 'flashseg[gpu]')")
    import flashseg.core.triton as kt
finally:
    if _USER_INTERPRET is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _USER_INTERPRET

if type(kt.linear.linear_forward_kernel).__name__ != "InterpretedFunction":
    pytest.skip("triton was imported before this module without TRITON_INTERPRET=1; "
                "run this file on its own", allow_module_level=True)

import torch  # noqa: E402

from flashseg.core import SemiMarkovModel, api  # noqa: E402
from flashseg.core.chunks import EmissionChunk, ForwardStore, ViterbiStore  # noqa: E402
from flashseg.core.cpu import CpuBackend  # noqa: E402
from flashseg.core.driver import ContigRun  # noqa: E402
from flashseg.errors import DataError, DeviceError, NoValidSegmentation  # noqa: E402

from brute import random_emissions, random_model  # noqa: E402
from consumers import Collect  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def triton_interpreter():
    """TRITON_INTERPRET=1 while this module's tests run (gpu_backend reads it per call)."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    yield
    if old is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = old


def kernels():
    return kt


REL = 1e-9   # fp64 kernels: far inside the 1e-5 contract
ABS = 1e-9


def posteriors(model, x, chunk, device):
    col = Collect()
    res = api.posterior(model, x, consumer=col, chunk_size=chunk, device=device)
    return res, col.arrays()


# (seed, C, K, tail, self_loops, p_neginf model, p_neginf emissions, T, chunk)
CASES = [
    (1, 3, 4, "geometric", True, 0.0, 0.0, 40, 16),
    (2, 5, 8, "none", False, 0.1, 0.05, 40, 13),
    (3, 2, 1, "none", True, 0.0, 0.1, 30, 7),        # an HMM (K = 1, self-loops)
    (4, 4, 5, "mixed", True, 0.2, 0.1, 35, 35),
    (5, 1, 3, "geometric", False, 0.0, 0.0, 25, 10),  # one label
    (6, 5, 7, "geometric", True, 0.1, 0.0, 30, 9),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}-C{c[1]}-K{c[2]}-{c[3]}")
def test_parity_with_cpu_through_driver(case):
    seed, C, K, tail, loops, pm, px, T, chunk = case
    rng = np.random.default_rng(seed)
    model = random_model(rng, C, K, tail, loops, pm)
    x = random_emissions(rng, T, C, 2.0, px)
    x[np.isneginf(x).all(axis=1), 0] = 0.0  # keep every bin possible for some label
    try:
        ref, (g0, b0, c0) = posteriors(model, x, chunk, "cpu")
    except NoValidSegmentation:
        with pytest.raises(NoValidSegmentation):
            posteriors(model, x, chunk, "cuda")
        return
    res, (g1, b1, c1) = posteriors(model, x, chunk, "cuda")
    np.testing.assert_allclose(res.log_partition, ref.log_partition, rtol=REL)
    np.testing.assert_allclose(g1, g0, rtol=0, atol=ABS)
    np.testing.assert_allclose(b1, b0, rtol=0, atol=ABS)
    np.testing.assert_allclose(c1, c0, rtol=0, atol=ABS)
    v0 = api.viterbi(model, x, chunk_size=chunk)
    v1 = api.viterbi(model, x, chunk_size=chunk, device="cuda")
    np.testing.assert_allclose(v1.score, v0.score, rtol=REL)
    # Continuous random scores: no near-ties, so the paths must agree.
    for field in ("start", "end", "label"):
        np.testing.assert_array_equal(getattr(v1.segments, field), getattr(v0.segments, field))


def test_decode_contig_full_pipeline_matches_cpu():
    """Viterbi + exact-segment posteriors + samples through decode_contig (5 chunks)."""
    rng = np.random.default_rng(11)
    model = random_model(rng, 3, 6, "geometric", True, 0.0)
    T = 110
    x = random_emissions(rng, T, 3, 1.5, 0.02)
    kw = dict(name="chrT", n_samples=2, seed=5, chunk_size=24)
    r0 = api.decode_contig(model, x, T, **kw)
    r1 = api.decode_contig(model, x, T, device="cuda", **kw)
    assert r1.backend == "cuda" and not r1.exact_fallback
    np.testing.assert_allclose(r1.log_partition, r0.log_partition, rtol=REL)
    np.testing.assert_allclose(r1.viterbi_score, r0.viterbi_score, rtol=REL)
    for field in ("start", "end", "label"):
        np.testing.assert_array_equal(getattr(r1.calls, field), getattr(r0.calls, field))
    for field in ("seg_post", "start_post", "end_post", "label_post"):
        np.testing.assert_allclose(getattr(r1.calls, field), getattr(r0.calls, field), rtol=0, atol=ABS)
    # Same rows up to rounding and the same seeded generator: the same draws.
    for s0, s1 in zip(r0.samples, r1.samples):
        np.testing.assert_array_equal(s1.start, s0.start)
        np.testing.assert_array_equal(s1.label, s0.label)


def test_chunk_parallel_passes_match_cpu():
    """Chunk-parallel passes (every chunk from a certified guess, parallel.py)
    on the Triton kernels: the guesses are accepted and the results are the
    sequential CPU driver's."""
    from concurrent.futures import ThreadPoolExecutor

    from flashseg.core.gpu import GpuBackend

    rng = np.random.default_rng(12)
    C, K, T, chunk = 3, 3, 100, 25
    model = random_model(rng, C, K, "geometric", False, 0.0)
    truth = np.repeat(rng.integers(0, C, size=T // 5), 5)
    x = rng.normal(size=(T, C)) + 3.0 * (np.arange(C)[None, :] == truth[:, None])
    cpu = ContigRun(CpuBackend(model), api.ArrayEmissions(x), T, chunk)
    col0 = Collect()
    lz0, _ = cpu.posterior_pass(col0)
    v0 = cpu.viterbi()
    with ThreadPoolExecutor(2) as pool:
        run = ContigRun(GpuBackend(model), api.ArrayEmissions(x), T, chunk, pool=pool, workers=2, burn_in=40)
        col1 = Collect()
        lz1, _ = run.posterior_pass(col1)
        v1 = run.viterbi()
    for kind in ("forward", "backward", "viterbi"):
        assert run.pass_stats[kind].accepted == 3, (kind, run.pass_stats[kind])
    np.testing.assert_allclose(lz1, lz0, rtol=REL)
    for a, b in zip(col1.arrays(), col0.arrays()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ABS)
    np.testing.assert_allclose(v1[0], v0[0], rtol=REL)
    assert v1[1].tuples() == v0[1].tuples()


@pytest.mark.parametrize("exact", [False, True], ids=["linear", "logspace"])
def test_posterior_combination_kernel_matches_cpu_and_reference(monkeypatch, exact):
    """The per-bin combination (gamma, b, chg) on stored rows: the Triton kernel
    against the CPU kernel and its torch reference, on real rows of both passes
    (linear, or the exact fallback's logs); and the driver's GPU path really uses it."""
    from flashseg.core import cpu_kernels
    from flashseg.core.triton.posterior import posterior_combine, posterior_combine_reference

    rng = np.random.default_rng(4)
    C, K, T = 3, 4, 70
    model = random_model(rng, C, K, "geometric", True, 0.0)
    x = random_emissions(rng, T, C, 3.0)
    be = CpuBackend(model, exact=exact)
    chunk = EmissionChunk.from_log(x)
    fstore, bstore = be.new_store(T + 1), be.new_store(T + 1)
    be.forward_state().advance(chunk, fstore)
    bend = be.forward_state(backward=True)
    bend.advance(chunk.reversed(), bstore)
    log_z, zm, zexp = bend.log_partition()
    want_g, want_b, want_c = np.empty((T, C)), np.empty(T), np.empty(T)
    carry = np.zeros(C)
    flipped = bstore.flipped()
    be.posterior_chunk(fstore, flipped, log_z, zm, zexp, carry, 0, T, True, want_g, want_b, want_c)

    def rows(store):
        return {"E": torch.tensor(store.E)[None].contiguous(), "A": torch.tensor(store.A)[None].contiguous(),
                "sexp": torch.tensor(store.sexp)[None].contiguous()}

    args = (rows(fstore), rows(bstore), torch.tensor(np.diag(be.fwd.Tr).copy()), torch.tensor([T]),
            torch.tensor([0]))
    logs = dict(log_rows=True, trans=torch.tensor(model.transition)) if exact else {}
    carry_k = torch.zeros((1, C), dtype=torch.float64)
    g, b, c = posterior_combine(*args, carry_k, 1.0 / zm, zexp, b_reversed=True, block_n=16, **logs)
    carry_r = torch.zeros((1, C), dtype=torch.float64)
    gr, br, cr = posterior_combine_reference(*args, carry_r, 1.0 / zm, zexp, b_reversed=True, **logs)
    for got, ref_, want in ((g[0], gr[0], want_g), (b[0], br[0], want_b), (c[0], cr[0], want_c)):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ref_.numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(carry_k[0].numpy(), carry, rtol=0, atol=1e-12)

    def no_host_combination(*a, **k):
        raise AssertionError("the linear GPU path must combine on the device")

    monkeypatch.setattr(cpu_kernels, "posterior_chunk", no_host_combination)
    monkeypatch.setattr(cpu_kernels, "posterior_chunk_log", no_host_combination)
    col = Collect()
    res = ContigRun(gpu.GpuBackend(model, exact=exact), api.ArrayEmissions(x), T, 23).posterior_pass(col)
    assert res[0] == pytest.approx(log_z, rel=1e-12)
    np.testing.assert_allclose(col.arrays()[0], want_g, rtol=0, atol=1e-10)


def test_chunk_size_invariance():
    rng = np.random.default_rng(21)
    m = random_model(rng, 3, 5, "geometric", True, 0.1)
    model = SemiMarkovModel(m.duration, m.tail_log_rho, m.transition, np.zeros(3), np.zeros(3))
    x = random_emissions(rng, 36, 3, 2.0, 0.05)
    x[np.isneginf(x).all(axis=1), 0] = 0.0
    ref, (g0, b0, c0) = posteriors(model, x, 1000, "cuda")
    v0 = api.viterbi(model, x, chunk_size=1000, device="cuda")
    for chunk in (1, 5):
        res, (g, b, c) = posteriors(model, x, chunk, "cuda")
        np.testing.assert_allclose(res.log_partition, ref.log_partition, rtol=REL)
        np.testing.assert_allclose(g, g0, rtol=0, atol=ABS)
        np.testing.assert_allclose(b, b0, rtol=0, atol=ABS)
        np.testing.assert_allclose(c, c0, rtol=0, atol=ABS)
        v = api.viterbi(model, x, chunk_size=chunk, device="cuda")
        np.testing.assert_allclose(v.score, v0.score, rtol=REL)
        np.testing.assert_array_equal(v.segments.start, v0.segments.start)


def _walk_case(seed, C, K, tail, T, a, n_samples, ucap, ocap):
    """The last chunk [a, T) of a random contig, its forward rows and checkpoint
    (CPU backend), and walks of ``n_samples`` at the contig end whose buffers
    (ucap uniforms, ocap segments) are small enough to ask for more often."""
    from flashseg.core.sampling import log_rows

    rng = np.random.default_rng(seed)
    model = random_model(rng, C, K, tail, True, 0.0)
    x = random_emissions(rng, T, C, 1.0, 0.1)
    x[np.isneginf(x).all(axis=1), 0] = 0.0
    be = CpuBackend(model)
    state = be.forward_state()
    assert state.advance(EmissionChunk.from_log(x[:a])) == -1
    ck = state.copy()
    store = be.new_store(T - a + 1, with_tail=True)
    assert state.advance(EmissionChunk.from_log(x[a:]), store) == -1   # -1: no bin lost all mass
    lE, lA, lL = log_rows(store)
    rows = {"x": torch.tensor(np.ascontiguousarray(x[a:])), "lE": torch.tensor(lE), "lA": torch.tensor(lA),
            "lL": torch.tensor(lL)}
    pm = be.fwd
    model_log = {"phicirc": torch.tensor(pm.phicirc), "lrho": torch.tensor(pm.lrho),
                 "transT": torch.tensor(np.ascontiguousarray(pm.trans.T)), "final": torch.tensor(pm.final)}
    ring_log = np.array([[ck.log_ring_entry(c, slot) for slot in range(K)] for c in range(C)])
    S = n_samples
    walk = {"st_i": torch.tensor([[2, T, -1, -1]] * S), "st_f": torch.zeros((S, 2), dtype=torch.float64),
            "u": torch.zeros((S, ucap), dtype=torch.float64), "u_len": torch.zeros(S, dtype=torch.int64),
            "u_pos": torch.zeros(S, dtype=torch.int64), "n_out": torch.zeros(S, dtype=torch.int64),
            "code": torch.zeros(S, dtype=torch.int64), "need": torch.zeros(S, dtype=torch.int64)}
    for key in ("out_s", "out_e", "out_c"):
        walk[key] = torch.zeros((S, ocap), dtype=torch.int64)
    return rows, model_log, ring_log, walk


@pytest.mark.parametrize("seed,C,K,tail", [(21, 3, 6, "geometric"), (22, 4, 5, "mixed"), (23, 2, 8, "none"),
                                           (24, 1, 4, "geometric")])
def test_sample_walk_kernel_matches_host_walk(seed, C, K, tail):
    """The device walk against the host's compiled walk, launch by launch: the same
    codes, uniforms used, states and segments, with the host supplying uniforms,
    room and ring entries between launches as GpuBackend.walk_chunk does."""
    from flashseg.core import cpu_kernels as kern

    T, a = 48, 20
    rows, model_log, ring_log, walk = _walk_case(seed, C, K, tail, T, a, n_samples=6, ucap=5, ocap=3)
    twin = {key: v.clone() for key, v in walk.items()}
    C, K = ring_log.shape
    ring = torch.full((C, K), -np.inf, dtype=torch.float64)
    ready = torch.zeros(C, dtype=torch.int64)
    streams = [np.random.default_rng([seed, s]) for s in range(6)]
    segments = [[] for _ in range(6)]
    seen = set()
    for _ in range(200):
        kernels().sample.sample_walk(walk, rows, ring, ready, model_log, a, T)
        kernels().sample.sample_walk_reference(twin, rows, ring, ready, model_log, a, T)
        for key in ("code", "need", "u_pos", "n_out", "st_i"):
            np.testing.assert_array_equal(walk[key].numpy(), twin[key].numpy(), err_msg=key)
        np.testing.assert_allclose(walk["st_f"].numpy(), twin["st_f"].numpy(), rtol=1e-12, atol=1e-12)
        code = walk["code"].numpy()
        seen.update(code.tolist())
        if (code == kern.WALK_CHUNK_DONE).all():
            break
        assert not (code == kern.WALK_ZERO).any()
        for s in range(6):
            k = int(walk["n_out"][s])
            for key in ("out_s", "out_e", "out_c"):
                np.testing.assert_array_equal(walk[key][s, :k].numpy(), twin[key][s, :k].numpy())
            if code[s] == kern.WALK_NEED_SPACE:
                segments[s].extend(zip(*(walk[key][s, :k].tolist() for key in ("out_s", "out_e", "out_c"))))
                for w in (walk, twin):
                    w["n_out"][s] = 0
            elif code[s] == kern.WALK_NEED_UNIFORMS:
                rest = walk["u"][s, int(walk["u_pos"][s]):int(walk["u_len"][s])].numpy()
                fresh = np.concatenate([rest, streams[s].random(5 - len(rest))])
                for w in (walk, twin):
                    w["u"][s] = torch.tensor(fresh)
                    w["u_len"][s], w["u_pos"][s] = 5, 0
            elif code[s] == kern.WALK_NEED_RING:
                label = int(walk["need"][s])
                ring[label] = torch.tensor(ring_log[label])
                ready[label] = 1
    else:
        raise AssertionError("the walks never left the chunk")
    assert {kern.WALK_NEED_UNIFORMS, kern.WALK_NEED_SPACE} <= seen
    if K > 1:
        assert kern.WALK_NEED_RING in seen
    for s in range(6):
        k = int(walk["n_out"][s])
        segments[s].extend(zip(*(walk[key][s, :k].tolist() for key in ("out_s", "out_e", "out_c"))))
        assert segments[s], "every walk finds the contig's last segment"
        # A walk back from the contig end: contiguous segments, last first.
        assert segments[s][0][1] == T
        for (s1, _, _), (_, e0, _) in zip(segments[s], segments[s][1:]):
            assert e0 == s1


@pytest.mark.parametrize("threads,exact", [(1, False), (2, False), (1, True)],
                         ids=["sequential", "chunk-parallel", "logspace"])
def test_device_samples_equal_cpu_samples(monkeypatch, threads, exact):
    """api.sample on the device walks with the Triton kernel (never the host walk)
    and draws the CPU's samples: the same uniforms in the same order, and rows
    equal up to rounding. Chunk-parallel rows carry offsets; the log-space
    backend's rows are logs already."""
    import flashseg.core.sampling as sampling

    launches = []
    real = kernels().sample.sample_walk

    def counted(*args, **kw):
        launches.append(1)
        return real(*args, **kw)

    def no_host_walk(*args, **kw):
        raise AssertionError("the GPU backend walked on the host")

    rng = np.random.default_rng(41)
    model = random_model(rng, 3, 5, "mixed", True, 0.05)
    T, chunk = 90, 20
    truth = np.repeat(rng.integers(0, 3, size=T // 6), 6)
    x = rng.normal(size=(T, 3)) + 2.0 * (np.arange(3)[None, :] == truth[:, None])
    kw = dict(n=4, seed=9, name="chrS", chunk_size=chunk, threads=threads, burn_in=30)
    if exact:   # every model score above the linear path's limit: both backends in log space
        monkeypatch.setattr("flashseg.core.prepared.LINEAR_MAX_MODEL_SCORE", -np.inf)
    assert gpu.GpuBackend(model).exact == exact
    ref = api.sample(model, x, **kw)
    monkeypatch.setattr(kernels().sample, "sample_walk", counted)
    monkeypatch.setattr(sampling, "walk_chunk_on_host", no_host_walk)
    # Small buffers: the walks stop for uniforms and room many times per chunk.
    monkeypatch.setattr(gpu, "WALK_UNIFORMS", 4)
    monkeypatch.setattr(gpu, "WALK_SEGMENTS", 2)
    out = api.sample(model, x, device="cuda", **kw)
    assert len(launches) >= 2 * T // chunk
    assert api.sample(model, x, device="cuda", **dict(kw, n=0)) == []
    for s0, s1 in zip(ref, out):
        assert s1.tuples() == s0.tuples()


def test_shared_scaling_counterexample_falls_back_to_exact():
    """Shared scaling alone gives -inf (docs/algorithms.md, "Linear fast path and its certificate"); the certificate must catch it."""
    model = SemiMarkovModel(np.zeros((1, 2)), None, np.array([[0.0, -np.inf], [-np.inf, 0.0]]),
                            np.zeros(2), np.array([-np.inf, 0.0]))
    x = np.array([[0.0, -800.0], [0.0, 0.0], [0.0, 0.0]])
    res, (g, b, c) = posteriors(model, x, 2, "cuda")
    assert res.exact_fallback
    np.testing.assert_allclose(res.log_partition, -800.0, rtol=1e-12)
    np.testing.assert_allclose(g, [[0.0, 1.0]] * 3, atol=1e-12)


def test_exact_logspace_backend_matches_cpu_exact():
    rng = np.random.default_rng(31)
    model = random_model(rng, 4, 6, "mixed", True, 0.1)
    x = random_emissions(rng, 30, 4, 3.0, 0.1)
    x[np.isneginf(x).all(axis=1), 0] = 0.0
    src = api.ArrayEmissions(x)
    lz0 = ContigRun(CpuBackend(model, exact=True), src, 30, 8).posterior_pass()[0]
    lz1 = ContigRun(gpu.gpu_backend(model, exact=True), src, 30, 8).posterior_pass()[0]
    np.testing.assert_allclose(lz1, lz0, rtol=REL)


def test_impossible_contig_raises_no_valid_segmentation():
    model = SemiMarkovModel(np.zeros((2, 2)), None, np.full((2, 2), -np.inf), np.zeros(2), np.zeros(2))
    x = np.zeros((5, 2))  # segments of <= 2 bins, no transition allowed: nothing tiles 5 bins
    with pytest.raises(NoValidSegmentation):
        api.log_partition(model, x, chunk_size=3, device="cuda")
    with pytest.raises(NoValidSegmentation):
        api.viterbi(model, x, chunk_size=3, device="cuda")


# -- each kernel against its torch reference, batched and ragged ---------------

def _batch(rng, model, B, nmax, C):
    xs = [random_emissions(rng, nmax, C, 2.0, 0.05) for _ in range(B)]
    chunks = [EmissionChunk.from_log(x) for x in xs]
    x = torch.tensor(np.stack([c.x for c in chunks]))
    f = torch.tensor(np.stack([c.f for c in chunks]))
    k = torch.tensor(np.stack([c.k for c in chunks]))
    n = torch.tensor([nmax, nmax - 3][:B], dtype=torch.int64)  # ragged: masked tail rows
    return x, f, k, n


def _states(st, B):
    return {key: v.repeat((B,) + (1,) * (v.dim() - 1)).contiguous() for key, v in st.dev.items()}


def _store(B, rows, C, keys, dtype):
    return {key: torch.zeros((B, rows, C), dtype=dtype) for key in keys}


@pytest.mark.parametrize("min_duration", [1, 3])
def test_linear_and_logspace_kernels_match_torch_reference(min_duration):
    """min_duration 3: durations 1 and 2 impossible, so a fresh start makes A zero
    with mass still in the ring; the kernel decides in a second pass whether
    that is a loss (a live start at a really positive weight) or not."""
    rng = np.random.default_rng(41)
    C, K, nmax = 3, 5, 12
    model = random_model(rng, C, K, "mixed", True, 0.1)
    if min_duration > 1:
        duration = model.duration.copy()
        duration[:min_duration - 1] = -np.inf
        model = SemiMarkovModel(duration, model.tail_log_rho, model.transition, model.initial, model.final)
    be = gpu.gpu_backend(model)
    x, f, k, n = _batch(rng, model, 2, nmax, C)
    kt = kernels()
    linear_forward = kt.linear_forward
    for mk, run, ref, args in (
            (be.forward_state, kt.linear_forward, kt.linear_forward_reference, (x, f, k, n)),
            (lambda: gpu.GpuLogSpaceState(be.dev_fwd), kt.logspace_forward, kt.logspace_forward_reference,
             (x, k, n))):
        st = mk()
        s_kernel, s_ref = _states(st, 2), _states(st, 2)
        model_t = be.dev_fwd.linear if run is linear_forward else be.dev_fwd.log
        out = []
        for state in (s_kernel, s_ref):
            store = _store(2, nmax + 1, C, ("E", "A", "L", "ghost"), torch.float64)
            store["sexp"] = torch.zeros((2, nmax + 1), dtype=torch.int64)
            fn = run if state is s_kernel else ref
            status = fn(*args, state, model_t, store)
            out.append((status, store, state))
        (st0, so0, sa0), (st1, so1, sa1) = out
        assert torch.equal(st0, st1)
        for b in range(2):
            rows = int(n[b]) + 1
            # Log-space values sit near 0 (relative to 2**sexp): absolute rounding too.
            for key in ("E", "A", "L", "ghost"):
                torch.testing.assert_close(so0[key][b, :rows], so1[key][b, :rows], rtol=1e-12, atol=1e-13)
            assert torch.equal(so0["sexp"][b, :rows], so1["sexp"][b, :rows])
        for key in sa0:
            torch.testing.assert_close(sa0[key], sa1[key], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("ties", [False, True])
def test_viterbi_kernel_matches_torch_reference(ties):
    """Pointers equal to the plain recursion's; with integer scores every bin has exact ties."""
    rng = np.random.default_rng(42)
    C, K, nmax = 4, 3, 14
    if ties:
        C, K, nmax = 3, 5, 20
        model = SemiMarkovModel(rng.integers(-2, 1, size=(K, C)).astype(float), None,
                                rng.integers(-2, 1, size=(C, C)).astype(float), np.zeros(C), np.zeros(C))
    else:
        model = random_model(rng, C, K, "geometric", True, 0.1)
    be = gpu.gpu_backend(model)
    x, _, _, n = _batch(rng, model, 2, nmax, C)
    if ties:
        x = torch.round(torch.where(torch.isfinite(x), x, torch.full_like(x, -3.0)))
    st = be.viterbi_state()
    results = []
    kt = kernels()
    for fn in (kt.viterbi_forward, kt.viterbi_forward_reference):
        state = _states(st, 2)
        store = _store(2, nmax + 1, C, ("a_start", "e_prev"), torch.int64)
        fn(x, n, state, be.dev_fwd.log, store)
        results.append((state, store))
    (s0, p0), (s1, p1) = results
    for b in range(2):
        rows = int(n[b]) + 1
        for key in ("a_start", "e_prev"):
            assert torch.equal(p0[key][b, :rows], p1[key][b, :rows])
    for key in s0:
        torch.testing.assert_close(s0[key], s1[key], rtol=1e-12, atol=0)


def test_repeat_runs_are_bit_identical():
    rng = np.random.default_rng(51)
    model = random_model(rng, 4, 4, "geometric", True, 0.0)
    x = random_emissions(rng, 20, 4, 2.0, 0.0)
    be = gpu.gpu_backend(model)
    outs = []
    for _ in range(2):
        st = be.forward_state()
        store = ForwardStore(21, 4)
        st.advance(EmissionChunk.from_log(x), store)
        vs = be.viterbi_state()
        vstore = ViterbiStore(21, 4)
        vs.advance(EmissionChunk.from_log(x), vstore)
        outs.append((store.E.tobytes(), store.A.tobytes(), store.ghost.tobytes(), store.sexp.tobytes(),
                     vstore.a_start.tobytes(), vstore.e_prev.tobytes(), st.ring.tobytes()))
    assert outs[0] == outs[1]


# -- device selection ------------------------------------------------------------

def test_cuda_without_gpu_is_a_device_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    model = random_model(np.random.default_rng(0), 2, 2, "none", True, 0.0)
    with pytest.raises(DeviceError, match=r"^--device cuda: no usable CUDA GPU \(no NVIDIA device visible\)$"):
        gpu.gpu_backend(model)
    with pytest.raises(DeviceError, match="no usable CUDA GPU"):
        api.log_partition(model, np.zeros((3, 2)), device="cuda")
    with pytest.raises(DeviceError, match="no usable CUDA GPU"):
        gpu.resolve_device("cuda")
    assert gpu.resolve_device("auto") == "cpu"
    assert gpu.resolve_device("cpu") == "cpu"
    assert not gpu.gpu_available()


def test_gpu_available_does_not_import_torch_without_a_device():
    code = ("import sys; from flashseg.core.gpu import gpu_available, resolve_device; "
            "print(gpu_available(), resolve_device('auto'), 'torch' in sys.modules, 'triton' in sys.modules)")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "cpu", "False", "False"]


# -- many chunks per launch (chunk-parallel passes on the GPU) --------------------

def _mixing_gpu_case(T, seed=12, C=3, K=4):
    rng = np.random.default_rng(seed)
    model = random_model(rng, C, K, "geometric", False, 0.0)
    truth = np.repeat(rng.integers(0, C, size=T // 5 + 1), 5)[:T]
    x = rng.normal(size=(T, C)) + 3.0 * (np.arange(C)[None, :] == truth[:, None])
    return model, x


def _gpu_run(model, x, chunk, workers, burn_in, exact=False):
    """(logZ, gamma/b/chg, exact-segment posteriors, Viterbi, pass stats) of one
    chunk-parallel run on the GPU backend with ``workers`` chunks in flight."""
    from concurrent.futures import ThreadPoolExecutor

    from flashseg.core.trackers import SegmentTracker
    from flashseg.core.gpu import GpuBackend

    T = len(x)
    with ThreadPoolExecutor(workers) as pool:
        be = GpuBackend(model, exact=exact)
        run = ContigRun(be, api.ArrayEmissions(x), T, chunk, pool=pool, workers=workers, burn_in=burn_in)
        score, segs = run.viterbi()
        tracker = SegmentTracker(be.fwd, T, "exact", segs.start, segs.label)
        col = Collect()
        lz, _ = run.posterior_pass(col, [tracker])
    calls = tracker.calls
    return lz, col.arrays(), (calls.seg_post, calls.start_post, calls.label_post), (score, segs), run.pass_stats


@pytest.mark.parametrize("burn_in", [48, 0], ids=["guesses-accepted", "guesses-rejected"])
def test_batched_passes_equal_one_chunk_per_launch_and_cpu(burn_in):
    """Six chunks in flight advance three per launch (ragged last chunk,
    padding, per-row bin counts): every number equals that of one chunk per
    launch bit for bit, and the sequential CPU driver's within rounding. With
    no burn-in every guess is rejected and re-run from the exact state."""
    from flashseg.core.gpu import GpuBackend

    assert GpuBackend.batch_size(6) == 3 and GpuBackend.batch_size(2) == 1
    model, x = _mixing_gpu_case(T=98)
    one = _gpu_run(model, x, 16, 2, burn_in)
    many = _gpu_run(model, x, 16, 6, burn_in)
    assert one[0] == many[0]
    for a, b in zip(one[1] + one[2], many[1] + many[2]):
        np.testing.assert_array_equal(a, b)
    assert one[3][0] == many[3][0] and one[3][1].tuples() == many[3][1].tuples()
    stats = {k: (v.accepted, v.rerun) for k, v in many[4].items()}
    assert stats == {k: (v.accepted, v.rerun) for k, v in one[4].items()}
    want = (6, 0) if burn_in else (0, 6)
    assert all(v == want for v in stats.values()), stats
    cpu = ContigRun(CpuBackend(model), api.ArrayEmissions(x), len(x), 16)
    col = Collect()
    lz0, _ = cpu.posterior_pass(col)
    np.testing.assert_allclose(many[0], lz0, rtol=REL)
    for a, b in zip(many[1], col.arrays()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ABS)
    v0 = cpu.viterbi()
    np.testing.assert_allclose(many[3][0], v0[0], rtol=REL)
    assert many[3][1].tuples() == v0[1].tuples()


def certificate_terms(fstore, bstore, max_weight, tr_up, log_z, rows):
    """The certificate's terms and log ratio of a chunk on the host, from the
    stores' host arrays, straight from docs/algorithms.md's formulas (tr_up:
    the transition weights' upper bound, PreparedModel.tr_up)."""
    from scipy.special import logsumexp

    ln2 = math.log(2.0)
    rows_f = {key: getattr(fstore, key)[:rows] for key in ("E", "sexp", "ghost")}
    rows_b = {key: getattr(bstore, key)[:rows] for key in ("E", "sexp", "ghost")}
    total, ratio = 0.0, -math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        trans = np.log(tr_up)
        for lost, other, links in ((rows_f, rows_b, trans), (rows_b, rows_f, trans.T)):
            log_other = np.log(other["E"]) + other["sexp"][:, None] * ln2
            total += float(np.nansum(max_weight[None, :] * np.exp(lost["ghost"] + log_other - log_z)))
            inflow = logsumexp(lost["ghost"][:, :, None] + np.log(max_weight)[None, :, None] + links[None], axis=1)
            own = np.log(lost["E"]) + lost["sexp"][:, None] * ln2
            r = np.where(np.isfinite(inflow), np.where(lost["E"] > 0, inflow - own, np.inf), -np.inf)
            ratio = max(ratio, float(r.max()))
        both = np.isfinite(rows_f["ghost"]) & np.isfinite(rows_b["ghost"])
        meet = np.where(both, rows_f["ghost"] + rows_b["ghost"] - log_z, -np.inf)
        total += 2.0 * float((max_weight[None, :] * np.exp(meet)).sum())
    return total, ratio


def test_batched_passes_carry_ghosts_and_certify_on_the_device():
    """Mass flushed early is carried as a ghost into every later chunk; in a
    batch the ghosts carried into guessed chunks are added to their rows on
    the device, and the certificate summed there equals the host's sum."""
    from flashseg.core import gpu as g

    rng = np.random.default_rng(3)
    C, T, chunk = 3, 90, 15
    model = random_model(rng, C, 4, "geometric", True, 0.0)
    x = rng.normal(size=(T, C))
    x[10, 2] = -900.0            # label 2 drops 900 nats in one bin: flushed, then recovers
    host_sums, device_sums = [], []
    real = g.device_certificate

    def both(fstore, bstore, max_weight, tr_up, log_z, rows):
        out = real(fstore, bstore, max_weight, tr_up, log_z, rows)
        host_sums.append(certificate_terms(fstore, bstore, np.asarray(max_weight), np.asarray(tr_up), log_z, rows))
        device_sums.append((float(out[0]), float(out[1])))
        assert bool(out[2]) == fstore.ghost_flag.any() and bool(out[3]) == bstore.ghost_flag.any()
        return out

    g.device_certificate = both
    try:
        lz, (gam, bnd, chg), *_ = _gpu_run(model, x, chunk, 6, 20)
    finally:
        g.device_certificate = real
    assert len(device_sums) == T // chunk and max(d[0] for d in device_sums) > 0.0, \
        "the early loss must reach later chunks"
    # The ghost rows of guessed chunks (rows kept by the pass) are the sequential pass's.
    from concurrent.futures import ThreadPoolExecutor

    from flashseg.core.parallel import offset_log

    be = CpuBackend(model)
    state = be.forward_state()
    seq_rows = []
    for a in range(0, T, chunk):
        st = be.new_store(chunk + 1)
        state.advance(EmissionChunk.from_log(x[a:a + chunk]), st)
        seq_rows.append(st.ghost_rows())
    with ThreadPoolExecutor(6) as pool:
        prun = ContigRun(g.GpuBackend(model), api.ArrayEmissions(x), T, chunk, pool=pool, workers=6, burn_in=60)
        cache = {}
        prun.schedule.checkpoints("forward", None, cache)
    assert prun.pass_stats["forward"].accepted >= 3, prun.pass_stats
    for j, want in enumerate(seq_rows):
        got = cache[j][1].ghost_rows() - offset_log(cache[j][1].log_offset)
        assert np.array_equal(np.isfinite(got), np.isfinite(want)), j
        live = np.isfinite(want)
        np.testing.assert_allclose(got[live], want[live], rtol=0, atol=math.log(4.0))
    np.testing.assert_allclose([d[0] for d in device_sums], [h[0] for h in host_sums], rtol=1e-9, atol=0)
    for (_, got), (_, want) in zip(device_sums, host_sums):
        assert got == want or abs(got - want) <= 1e-9 * max(1.0, abs(want)), (got, want)
    ref = api.posterior(model, x, chunk_size=chunk)
    assert not ref.exact_fallback
    np.testing.assert_allclose(lz, ref.log_partition, rtol=REL)


def test_batched_backward_pass_keeps_rows_for_a_prefix_of_chunks(monkeypatch):
    """The backward pass keeps rows for its first chunks only (the cache
    budget): a batch never mixes kept and unkept chunks, and results do not
    change."""
    from flashseg.core import schedule

    model, x = _mixing_gpu_case(T=100, seed=5)
    ref = _gpu_run(model, x, 10, 6, 20)
    monkeypatch.setattr(schedule, "CHUNK_CACHE_BYTES", 4 * 11 * (3 * 40 + 16))   # 4 chunks of 10 bins
    sizes = []
    from flashseg.core.gpu import _DeviceState

    real = _DeviceState.advance_rows

    def spy(self, chunks, stores=None):
        sizes.append((len(chunks), stores is not None and any(s is not None for s in stores)))
        return real(self, chunks, stores)

    monkeypatch.setattr(_DeviceState, "advance_rows", spy)
    got = _gpu_run(model, x, 10, 6, 20)
    assert got[0] == ref[0]
    for a, b in zip(got[1], ref[1]):
        np.testing.assert_array_equal(a, b)
    assert (1, True) in sizes and (3, True) in sizes, sizes   # 4 kept chunks: a batch of 3, then 1


def test_batched_passes_name_bad_bins_as_in_sequence():
    model, x = _mixing_gpu_case(T=100)
    y = x.copy()
    y[57, 1] = np.nan
    with pytest.raises(DataError, match="bin 57"):
        api.posterior(model, y, chunk_size=10, threads=6, device="cuda")


def test_gpu_store_reads_rows_from_the_device():
    """A GpuStore's host arrays, single-row reads (trackers), flips and flags
    agree with the rows the kernel left on the device."""
    from flashseg.core.gpu import GpuBackend, GpuStore

    rng = np.random.default_rng(8)
    C, T = 3, 30
    model = random_model(rng, C, 4, "geometric", True, 0.0)
    x = random_emissions(rng, T, C, 2.0)
    be = GpuBackend(model)
    store = be.new_store(T + 1)
    assert isinstance(store, GpuStore) and store.head(5).rows == 5
    host = ForwardStore(T + 1, C)
    for st in (store, host):
        assert be.forward_state().advance(EmissionChunk.from_log(x), st) == -1
    for key in ("E", "A", "sexp", "ghost", "ghost_flag"):
        np.testing.assert_array_equal(getattr(store, key), getattr(host, key))
    rows, cols = np.array([0, 7, 30, 7]), np.array([2, 0, 1, 1])
    fresh = GpuStore(T + 1, C)
    fresh.attach(store.device_rows, store.device_x)
    fresh.log_offset = host.log_offset = (3, 0.25)
    for s, h in ((fresh, host), (fresh.flipped(), host.flipped())):
        np.testing.assert_array_equal(s.log_E(rows, cols), h.log_E(rows, cols))
        np.testing.assert_array_equal(s.log_A(rows, cols), h.log_A(rows, cols))
        assert "E" not in s._cache and "sexp" not in s._cache, "single rows are gathered on the device"
        np.testing.assert_array_equal(s.E, h.E)
        np.testing.assert_array_equal(s.sexp, h.sexp)
    assert store.any_loss() == host.any_loss()


@pytest.mark.parametrize("which", ["winner", "minority"])
def test_paths_lost_by_both_passes_are_caught_on_the_device(which):
    """The certificate's worst cases (tests/brute.py) on the Triton kernels:
    a path both linear passes flush, the winner or a 40% minority that is not
    the MAP, makes the contig fall back to exact log space."""
    from brute import flushed_by_both_case, lost_minority_case
    from flashseg.core import reference as ref

    model, x = (flushed_by_both_case() if which == "winner" else lost_minority_case())[:2]
    res = api.posterior(model, x, chunk_size=7, device="cuda")
    assert res.exact_fallback
    np.testing.assert_allclose(res.log_partition, ref.log_partition(model, x), rtol=1e-12)
