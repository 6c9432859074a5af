"""Triton kernels on a real CUDA GPU: realistic-shape parity and a race stress test.

Skipped without a GPU (the interpreter tests in test_gpu_triton.py cover
the same code on CPU). Run on a GPU machine with ``pytest -m gpu``.
"""
import numpy as np
import pytest

from flashseg.core.gpu import gpu_available, interpreting

_HAVE_GPU = not interpreting() and gpu_available()

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _HAVE_GPU, reason="no CUDA GPU")]


def _model(rng, C, K):
    from flashseg.core import SemiMarkovModel

    # Peaked duration priors (negative-binomial-like in log space) and a sticky
    # transition matrix: the shape of a real chromatin-state model.
    d = np.arange(1, K + 1)[:, None]
    means = rng.uniform(K / 8, K / 2, size=C)[None, :]
    dur = -0.5 * ((d - means) / (means / 2)) ** 2
    dur -= np.log(np.exp(dur).sum(axis=0, keepdims=True))
    trans = np.log(rng.dirichlet(np.ones(C), size=C))
    np.fill_diagonal(trans, -np.inf)
    return SemiMarkovModel(dur, np.log(np.full(C, 0.9)), trans, np.zeros(C) - np.log(C), np.zeros(C))


class TestRealGpu:
    def test_realistic_shape_parity_with_cpu(self):
        from flashseg.core import api

        rng = np.random.default_rng(7)
        C, K, T = 8, 64, 50_000
        model = _model(rng, C, K)
        x = rng.normal(0.0, 2.0, size=(T, C))
        for method in ("viterbi", "posterior"):
            r0 = api.decode_contig(model, x, T, method=method, chunk_size=8192)
            r1 = api.decode_contig(model, x, T, method=method, chunk_size=8192, device="cuda")
            np.testing.assert_allclose(r1.log_partition, r0.log_partition, rtol=1e-9)
            if method == "viterbi":
                np.testing.assert_allclose(r1.viterbi_score, r0.viterbi_score, rtol=1e-9)
            np.testing.assert_array_equal(r1.calls.start, r0.calls.start)
            np.testing.assert_array_equal(r1.calls.label, r0.calls.label)
            np.testing.assert_allclose(r1.calls.seg_post, r0.calls.seg_post, atol=1e-9)

    def test_exact_logspace_path_parity_with_cpu(self):
        """The certificate's fallback (exact log space) on the GPU against the CPU's, at a realistic shape."""
        from flashseg.core.api import ArrayEmissions
        from flashseg.core.cpu import CpuBackend
        from flashseg.core.driver import ContigRun
        from flashseg.core.gpu import gpu_backend

        rng = np.random.default_rng(9)
        C, K, T = 8, 64, 20_000
        model = _model(rng, C, K)
        x = rng.normal(0.0, 2.0, size=(T, C))
        lz0 = ContigRun(CpuBackend(model, exact=True), ArrayEmissions(x), T, 4096).posterior_pass()[0]
        lz1 = ContigRun(gpu_backend(model, exact=True), ArrayEmissions(x), T, 4096).posterior_pass()[0]
        np.testing.assert_allclose(lz1, lz0, rtol=1e-11)

    def test_samples_on_the_device_equal_cpu_samples(self):
        """Posterior samples walked on the GPU (one program per sample) at a realistic
        shape: the CPU's samples for the same seed, sequential and chunk-parallel, and
        the same again on a repeat."""
        from flashseg.core import api

        rng = np.random.default_rng(10)
        C, K, T = 8, 64, 50_000
        model = _model(rng, C, K)
        x = rng.normal(0.0, 2.0, size=(T, C))
        ref = api.sample(model, x, n=8, seed=3, name="chr1", chunk_size=8192)
        for threads in (1, 4):
            runs = [api.sample(model, x, n=8, seed=3, name="chr1", chunk_size=8192, device="cuda",
                               threads=threads) for _ in range(2)]
            for got in runs:
                assert [s.tuples() for s in got] == [s.tuples() for s in ref]

    def test_race_stress_repeats_are_bit_identical(self):
        """C = 32 and K = 128: many warps per program; repeated launches must agree bit for bit."""
        import torch

        from flashseg.core.gpu import DeviceChunk, gpu_backend
        from flashseg.core.triton import linear_forward, viterbi_forward

        rng = np.random.default_rng(8)
        C, K, n, B = 32, 128, 4096, 8
        be = gpu_backend(_model(rng, C, K))
        x = torch.randn(B, n, C, dtype=torch.float64, device="cuda") * 3.0
        dc = DeviceChunk.from_log(x)
        nn = torch.full((B,), n, dtype=torch.int64, device="cuda")
        seeds = be.forward_state().dev
        vseeds = be.viterbi_state().dev
        outs = []
        for _ in range(5):
            state = {k: v.repeat((B,) + (1,) * (v.dim() - 1)).contiguous() for k, v in seeds.items()}
            store = {k: torch.empty((B, n + 1, C), dtype=torch.float64, device="cuda")
                     for k in ("E", "A", "L", "ghost")}
            store["sexp"] = torch.empty((B, n + 1), dtype=torch.int64, device="cuda")
            linear_forward(dc.x, dc.f, dc.k, nn, state, be.dev_fwd.linear, store)
            vstate = {k: v.repeat((B,) + (1,) * (v.dim() - 1)).contiguous() for k, v in vseeds.items()}
            vstore = {k: torch.empty((B, n + 1, C), dtype=torch.int64, device="cuda")
                      for k in ("a_start", "e_prev")}
            viterbi_forward(dc.x, nn, vstate, be.dev_fwd.log, vstore)
            torch.cuda.synchronize()
            outs.append([t.cpu().numpy().tobytes() for d in (state, store, vstate, vstore)
                         for t in d.values()])
        for o in outs[1:]:
            assert o == outs[0]
        # Every sequence of the batch is the same computation as a batch of one.
        state1 = {k: v.clone() for k, v in seeds.items()}
        store1 = {k: torch.empty((1, n + 1, C), dtype=torch.float64, device="cuda")
                  for k in ("E", "A", "L", "ghost")}
        store1["sexp"] = torch.empty((1, n + 1), dtype=torch.int64, device="cuda")
        linear_forward(dc.x[3:4].contiguous(), dc.f[3:4].contiguous(), dc.k[3:4].contiguous(),
                       nn[:1], state1, be.dev_fwd.linear, store1)
        state = {k: v.repeat((B,) + (1,) * (v.dim() - 1)).contiguous() for k, v in seeds.items()}
        store = {k: torch.empty((B, n + 1, C), dtype=torch.float64, device="cuda")
                 for k in ("E", "A", "L", "ghost")}
        store["sexp"] = torch.empty((B, n + 1), dtype=torch.int64, device="cuda")
        linear_forward(dc.x, dc.f, dc.k, nn, state, be.dev_fwd.linear, store)
        assert torch.equal(store["A"][3], store1["A"][0])
        assert torch.equal(store["sexp"][3], store1["sexp"][0])

