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
