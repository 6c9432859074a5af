"""decode --bam takes the read options of `tracks coverage` and masks N gaps in the coverage scores.

The reference is the two-step route: `tracks coverage` with the same read
options (float64, so no rounding) followed by `decode -t`. Both must give
byte-identical calls; before --bam honoured these options (or --gap-min)
they differed.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from bam_helpers import write_bam
from cli_helpers import run_main, write_fasta
from flashseg.io.reads import FLAG_DUPLICATE, FLAG_PAIRED, FLAG_PROPER_PAIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "configs", "models", "copy-number.yaml")  # 1 kb bins
CONTIGS = {"c1": 120_000, "c2": 50_500}
GAP = (60_000, 70_000)          # N in the FASTA, yet reads land there (mismapped) at 3x
LOW_MAPQ = (95_000, 105_000)    # extra MAPQ-5 reads: looks amplified only with --min-mapq below 5
DUP = (80_000, 90_000)          # 1.5x, the region the blacklist covers
PER_KB = 40                     # reads per kb at copy ratio 1


DEL_HET = ("c1", 40_000, 55_000)   # half the reads
DEL_HOM = ("c2", 10_000, 20_000)   # 3% of the reads
MAPQ_25 = ("c2", 30_000, 50_000)   # half the reads have MAPQ 25: a deletion only under --min-mapq 30


def inside(read, region):
    contig, start, end = region
    return read["contig"] == contig and start <= read["pos"] < end


def reads_for(rng):
    def place(contig, start, end, per_kb, **extra):
        n = rng.poisson(per_kb * (end - start) / 1000)
        return [{"contig": contig, "pos": int(p), **extra} for p in rng.integers(start, end - 400, n)]

    reads = []
    for name, length in CONTIGS.items():
        reads += place(name, 0, length, PER_KB)
    reads = [r for r in reads if not (inside(r, DEL_HET) and rng.random() < 0.5)
             and not (inside(r, DEL_HOM) and rng.random() < 0.97)]
    reads += place("c1", *DUP, PER_KB / 2)
    reads += place("c1", *GAP, 2 * PER_KB)
    reads += place("c1", *LOW_MAPQ, PER_KB, mapq=5)
    for read in reads:
        read.setdefault("mapq", 25 if inside(read, MAPQ_25) and rng.random() < 0.5 else 60)
        read["flag"] = FLAG_PAIRED | FLAG_PROPER_PAIR | (FLAG_DUPLICATE if rng.random() < 0.05 else 0)
        read["tlen"] = int(rng.choice([300, 350, 700]))  # the leftmost mate of each fragment
    return reads


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bamopts")
    write_fasta(d / "g.fa", CONTIGS, n_runs={"c1": [GAP]})
    write_bam(d / "r.bam", list(CONTIGS.items()), reads_for(np.random.default_rng(7)))
    (d / "black.bed").write_text(f"c1\t{DUP[0] + 300}\t{DUP[1] - 300}\n")
    return d


def run_ok(argv, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    return out


def calls(path):
    return [line for line in open(path) if not line.startswith("##")]


def decode_argv(data, *extra):
    return ["decode", "-m", MODEL, "--fasta", str(data / "g.fa"), "--device", "cpu", "--threads", "1", *extra]


def two_step(data, tmp_path, read_opts, decode_opts, capsys):
    cov, out = tmp_path / "cov.h5", tmp_path / "two-step.bed"
    run_ok(["tracks", "coverage", "--bam", str(data / "r.bam"), "--fasta", str(data / "g.fa"), "-m", MODEL,
            "-o", str(cov), "--dtype", "float64", "--threads", "1", *read_opts], capsys)
    run_ok(decode_argv(data, "-t", str(cov), "-o", str(out), *decode_opts), capsys)
    return calls(out)


def on_the_fly(data, tmp_path, read_opts, decode_opts, capsys):
    out = tmp_path / "bam.bed"
    run_ok(decode_argv(data, "--bam", str(data / "r.bam"), "-o", str(out), *read_opts, *decode_opts), capsys)
    return calls(out)


def region_labels(rows, contig, start, end):
    return {r.split("\t")[3] for r in rows[1:] if r.startswith(contig + "\t")
            and int(r.split("\t")[1]) < end and int(r.split("\t")[2]) > start}


@pytest.mark.parametrize("read_opts", [
    [],
    ["--min-mapq", "30", "--blacklist", "BLACK"],
    ["--min-mapq", "0", "--fragments", "--max-fragment", "500"],
    ["--depth", "9.5", "--blacklist", "BLACK"],
], ids=["defaults", "mapq-blacklist", "fragments", "depth"])
@pytest.mark.parametrize("decode_opts", [[], ["--gap-min", "5000", "--method", "posterior"]], ids=["", "gaps"])
def test_decode_bam_equals_tracks_coverage_then_decode(data, tmp_path, capsys, read_opts, decode_opts):
    read_opts = [str(data / "black.bed") if o == "BLACK" else o for o in read_opts]
    expected = two_step(data, tmp_path, read_opts, decode_opts, capsys)
    assert len(expected) > 3
    assert on_the_fly(data, tmp_path, read_opts, decode_opts, capsys) == expected


def test_read_options_and_gaps_change_the_calls(data, tmp_path, capsys):
    """The cases above are not vacuous: each option changes what is called where it should."""
    def bam_calls(*opts):
        return on_the_fly(data, tmp_path, list(opts), [], capsys)

    default = bam_calls()
    assert "amp" in region_labels(default, "c1", *GAP)             # mismapped reads in the N gap
    assert region_labels(default, "c1", *LOW_MAPQ) == {"neutral"}  # MAPQ 5 < 20: dropped
    assert "dup" in region_labels(default, "c1", *DUP)

    assert "del-het" in region_labels(default, *DEL_HET)
    assert "del-hom" in region_labels(default, *DEL_HOM)
    assert region_labels(default, *MAPQ_25) == {"neutral"}

    assert region_labels(bam_calls("--gap-min", "5000"), "c1", *GAP) == {"neutral"}
    assert "amp" in region_labels(bam_calls("--min-mapq", "0"), "c1", *LOW_MAPQ)
    assert "del-het" in region_labels(bam_calls("--min-mapq", "30"), *MAPQ_25)
    assert region_labels(bam_calls("--blacklist", str(data / "black.bed")), "c1", *DUP) == {"neutral"}


def test_read_options_need_bam(data, capsys):
    tracks = str(data / "r.bam")  # any existing file: the check comes before anything is read
    for opts, named in ((["--min-mapq", "5"], "--min-mapq"), (["--fragments"], "--fragments"),
                        (["--blacklist", str(data / "black.bed")], "--blacklist"), (["--depth", "3"], "--depth")):
        code, _, err = run_main(decode_argv(data, "-t", tracks, *opts), capsys)
        assert code == 2 and f"{named} only works with --bam" in err
    code, _, err = run_main(decode_argv(data, "--bam", str(data / "r.bam"), "--blacklist", "missing.bed"), capsys)
    assert code == 2 and "missing.bed" in err


def test_both_commands_document_the_same_read_options(capsys):
    from click.testing import CliRunner

    from flashseg.cli import cli

    texts = [" ".join(CliRunner().invoke(cli, argv).output.split())
             for argv in (["decode", "--help"], ["tracks", "coverage", "--help"])]
    for text in texts:
        for option in ("--min-mapq INTEGER RANGE Drop reads with a lower mapping quality. [default: 20",
                       "--fragments Count properly paired fragments at their midpoints",
                       "--blacklist FILE BED of regions to ignore"):
            assert option in text
