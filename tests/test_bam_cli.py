"""`flashseg tracks coverage` end to end on the tiny bundled genome."""
from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from scipy import stats

from bam_helpers import reference_counts, write_bam
from flashseg.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "data", "tiny-workflow")
MODEL = os.path.join(ROOT, "configs", "models", "copy-number.yaml")
CONTIGS = [("chrT1", 400_000), ("chrT2", 249_500)]


@pytest.fixture()
def tiny(tmp_path):
    for name in ("genome.fa", "reads.bam", "reads.bam.bai"):
        shutil.copy(os.path.join(TINY, name), tmp_path / name)
    return tmp_path


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def expected_scores(bam, depth, mask=None):
    """NB log-pmf from scipy around mean * depth * (bin bp / 1000), per the model file."""
    means = np.array([0.05, 0.5, 1.0, 1.5, 2.0])
    r = 1 / 0.01
    counts = reference_counts(bam, CONTIGS, 1000)
    out = {}
    for name, length in CONTIGS:
        k = counts[name]
        exposure = np.minimum(1000, length - np.arange(k.size) * 1000) / 1000
        mu = means[None, :] * depth * exposure[:, None]
        out[name] = stats.nbinom.logpmf(k[:, None], r, r / (r + mu))
        if mask is not None and name in mask:
            out[name][mask[name]] = 0
    return out, counts


def test_coverage_tracks_match_scipy(tiny, capsys):
    out_path = tiny / "cov.h5"
    code, out, err = run(["tracks", "coverage", "--bam", str(tiny / "reads.bam"), "--fasta", str(tiny / "genome.fa"),
                          "-m", MODEL, "-o", str(out_path), "--raw", "--threads", "2", "--dtype", "float64"], capsys)
    assert code == 0, err
    expected, counts = expected_scores(tiny / "reads.bam", 40.0)
    with h5py.File(out_path) as f:
        assert f.attrs["format"] == "flashseg.tracks" and f.attrs["bin_size"] == 1000
        assert list(f.attrs["labels"]) == ["del-hom", "del-het", "neutral", "dup", "amp"]
        assert list(f.attrs["contigs"]) == ["chrT1", "chrT2"]
        for name, length in CONTIGS:
            assert f["tracks"][name].attrs["length"] == length
            np.testing.assert_allclose(f["tracks"][name][:], expected[name], rtol=1e-9, atol=1e-9)
            assert f["depth"][name].dtype == np.int32
            np.testing.assert_array_equal(f["depth"][name][:], counts[name])
    # the median of the simulated copy-ratio-1 bins (40 reads per bin)
    full = np.concatenate([counts["chrT1"], counts["chrT2"][:-1]])
    assert np.median(full[full > 0]) == 40.0
    assert [p.name for p in tiny.iterdir() if p.name.startswith(".")] == []


def test_depth_option_blacklist_and_default_float32(tiny, capsys):
    black = tiny / "black.bed"
    black.write_text("chrT1\t5500\t7001\n")
    out_path = tiny / "cov.h5"
    code, _, err = run(["tracks", "coverage", "--bam", str(tiny / "reads.bam"), "-m", MODEL, "-o", str(out_path),
                        "--depth", "35", "--blacklist", str(black), "--threads", "1"], capsys)
    assert code == 0, err
    mask = {"chrT1": np.zeros(400, bool)}
    mask["chrT1"][5:8] = True
    expected, _ = expected_scores(tiny / "reads.bam", 35.0, mask)
    with h5py.File(out_path) as f:
        assert "depth" not in f
        data = f["tracks"]["chrT1"][:]
        assert data.dtype == np.float32
        np.testing.assert_allclose(data, expected["chrT1"], rtol=1e-6, atol=1e-4)
        assert np.all(data[5:8] == 0) and np.all(data[4] != 0) and np.all(data[8] != 0)


def test_errors_are_one_line(tiny, capsys):
    os.unlink(tiny / "reads.bam.bai")
    code, out, err = run(["tracks", "coverage", "--bam", str(tiny / "reads.bam"), "-m", MODEL,
                          "-o", str(tiny / "c.h5")], capsys)
    assert code == 1 and err.count("\n") == 1 and "samtools index" in err and "Traceback" not in err
    assert not (tiny / "c.h5").exists()

    renamed = write_bam(tiny / "nochr.bam", [("T1", 400_000), ("T2", 249_500)], [{"contig": "T1", "pos": 5}])
    code, _, err = run(["tracks", "coverage", "--bam", renamed, "--fasta", str(tiny / "genome.fa"), "-m", MODEL,
                        "-o", str(tiny / "c.h5")], capsys)
    assert code == 1 and "chr" in err and "prefix" in err and err.count("\n") == 1

    code, _, err = run(["tracks", "coverage", "--bam", str(tiny / "x.cram"), "-m", MODEL, "-o", "c.h5"], capsys)
    assert code == 2  # missing input: click's usage error
    (tiny / "x.cram").write_bytes(b"")
    code, _, err = run(["tracks", "coverage", "--bam", str(tiny / "x.cram"), "-m", MODEL, "-o", "c.h5"], capsys)
    assert code == 2 and "--fasta" in err


def test_model_without_coverage_section(tiny, capsys):
    model = os.path.join(ROOT, "configs", "models", "demo.yaml")
    code, _, err = run(["tracks", "coverage", "--bam", str(tiny / "reads.bam"), "-m", model,
                        "-o", str(tiny / "c.h5")], capsys)
    assert code == 1 and "coverage section" in err


def _calls(path):
    return [line for line in open(path) if not line.startswith("##")]


def test_decode_bam_per_contig_equals_whole_genome(tiny, capsys):
    base = ["decode", "-m", MODEL, "--bam", str(tiny / "reads.bam"), "--fasta", str(tiny / "genome.fa"),
            "--device", "cpu", "--threads", "1"]
    code, _, err = run(base + ["-o", str(tiny / "all.bed")], capsys)
    assert code == 0, err
    code, _, err = run(base + ["--contig", "chrT2", "-o", str(tiny / "t2.bed")], capsys)
    assert code == 0, err
    whole = _calls(tiny / "all.bed")
    assert _calls(tiny / "t2.bed") == [whole[0]] + [line for line in whole if line.startswith("chrT2\t")]
    assert {line.split("\t")[3] for line in whole[1:]} >= {"del-hom", "del-het", "dup", "amp"}


def test_decode_bam_adds_to_tracks(tiny, capsys):
    """Coverage tracks (float64) + --bam on the same reads == those tracks at weight 2."""
    cov = tiny / "cov.h5"
    code, _, err = run(["tracks", "coverage", "--bam", str(tiny / "reads.bam"), "--fasta", str(tiny / "genome.fa"),
                        "-m", MODEL, "-o", str(cov), "--dtype", "float64"], capsys)
    assert code == 0, err
    base = ["decode", "-m", MODEL, "--fasta", str(tiny / "genome.fa"), "--device", "cpu", "--threads", "1"]
    code, _, err = run(base + ["-t", str(cov), "--bam", str(tiny / "reads.bam"), "-o", str(tiny / "sum.bed")], capsys)
    assert code == 0, err
    code, _, err = run(base + ["-t", f"{cov}:2", "-o", str(tiny / "double.bed")], capsys)
    assert code == 0, err
    assert _calls(tiny / "sum.bed") == _calls(tiny / "double.bed")
    code, _, err = run(base + ["-t", str(cov), "-o", str(tiny / "single.bed")], capsys)
    assert _calls(tiny / "single.bed") != _calls(tiny / "sum.bed")  # the reads did count
