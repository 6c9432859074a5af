"""Bad input: every case exits with the right code and one line naming the place, no traceback,
no output file left behind (docs/formats.md, "Publishing outputs")."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from cli_helpers import MODEL_YAML, run_main, stand_in_workspace, write_model, write_tracks

BS = 10


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A good workspace: model, tracks (chr1 30 bins, chr2 7 bins), FASTA; cwd = tmp_path.

    Decoding uses the stand-in core, so these tests are about input handling
    only; an error raised inside the real core's worker threads is covered by
    test_no_valid_segmentation.
    """
    return stand_in_workspace(tmp_path, monkeypatch, bin_size=BS)


def edit_attr(path, key, value):
    with h5py.File(path, "a") as f:
        if value is None:
            del f.attrs[key]
        else:
            f.attrs[key] = value


def set_rows(path, contig, rows, value):
    with h5py.File(path, "a") as f:
        ds = f["tracks"][contig]
        for r in rows:
            ds[r, 0] = value


def prob_tracks(path, bad):
    x = np.full((30, 2), 0.5)
    x[4, 1] = bad
    write_tracks(path, {"chr1": 30}, score="probability", values={"chr1": x})


def dup_fasta(path):
    with open(path, "w") as f:
        f.write(">chr1 first\nACGT\n>chr2\nACGT\n>chr1 second\nACGT\n")


def case(name, argv, code, *needles, setup=None):
    return pytest.param(argv, code, needles, setup, id=name)


D = ["decode", "-m", "m.yaml", "-t", "t.h5"]

CASES = [
    case("missing-model", ["decode", "-m", "nope.yaml", "-t", "t.h5"], 2, "nope.yaml"),
    case("missing-tracks", ["decode", "-m", "m.yaml", "-t", "nope.h5"], 2, "nope.h5"),
    case("missing-fasta", D + ["--fasta", "nope.fa"], 2, "nope.fa"),
    case("not-hdf5", ["decode", "-m", "m.yaml", "-t", "m.yaml"], 1, "m.yaml", "not an HDF5 file"),
    case("wrong-format-attr", D, 1, "t.h5", "format attribute", setup=lambda: edit_attr("t.h5", "format", "other")),
    case("format-version", D, 1, "t.h5", "format_version", setup=lambda: edit_attr("t.h5", "format_version", 2)),
    case("missing-labels-attr", D, 1, "t.h5", "labels", setup=lambda: edit_attr("t.h5", "labels", None)),
    case("label-mismatch", D, 1, "t.h5", "missing label(s) B", "unknown label(s) Z",
         setup=lambda: write_tracks("t.h5", {"chr1": 30}, labels=("A", "Z"))),
    case("unknown-score-kind", D, 1, "t.h5", "score", setup=lambda: edit_attr("t.h5", "score", "zscore")),
    case("bin-size-0", D, 1, "t.h5", "bin_size", setup=lambda: edit_attr("t.h5", "bin_size", 0)),
    case("bin-size-differs", D, 1, "t.h5", "bin_size 20", "bin_size 10",
         setup=lambda: write_tracks("t.h5", {"chr1": 30}, bin_size=20)),
    case("contig-not-in-tracks", D + ["--contig", "chr9"], 1, "t.h5", "contig chr9"),
    case("contig-chr-hint", D + ["--contig", "1"], 1, "contig 1", "'chr1'"),
    case("length-vs-fasta", D + ["--fasta", "g.fa"], 1, "t.h5", "contig chr2", "70 bp",
         setup=lambda: write_tracks("t.h5", {"chr1": 30, "chr2": 9})),
    case("track-contig-not-in-fasta", D + ["--fasta", "g.fa"], 1, "contig chrZ", "not in the FASTA",
         setup=lambda: write_tracks("t.h5", {"chr1": 30, "chrZ": 3})),
    case("nothing-to-decode", D, 1, "nothing to decode", setup=lambda: write_tracks("t.h5", {"chr1": 0})),
    case("nan", D, 1, "t.h5", "contig chr1", "bin 5", "NaN", setup=lambda: set_rows("t.h5", "chr1", [5, 9], np.nan)),
    case("plus-inf", D, 1, "t.h5", "contig chr2", "bin 3", "+inf", setup=lambda: set_rows("t.h5", "chr2", [3], np.inf)),
    case("probability-negative", D, 1, "t.h5", "contig chr1", "bin 4", "-0.25",
         setup=lambda: prob_tracks("t.h5", -0.25)),
    case("probability-above-1", D, 1, "t.h5", "contig chr1", "bin 4", "1.5", setup=lambda: prob_tracks("t.h5", 1.5)),
    case("tracks-differ-in-bins", D + ["-t", "u.h5:0.5"], 1, "u.h5", "contig chr1",
         setup=lambda: write_tracks("u.h5", {"chr1": 31, "chr2": 7})),
    case("duplicate-fasta-names", D + ["--fasta", "g.fa"], 1, "g.fa", "duplicate contig name 'chr1'",
         setup=lambda: dup_fasta("g.fa")),
    case("region-out-of-range", D + ["--fasta", "g.fa", "--region", "chr1:100-400"], 1, "contig chr1", "295"),
    case("region-unknown-contig", D + ["--region", "chr7:1-10"], 1, "contig chr7"),
    case("region-syntax", D + ["--region", "chr1:10"], 2, "--region"),
    case("contig-and-region", D + ["--contig", "chr1", "--region", "chr1:1-10"], 2, "--region"),
    case("chunk-size-0", D + ["--chunk-size", "0"], 2, "--chunk-size"),
    case("threads-0", D + ["--threads", "0"], 2, "--threads"),
    case("samples-without-out", D + ["--samples", "3"], 2, "--samples-out"),
    case("two-stdout-outputs", D + ["-o", "-", "--changes", "-"], 2, "stdout"),
    case("no-sources", ["decode", "-m", "m.yaml"], 2, "-t/--tracks"),
    case("gap-min-without-fasta", D + ["--gap-min", "100"], 2, "--fasta"),
    case("unwritable-output-dir", D + ["-o", "no/such/dir/out.bed"], 1, "no/such/dir", "does not exist"),
    case("malformed-yaml", D, 1, "m.yaml", setup=lambda: write_model("m.yaml", text="name: [unclosed\n  x: :")),
    case("unknown-duration-family", D, 1, "m.yaml", "family",
         setup=lambda: write_model("m.yaml", text=MODEL_YAML.format(bin_size=BS).replace("family: geometric", "family: zipf", 1))),
    case("negative-mean", D, 1, "m.yaml", "mean",
         setup=lambda: write_model("m.yaml", text=MODEL_YAML.format(bin_size=BS).replace("mean: 4", "mean: -3", 1))),
    case("max-duration-0", D, 1, "m.yaml", "max_duration",
         setup=lambda: write_model("m.yaml", text=MODEL_YAML.format(bin_size=BS).replace("max_duration: 8", "max_duration: 0"))),
    case("rho-at-least-1", D, 1, "m.yaml", "labels[0]",
         setup=lambda: write_model("m.yaml", text=MODEL_YAML.format(bin_size=BS).replace(
             "{family: geometric, mean: 4}", "{family: uniform, min: 1, max: 50}", 1))),
    case("transition-row-sums-to-0", D, 1, "m.yaml", "transitions",
         setup=lambda: write_model("m.yaml", text=MODEL_YAML.format(bin_size=BS).replace("A: {B: 1.0}", "A: {B: 0.0}"))),
    case("device-cuda-without-gpu", D + ["--device", "cuda"], 1, "--device cuda"),
    case("tracks-is-directory", ["decode", "-m", "m.yaml", "-t", "."], 2, "directory"),
    case("empty-fasta", D + ["--fasta", "g.fa"], 1, "g.fa", setup=lambda: open("g.fa", "w").close()),
]


