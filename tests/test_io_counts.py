"""`flashseg tracks counts`: reads per bin of each BAM as a count observations file."""
from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest

from bam_helpers import random_reads, reference_counts, write_bam
from cli_helpers import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "data", "tiny-workflow")
MODEL = os.path.join(ROOT, "configs", "models", "copy-number.yaml")      # bin_size 1000, a coverage section
CONTIGS = [("chrT1", 400_000), ("chrT2", 249_500)]
BS = 1000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("counts")
    for name in ("genome.fa", "reads.bam", "reads.bam.bai"):
        shutil.copy(os.path.join(TINY, name), d / name)
    rng = np.random.default_rng(7)
    write_bam(d / "paired.bam", CONTIGS, random_reads(rng, CONTIGS, 3000, paired=True))
    return d


def observations(path):
    with h5py.File(path) as f:
        attrs = dict(f.attrs)
        rows = {name: f["observations"][name][:] for name in f["observations"]}
        lengths = {name: int(f["observations"][name].attrs["length"]) for name in f["observations"]}
    return attrs, rows, lengths


def names(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def coverage_raw(data, tmp_path, bam, options, capsys):
    out = tmp_path / f"cov-{bam}.h5"
    code, _, err = run_main(["tracks", "coverage", "--bam", str(data / bam), "--fasta", str(data / "genome.fa"),
                             "-m", MODEL, "--bin-size", str(BS), "-o", str(out), "--raw", "--threads", "1",
                             "--depth", "40"] + options, capsys)
    assert code == 0, err
    with h5py.File(out) as f:
        return {name: f["depth"][name][:] for name, _ in CONTIGS}


@pytest.mark.parametrize("bam, options", [
    ("reads.bam", []),
    ("reads.bam", ["--min-mapq", "0"]),
    ("paired.bam", ["--min-mapq", "5"]),
    ("paired.bam", ["--fragments", "--max-fragment", "500"]),
])
def test_counts_equal_coverage_raw(data, tmp_path, capsys, bam, options):
    out = tmp_path / "obs.h5"
    code, _, err = run_main(["tracks", "counts", "--bam", str(data / bam), "--fasta", str(data / "genome.fa"),
                             "--bin-size", str(BS), "-o", str(out), "--threads", "1"] + options, capsys)
    assert code == 0, err
    attrs, rows, lengths = observations(out)
    assert attrs["format"] == "flashseg.observations" and attrs["kind"] == "count"
    assert names(attrs["features"]) == [bam[:-4]] and names(attrs["contigs"]) == ["chrT1", "chrT2"]
    assert lengths == dict(CONTIGS) and attrs["bin_size"] == BS
    raw = coverage_raw(data, tmp_path, bam, options, capsys)
    for name, length in CONTIGS:
        assert rows[name].dtype == np.int32 and rows[name].shape == (-(-length // BS), 1)
        np.testing.assert_array_equal(rows[name][:, 0], raw[name])
    assert sum(int(r.sum()) for r in rows.values()) > 0


def test_two_bams_names_and_blacklist(data, tmp_path, capsys):
    black = tmp_path / "black.bed"
    black.write_text("chrT1\t1500\t3001\nchrT2\t249000\t249500\n")
    out = tmp_path / "two.h5"
    code, _, err = run_main(["tracks", "counts", "--bam", str(data / "paired.bam"), "--bam", str(data / "reads.bam"),
                             "--name", "input", "--name", "chip", "--fasta", str(data / "genome.fa"),
                             "--bin-size", str(BS), "-o", str(out), "--blacklist", str(black), "--min-mapq", "0",
                             "--threads", "2"], capsys)
    assert code == 0, err
    attrs, rows, _ = observations(out)
    assert names(attrs["features"]) == ["input", "chip"]
    expected = [reference_counts(data / b, CONTIGS, BS, min_mapq=0) for b in ("paired.bam", "reads.bam")]
    masked = {"chrT1": [1, 2, 3], "chrT2": [249]}
    for name, _ in CONTIGS:
        for j in range(2):
            want = expected[j][name].copy()
            want[masked[name]] = -1
            np.testing.assert_array_equal(rows[name][:, j], want)
    from flashseg.io.observations import open_observations

    with open_observations(out) as f:
        x = f.read("chrT1", 0, 5)
        assert np.isnan(x[1:4]).all() and not np.isnan(x[[0, 4]]).any()


@pytest.mark.parametrize("argv, what", [
    (["--bam", "{d}/reads.bam", "--bam", "{d}/reads.bam"], "reads is given twice"),
    (["--bam", "{d}/reads.bam", "--bam", "{d}/paired.bam", "--name", "a", "--name", "a"], "a is given twice"),
    (["--bam", "{d}/reads.bam", "--bam", "{d}/paired.bam", "--name", "a"], "one --name per --bam"),
])
def test_usage_errors(data, tmp_path, capsys, argv, what):
    out = tmp_path / "x.h5"
    code, _, err = run_main(["tracks", "counts"] + [a.format(d=data) for a in argv]
                            + ["--fasta", str(data / "genome.fa"), "--bin-size", "100", "-o", str(out)], capsys)
    assert code == 2 and what in err and not out.exists()


def test_bam_of_another_assembly_is_one_line(data, tmp_path, capsys):
    other = write_bam(tmp_path / "other.bam", [("chrT1", 400_000), ("chrT2", 249_999)],
                      [{"contig": "chrT1", "pos": 10}])
    out = tmp_path / "x.h5"
    code, _, err = run_main(["tracks", "counts", "--bam", str(data / "reads.bam"), "--bam", other,
                             "--fasta", str(data / "genome.fa"), "--bin-size", "100", "-o", str(out)], capsys)
    assert code == 1 and err.count("\n") == 1 and "other.bam" in err and "chrT2" in err
    assert not out.exists()


def test_output_may_not_overwrite_an_input(data, tmp_path, capsys):
    code, _, err = run_main(["tracks", "counts", "--bam", str(data / "reads.bam"), "--fasta", str(data / "genome.fa"),
                             "--bin-size", "100", "-o", str(data / "reads.bam")], capsys)
    assert code == 2 and "overwrite" in err
