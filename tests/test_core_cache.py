"""Compiled kernels are cached, also when the install directory cannot be written."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import flashseg

TINY = textwrap.dedent("""
    import numpy as np
    from flashseg.core import SemiMarkovModel, api
    m = SemiMarkovModel(np.zeros((2, 2)), np.log([0.5, 0.5]), np.zeros((2, 2)), np.zeros(2), np.zeros(2))
    print(api.log_partition(m, np.zeros((8, 2))))
""")


@pytest.mark.slow
def test_read_only_install_caches_in_the_user_cache_dir(tmp_path):
    src = os.path.dirname(flashseg.__file__)
    site = tmp_path / "site"
    shutil.copytree(src, site / "flashseg", ignore=shutil.ignore_patterns("__pycache__", "data"))
    # A *file* where the in-tree cache directory would go makes the install
    # unwritable for numba even for root (chmod does not stop root).
    (site / "flashseg" / "core" / "__pycache__").write_text("not a directory")
    home = tmp_path / "home"
    env = dict(os.environ, PYTHONPATH=str(site), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    env.pop("NUMBA_CACHE_DIR", None)
    for _ in range(2):   # the second run loads what the first one cached
        out = subprocess.run([sys.executable, "-c", TINY], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
    cached = [name for _, _, files in os.walk(home / ".cache") for name in files
              if name.startswith("cpu_kernels.") and name.endswith(".nbi")]
    assert cached, "numba should fall back to the user cache directory"
