"""Hostile inputs that would exhaust the machine (issue 17, class 3): YAML alias bombs, huge
max_duration, endless or foreign table files, working memory beyond what is available, and
posterior samples that must not depend on how they are batched."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cli_helpers import run_main, write_tracks
from flashseg.core import ArrayEmissions, sample

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "models" / "demo.yaml"


def one_line_error(capsys, argv, code=1):
    got, _, err = run_main([str(a) for a in argv], capsys)
    assert got == code and err.count("\n") == 1 and err.startswith("flashseg: error: "), err
    assert "Traceback" not in err
    return err


def test_yaml_aliases_are_refused_before_they_expand(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("name: *i")          # 9**9 strings once expanded: gigabytes
    bomb.write_text("\n".join(lines) + "\n")
    err = one_line_error(capsys, ["validate", "-m", bomb])
    assert "YAML aliases (*name) are not allowed" in err and len(err) < 300


def test_huge_max_duration_is_refused_with_the_number(tmp_path, capsys):
    model = tmp_path / "m.yaml"
    model.write_text(DEMO.read_text().replace("max_duration: 64", "max_duration: 1000000000"))
    err = one_line_error(capsys, ["validate", "-m", model])
    assert "max_duration: must be at most 1000000 bins, got 1000000000" in err and "GiB" in err


def test_duration_tables_must_be_small_regular_files_and_are_never_echoed(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret line\n")
    for path, expected in (("/dev/zero", "is not a regular file"), (str(tmp_path), "is not a regular file"),
                           (str(secret), "secret.txt:1: not a number")):
        model = tmp_path / "m.yaml"
        model.write_text(DEMO.read_text().replace("{family: geometric, mean: 40}",
                                                  f"{{family: table, path: {path}}}"))
        err = one_line_error(capsys, ["validate", "-m", model])
        assert expected in err and "secret line" not in err
    big = tmp_path / "big.tsv"
    with open(big, "wb") as handle:
        handle.truncate((64 << 20) + 1)
    model = tmp_path / "m.yaml"
    model.write_text(DEMO.read_text().replace("{family: geometric, mean: 40}", f"{{family: table, path: {big}}}"))
    assert "more than the 64 MB" in one_line_error(capsys, ["validate", "-m", model])


def test_long_error_values_are_cut(tmp_path, capsys):
    model = tmp_path / "m.yaml"
    model.write_text(DEMO.read_text().replace("name: demo-4", "name: [" + ", ".join(["x" * 50] * 2000) + "]"))
    err = one_line_error(capsys, ["validate", "-m", model])
    assert err.startswith(f"flashseg: error: {model}: name: must be a non-empty string") and len(err) < 300


def test_working_memory_beyond_what_is_available_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    import flashseg.resources as resources

    tracks = write_tracks(tmp_path / "t.h5", {"chr1": 50}, labels=("Background", "Enhancer", "Promoter",
                                                                    "Repressed"), bin_size=200)
    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 30)          # 1 GiB left
    err = one_line_error(capsys, ["decode", "-m", DEMO, "-t", tracks, "--chunk-size", "100000000",
                                  "-o", tmp_path / "o.bed"])
    assert "needs about" in err and "--chunk-size 100000000" in err and "1 GiB are available" in err
    assert not (tmp_path / "o.bed").exists()
    got, _, _ = run_main(["decode", "-m", str(DEMO), "-t", tracks, "-o", str(tmp_path / "o.bed")], capsys)
    assert got == 0


def test_samples_do_not_depend_on_their_batches(monkeypatch):
    from flashseg.core import driver
    from flashseg.io.model import load_model

    model = load_model(DEMO).model
    x = np.random.default_rng(0).normal(0, 2, (400, 4))
    whole = sample(model, ArrayEmissions(x), n=7, seed=3, name="chrA", chunk_size=64)
    monkeypatch.setattr(driver, "SAMPLE_BATCH", 3)
    batched = sample(model, ArrayEmissions(x), n=7, seed=3, name="chrA", chunk_size=64)
    for a, b in zip(whole, batched):
        assert np.array_equal(a.start, b.start) and np.array_equal(a.label, b.label)
    assert len({tuple(s.start) for s in whole}) > 1


def test_a_contig_declaring_absurdly_many_rows_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    import h5py

    import flashseg.resources as resources

    monkeypatch.setattr(resources, "available_memory", lambda: 64 << 30)     # a large machine: 64 GiB free
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:       # 2**40 rows declared, none stored: a few KB on disk
        f.attrs.update({"format": "flashseg.tracks", "format_version": 1, "labels": ["Background", "Enhancer",
                        "Promoter", "Repressed"], "bin_size": 200, "score": "log_likelihood"})
        f.create_group("tracks").create_dataset("chr1", shape=(2**40, 4), dtype="f4", chunks=(8192, 4))
    err = one_line_error(capsys, ["decode", "-m", DEMO, "-t", path, "-o", tmp_path / "o.bed"])
    assert "needs about" in err and "1099511627776 bins in the longest contig" in err


def test_simulate_refuses_a_contig_longer_than_any_chromosome(tmp_path, capsys):
    got, _, err = run_main(["simulate", "-m", str(DEMO), "--contig", "c1:" + "1" + "0" * 30, "-o",
                            str(tmp_path / "sim")], capsys)
    assert got == 2 and "at most 17179869184 bp" in err and not (tmp_path / "sim").exists()