@pytest.mark.parametrize("argv, code, needles, setup", CASES)
def test_bad_input(ws, capsys, argv, code, needles, setup, monkeypatch):
    if setup is not None:
        setup()
    if "--device" in argv:
        import flashseg.core.gpu as gpu

        if gpu.gpu_available():
            pytest.skip("a CUDA GPU is present, so --device cuda is not an error here")
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    before = set(os.listdir(ws))
    rc, out, err = run_main(argv + ["-o", "out.bed"] if "-o" not in argv and argv[0] == "decode" else argv, capsys)
    assert rc == code, err
    assert "Traceback" not in err
    if code == 1:
        lines = [line for line in err.splitlines() if line.startswith("flashseg: error:")]
        assert len(lines) == 1, err
        assert len([line for line in err.splitlines() if "WARNING" not in line]) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    after = set(os.listdir(ws))
    assert after - before <= {"g.fa.fai"}, after - before  # no output, no temporaries


def test_no_valid_segmentation(ws, capsys, monkeypatch):
    """A bin that every label forbids: the real core's NoValidSegmentation names the contig."""

    monkeypatch.undo()
    monkeypatch.chdir(ws)
    x = np.zeros((30, 2))
    x[12] = -np.inf
    write_tracks("t.h5", {"chr1": 30}, values={"chr1": x})
    rc, out, err = run_main(D + ["-o", "out.bed", "--stats", "s.tsv"], capsys)
    assert rc == 1, err
    assert "contig chr1" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists("out.bed") and not os.path.exists("s.tsv")
    assert not [n for n in os.listdir(ws) if n.endswith(".tmp")]
