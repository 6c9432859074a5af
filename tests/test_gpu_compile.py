"""Every Triton kernel compiles for the H100/H200 (sm_90), on a machine without a GPU.

The interpreter tests (test_gpu_triton.py) run the kernels' Python; they
cannot see what only the compiler rejects (a module global that is not a
constexpr, an op with no fp64 lowering, a bad layout). Triton ships ptxas,
so CI compiles each kernel family the way a GPU run would, and checks that
the ring tile does not spill (a few bytes at most in the small shapes) and
keeps its warps on the label axis.
Runs in a subprocess: the interpreter flag that other test modules set must
not reach the compiler.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

# Only looked up, not imported: triton reads TRITON_INTERPRET when it is
# first imported, and test_gpu_triton.py must be the one to import it.
if importlib.util.find_spec("torch") is None or importlib.util.find_spec("triton") is None:
    pytest.skip("torch and triton are not installed (pip install 'flashseg[gpu]')", allow_module_level=True)


def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_aot.py")
    proc = subprocess.run([sys.executable, script, "--quick"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
    kernels = {row[0] for row in rows}
    assert kernels == {"linear_forward_kernel", "logspace_forward_kernel", "viterbi_forward_kernel",
                       "posterior_combine_kernel", "sample_walk_kernel"}
    # two shapes x store on/off x three ring families, and the combination
    # (linear and log space) and the sampler once per shape
    assert len(rows) == 18
    for name, C, K, store, warps, regs, spill, label_warps, _ in rows:
        assert 0 < int(regs) <= 255
        # A few bytes of stack are harmless; a tile laid out across the wrong
        # axes spills hundreds (the first version spilled 244-13000 bytes).
        assert int(spill) <= 64, f"{name} C={C} K={K} store={store} spills {spill} bytes"
        if int(K) >= 32 and name not in ("posterior_combine_kernel", "sample_walk_kernel"):
            # Warps on labels, lanes on durations (common.ring_rows_axis): with
            # this Triton's tie rule guessed wrong the kernels run 3x slower.
            assert int(label_warps) == int(warps), f"{name} C={C} K={K}: {label_warps} of {warps} warps on labels"
