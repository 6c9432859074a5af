"""What a newcomer meets first: verbosity options after the subcommand, a word
about the first run's compile, a plain HMM's calls, install lines that
install this checkout."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_helpers import run_main, write_model, write_tracks

ROOT = Path(__file__).resolve().parents[1]
HMM = str(ROOT / "configs" / "models" / "hmm-4.yaml")


def test_quiet_and_verbose_work_after_the_subcommand_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_model("m.yaml", bin_size=10)
    write_tracks("t.h5", {"chr1": 30, "chrX": 5})
    base = ["decode", "-m", "m.yaml", "-t", "t.h5", "-o", "c.bed"]
    _, _, err = run_main(base + ["-v"], capsys)
    assert "INFO" in err
    _, _, err = run_main(["-v"] + base, capsys)
    assert "INFO" in err
    _, _, err = run_main(base, capsys)
    assert "INFO" not in err
    _, _, err = run_main(["-v"] + base + ["-q"], capsys)   # they add up
    assert "INFO" not in err


def test_the_first_run_says_it_is_compiling(tmp_path):
    """A cold kernel cache: one line on stderr; warm: none."""
    write_model(tmp_path / "m.yaml", bin_size=10)
    write_tracks(tmp_path / "t.h5", {"chr1": 30})
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "flashseg", "decode", "-m", "m.yaml", "-t", "t.h5", "-o", "c.bed"]
    cold = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.count("compiling the inference kernels") == 1, cold.stderr
    warm = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert warm.returncode == 0 and "compiling" not in warm.stderr, warm.stderr


def test_a_plain_hmm_reports_runs_unless_asked_for_bins(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["simulate", "-m", HMM, "--contig", "chr1:400000", "--seed", "3", "-o", "sim"], capsys)
    assert code == 0, err

    def calls(*extra):
        code, out, err = run_main(["decode", "-m", HMM, "-t", "sim/tracks.h5", "-o", "-", *extra], capsys)
        assert code == 0, err
        return [line.split("\t")[:4] for line in out.splitlines() if not line.startswith("#")]

    runs, merged, bins = calls(), calls("--merge-adjacent"), calls("--no-merge-adjacent")
    assert runs == merged
    assert len(bins) == 2000 and len(runs) < 200
    assert all(a[3] != b[3] for a, b in zip(runs, runs[1:])), "adjacent runs have different labels"


def test_install_lines_install_this_checkout():
    """`pip install flashseg` would fetch an unrelated package from the index."""
    texts = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in texts:
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"pip install\s+([^\s#&|;]+(?:\s+[^\s#&|;-][^\s#&|;]*)*)", line):
                for target in match.group(1).split():
                    assert not re.match(r"['\"]?flashseg\b", target), f"{path}: {line.strip()}"
