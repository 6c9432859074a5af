"""flashseg gather of posterior-samples files (BED4+1, ordered by contig, sample, position)."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_helpers import run_main
from flashseg.cli import cli

DEMO_MODEL = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "demo.yaml")
CONTIGS = {"chrA": 20000, "chrB": 9000, "chrC": 1030}  # 100, 45, 6 bins of 200 bp
SAMPLES_HEADER = "#chrom\tstart\tend\tname\tsample"


def invoke(argv, code=0):
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    invoke(["simulate", "-m", DEMO_MODEL, "--seed", "2", "-o", str(d)]
           + sum((["--contig", f"{n}:{L}"] for n, L in CONTIGS.items()), []))
    return d


def decode_samples(sim, samples_out, *extra):
    invoke(["decode", "-m", str(sim / "model.yaml"), "-t", str(sim / "tracks.h5"), "--fasta", str(sim / "genome.fa"),
            "-o", str(samples_out) + ".calls.bed", "--samples", "3", "--samples-out", str(samples_out),
            "--seed", "11", *extra])


def body(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [line.rstrip("\n") for line in handle if not line.startswith("##")]


def is_bgzf(path):
    with open(path, "rb") as handle:
        head = handle.read(16)
    # gzip magic, FEXTRA flag, and the BGZF "BC" extra subfield (SAM spec 4.1)
    return head[:2] == b"\x1f\x8b" and head[3] & 4 and head[12:14] == b"BC"


def test_per_contig_samples_gathered_equal_whole_genome_samples(sim, tmp_path):
    whole = tmp_path / "whole.samples.bed"
    decode_samples(sim, whole)
    parts = []
    for name in reversed(list(CONTIGS)):  # given out of FASTA order
        part = tmp_path / f"{name}.samples.bed"
        decode_samples(sim, part, "--contig", name)
        parts.append(str(part))
    plain, packed = tmp_path / "all.samples.bed", tmp_path / "all.samples.bed.gz"
    stale_index = Path(str(packed) + ".tbi")
    stale_index.write_text("left by an earlier run")
    for target in (plain, packed):
        invoke(["gather", *parts, "--fasta", str(sim / "genome.fa"), "-o", str(target)])
    expected = body(whole)
    assert expected[0] == SAMPLES_HEADER and len(expected) > 1 + 3 * len(CONTIGS)
    assert body(plain) == expected and body(packed) == expected
    # one header, and every contig restarts at position 0 for each of its samples
    assert sum(line.startswith("#") for line in body(plain)) == 1
    rows = [line.split("\t") for line in expected[1:]]
    assert list(dict.fromkeys(r[0] for r in rows)) == list(CONTIGS)
    assert sorted((r[0], r[4]) for r in rows if r[1] == "0") == sorted((c, str(k)) for c in CONTIGS for k in range(3))
    assert is_bgzf(packed) and not stale_index.exists()
    text = open(plain).read()
    assert text.count("##flashseg command=") == 1  # the per-contig decode commands are replaced


def test_decode_samples_out_gz_is_bgzf_without_index(sim, tmp_path):
    packed, plain = tmp_path / "s.bed.gz", tmp_path / "s.bed"
    decode_samples(sim, packed)
    decode_samples(sim, plain)
    assert is_bgzf(packed) and not Path(str(packed) + ".tbi").exists()
    assert body(packed) == body(plain)


def write(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_file_order_within_a_contig_is_kept(tmp_path):
    a = write(tmp_path / "a.bed", "##flashseg seed=4", SAMPLES_HEADER,
              "a\t0\t10\tx\t0", "a\t10\t20\ty\t0", "a\t0\t20\tx\t1", "a\t0\t5\ty\t2", "a\t5\t20\tx\t2")
    b = write(tmp_path / "b.bed", "##flashseg seed=4", SAMPLES_HEADER, "b\t0\t7\tx\t0", "b\t0\t7\ty\t1")
    fasta = write(tmp_path / "g.fa", ">b", "A" * 7, ">a", "A" * 20)
    out = tmp_path / "o.bed"
    invoke(["gather", a, b, "--fasta", fasta, "-o", str(out)])
    lines = open(out).read().splitlines()
    assert lines[0] == "##flashseg seed=4" and lines[1].startswith("##flashseg command=")
    assert lines[2:] == [SAMPLES_HEADER, "b\t0\t7\tx\t0", "b\t0\t7\ty\t1",
                         "a\t0\t10\tx\t0", "a\t10\t20\ty\t0", "a\t0\t20\tx\t1", "a\t0\t5\ty\t2", "a\t5\t20\tx\t2"]


@pytest.mark.parametrize("rows, message", [
    (["a\t0\t20\tx\t1", "a\t0\t20\tx\t0"], "line 3: not sorted by sample, then start"),
    (["a\t10\t20\tx\t0", "a\t0\t10\tx\t0"], "line 3: not sorted by sample, then start"),
    (["a\t0\t20\tx\tzero"], "line 2: no integer sample number in column 5"),
    (["a\t0\t20\tx"], "line 2: no integer sample number in column 5"),
])
def test_bad_samples_files_are_one_line_errors(tmp_path, capsys, rows, message):
    a = write(tmp_path / "a.bed", SAMPLES_HEADER, *rows)
    rc, _, err = run_main(["gather", a, "-o", str(tmp_path / "o.bed.gz")], capsys)
    assert rc == 1 and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("o.bed*")) and not list(tmp_path.glob(".o.bed*"))


def test_calls_still_need_position_order_and_get_an_index(tmp_path, capsys):
    header = "#chrom\tstart\tend\tname"
    a = write(tmp_path / "a.bed", header, "a\t10\t20\tx", "a\t0\t10\tx")
    rc, _, err = run_main(["gather", a, "-o", str(tmp_path / "o.bed")], capsys)
    assert rc == 1 and "line 3: not sorted by start" in err
    write(tmp_path / "a.bed", header, "a\t0\t10\tx", "a\t10\t20\tx")
    invoke(["gather", a, "-o", str(tmp_path / "o.bed.gz")])
    assert (tmp_path / "o.bed.gz.tbi").exists()


def test_samples_and_calls_do_not_mix(tmp_path, capsys):
    a = write(tmp_path / "a.bed", SAMPLES_HEADER, "a\t0\t20\tx\t0")
    b = write(tmp_path / "b.bed", "#chrom\tstart\tend\tname", "b\t0\t20\tx")
    rc, _, err = run_main(["gather", a, b, "-o", str(tmp_path / "o.bed")], capsys)
    assert rc == 1 and "column header differs" in err


def test_help_says_what_a_gz_target_gets():
    text = " ".join(invoke(["gather", "--help"]).output.split())
    assert "BGZF without an index" in text and "tabix" in text
