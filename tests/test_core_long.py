"""A chromosome-scale run in a subprocess: memory stays bounded (no O(T C) arrays)."""
import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json, resource, time
    import numpy as np
    from flashseg.core import SemiMarkovModel, api

    T, K, C = {T}, 16, 4
    rng = np.random.default_rng(0)
    dur = np.log(rng.dirichlet(np.ones(K), size=C).T)
    P = np.log(rng.dirichlet(np.ones(C) * 5, size=C))
    model = SemiMarkovModel(dur, np.log(np.full(C, 0.95)), P, np.zeros(C), np.zeros(C))
    levels = np.arange(C, dtype=np.float64)

    def emissions(a, b):
        # Generated per request, never materialised: a slow square wave of
        # labels plus deterministic pseudo-noise, a function of the bin only.
        i = np.arange(a, b)
        truth = (i // 997) % C
        noise = ((i * 2654435761) % 1000003) / 1000003.0 - 0.5
        signal = truth + 1.5 * noise
        return -0.5 * (signal[:, None] - levels[None, :]) ** 2

    class Summary:
        def __init__(self):
            self.bins = 0
            self.gamma_sum = 0.0
        def chunk(self, start, gamma, boundary, change):
            assert start == self.bins
            self.bins += len(gamma)
            self.gamma_sum += float(gamma.sum())

    def peak_rss_mb():
        # VmHWM is this process's own peak; ru_maxrss also keeps the peak of
        # the process it was started from (Linux carries it across exec).
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    s = Summary()
    res = api.decode_contig(model, emissions, T, method="posterior", per_bin=s,
                            chunk_size=65536, name="chrLong")
    print(json.dumps({{"bins": s.bins, "gamma_sum": s.gamma_sum, "logz": res.log_partition,
                      "segments": len(res.calls), "seconds": time.perf_counter() - t0,
                      "maxrss_mb": peak_rss_mb()}}))
""")


@pytest.mark.slow
def test_long_contig_bounded_memory():
    T = 20_000_000
    out = subprocess.run([sys.executable, "-c", CHILD.format(T=T)], capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bins"] == T
    assert res["gamma_sum"] == pytest.approx(T, rel=1e-9)   # every bin's gamma sums to 1
    assert res["segments"] > T // 997 * 0.9                  # the square wave is found
    assert res["maxrss_mb"] < 1024, res


def _scaled_hmm_posteriors(x, trans, initial, final):
    """Textbook scaled forward-backward of an HMM (per-bin normalisation):
    rounding stays at a few eps per bin, whatever the contig's length."""
    import numpy as np

    T, C = x.shape
    Tr, e = np.exp(trans), np.exp(x - x.max(axis=1, keepdims=True))
    alpha, scale = np.empty((T, C)), np.empty(T)
    a = np.exp(initial) * e[0]
    for t in range(T):
        if t:
            a = (alpha[t - 1] @ Tr) * e[t]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    beta = np.empty((T, C))
    beta[-1] = np.exp(final) / (alpha[-1] @ np.exp(final))
    for t in range(T - 2, -1, -1):
        beta[t] = Tr @ (e[t + 1] * beta[t + 1]) / scale[t + 1]
    gamma = alpha * beta
    log_z = np.log(scale).sum() + x.max(axis=1).sum() + np.log(alpha[-1] @ np.exp(final))
    return log_z, gamma / gamma.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("exact", [False, True], ids=["linear", "logspace"])
def test_long_contig_posteriors_keep_full_precision(exact):
    """Over 2 * 10**5 bins (|log Z| ~ 10**6) both CPU paths match a scaled HMM
    forward-backward to ~1e-12: log-space values relative to 2**sexp (as
    the linear path's mantissas) round at eps, not at eps * |log Z| per bin
    (absolute logs drifted by ~1e-7 here)."""
    import numpy as np

    from flashseg.core import SemiMarkovModel
    from flashseg.core.cpu import CpuBackend
    from flashseg.core.driver import ContigRun

    rng = np.random.default_rng(5)
    T, C = 200_000, 4
    trans = np.log(rng.dirichlet(np.ones(C), size=C) + np.eye(C) * 20)
    trans -= np.log(np.exp(trans).sum(axis=1, keepdims=True))
    model = SemiMarkovModel(np.zeros((1, C)), None, trans, np.full(C, -np.log(C)), np.zeros(C))
    truth = np.repeat(rng.integers(0, C, size=T // 50), 50)
    x = -0.5 * (truth[:, None] + rng.normal(size=(T, 1)) - np.arange(C)[None, :]) ** 2 - 3.0

    class Gamma:
        def __init__(self):
            self.gamma = np.empty((T, C))

        def chunk(self, start, gamma, boundary, change):
            self.gamma[start:start + len(gamma)] = gamma

    backend = CpuBackend(model, exact=exact)
    assert backend.exact == exact
    got = Gamma()
    log_z, _ = ContigRun(backend, lambda a, b: x[a:b], T, 65536).posterior_pass(got)
    want_log_z, want = _scaled_hmm_posteriors(x, trans, model.initial, model.final)
    assert abs(want_log_z) > 5e5
    assert abs(log_z - want_log_z) <= 1e-14 * abs(want_log_z)
    assert np.abs(got.gamma - want).max() <= 1e-11
