"""bigBed calls and bigWig posteriors (docs/formats.md, "bigBed and bigWig outputs").

Every binary file is read back through pybigtools and compared with the
text output a run with the same options writes: the bigBed's fields are
the BED's text exactly; a bigWig value is the bedGraph's printed value
rounded to float32 (what bigWig stores), compared exactly after that
rounding.
"""
from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pybigtools = pytest.importorskip("pybigtools")

from cli_helpers import (disk_full_after_first_contig, run_main, stand_in_workspace, write_fasta,  # noqa: E402
                         write_model, write_tracks)
from flashseg.io import bigfiles, output  # noqa: E402

DEMO_MODEL = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "demo.yaml")
# Not in name order (chrB before chrA before chr10); chrS has one bin: no bedGraph line at all.
CONTIGS = {"chrB": 30000, "chrA": 46000, "chr10": 9030, "chrS": 150}


# -- reading back ------------------------------------------------------------------------

def reader_of(path):
    """pybigtools' reader of a file (a file object: pybigtools tells the kind by a lower-case name only)."""
    return pybigtools.open(open(path, "rb"))


def bed_rows(path):
    return [tuple(line.rstrip("\n").split("\t")) for line in open(path) if not line.startswith("#")]


def bigbed_rows(path):
    with reader_of(path) as reader:
        return [(chrom, str(rec[0]), str(rec[1]), *rec[2:]) for chrom in reader.chroms()
                for rec in reader.records(chrom)]


def bedgraph_rows(path):
    """(chrom, start, end, value as float32) of a bedGraph."""
    rows = []
    for line in open(path):
        chrom, start, end, value = line.rstrip("\n").split("\t")
        rows.append((chrom, int(start), int(end), float(np.float32(float(value)))))
    return rows


def bigwig_rows(path):
    with reader_of(path) as reader:
        return [(chrom, start, end, value) for chrom in reader.chroms()
                for start, end, value in reader.records(chrom)]


def chroms(path) -> dict:
    with reader_of(path) as reader:
        return dict(reader.chroms())


def field_counts(path):
    with open(path, "rb") as handle:
        return struct.unpack("<HH", handle.read(36)[32:36])


def autosql_of(path) -> str:
    with reader_of(path) as reader:
        return reader.sql()


def leftovers(directory):
    return [name for name in os.listdir(directory) if ".tmp" in name]


# -- a simulated genome, decoded by the real core ---------------------------------------------

@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    code = subprocess.run([sys.executable, "-m", "flashseg", "simulate", "-m", DEMO_MODEL, "--seed", "3", "-o", str(d)]
                          + sum((["--contig", f"{n}:{L}"] for n, L in CONTIGS.items()), []),
                          capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr
    return d


def decode(sim, capsys, *args, fasta=True, expect=0):
    argv = ["decode", "-m", str(sim / "model.yaml"), "-t", str(sim / "tracks.h5"), "--threads", "1", *args]
    if fasta:
        argv += ["--fasta", str(sim / "genome.fa")]
    code, out, err = run_main(argv, capsys)
    assert code == expect, err
    return err


def test_bigbed_and_bigwig_hold_exactly_what_the_text_outputs_hold(sim, tmp_path, capsys):
    t = tmp_path
    decode(sim, capsys, "-o", str(t / "calls.bed"), "--changes", str(t / "chg.bw"), "--boundaries", str(t / "b.bg"))
    decode(sim, capsys, "-o", str(t / "calls.bb"), "--changes", str(t / "chg.bg"), "--boundaries", str(t / "b.bw"))
    rows = bed_rows(t / "calls.bed")
    assert len(rows) > 20 and bigbed_rows(t / "calls.bb") == rows
    for text, big in (("chg.bg", "chg.bw"), ("b.bg", "b.bw")):
        values = bedgraph_rows(t / text)
        assert len(values) > 20 and bigwig_rows(t / big) == values
        # the --min-posterior omissions are the bedGraph's: some bins are missing
        assert any(a[2] < b[1] for a, b in zip(values, values[1:]) if a[0] == b[0])
    # contigs in FASTA order (not sorted by name), sizes from the FASTA; chrS has a segment, no bedGraph line
    assert list(chroms(t / "calls.bb").items()) == list(CONTIGS.items())
    assert list(chroms(t / "chg.bw").items()) == [(n, L) for n, L in CONTIGS.items() if n != "chrS"]
    assert field_counts(t / "calls.bb") == (13, 9)
    assert not leftovers(t)


def test_the_bigbed_carries_the_provenance_in_its_autosql(sim, tmp_path, capsys):
    decode(sim, capsys, "-o", str(tmp_path / "calls.bed"))
    decode(sim, capsys, "-o", str(tmp_path / "calls.bb"))
    sql = autosql_of(tmp_path / "calls.bb")
    assert sql.startswith("table flashsegSegments") and "float  label_post;" in sql
    lines = bigfiles.provenance_from_autosql(sql)
    text = [line.rstrip("\n") for line in open(tmp_path / "calls.bed") if line.startswith("##")]
    assert lines == text and len(lines) == 4 and lines[0].startswith("##flashseg version=")
    assert lines[3].startswith("##flashseg command=")


def test_provenance_with_quotes_and_separators_reads_back_exactly():
    lines = ['##flashseg version=1', '##flashseg command=flashseg decode -o \'a "b"; 100%\' --x \\y\tz']
    sql = bigfiles.autosql(lines)
    comment = sql.split('"')[1]
    assert '"' not in comment.replace("%22", "") and "\t" not in comment
    assert bigfiles.provenance_from_autosql(sql) == lines


def test_region_and_contig_subsets(sim, tmp_path, capsys):
    for args in (["--region", "chrA:10001-20000"], ["--contig", "chr10", "--contig", "chrB"]):
        decode(sim, capsys, "-o", str(tmp_path / "c.bed"), "--changes", str(tmp_path / "c.bg"), *args)
        decode(sim, capsys, "-o", str(tmp_path / "c.bb"), "--changes", str(tmp_path / "c.bw"), *args)
        assert bigbed_rows(tmp_path / "c.bb") == bed_rows(tmp_path / "c.bed")
        assert bigwig_rows(tmp_path / "c.bw") == bedgraph_rows(tmp_path / "c.bg")
        names = ["chrA"] if args[0] == "--region" else ["chrB", "chr10"]     # FASTA order, not the options'
        assert list(chroms(tmp_path / "c.bb")) == names


def test_extensions_are_told_apart_without_case(sim, tmp_path, capsys):
    decode(sim, capsys, "-o", str(tmp_path / "CALLS.BigBed"), "--changes", str(tmp_path / "c.BW"))
    assert bigbed_rows(tmp_path / "CALLS.BigBed")
    assert bigwig_rows(tmp_path / "c.BW")
    decode(sim, capsys, "-o", str(tmp_path / "calls.bb.gz"))     # .gz: BGZF text, as before
    with open(tmp_path / "calls.bb.gz", "rb") as handle:
        assert handle.read(2) == b"\x1f\x8b"


# -- contig sizes ------------------------------------------------------------------------------

def test_contig_sizes_from_fasta_then_length_attributes_then_bins(tmp_path, monkeypatch, capsys):
    ws = stand_in_workspace(tmp_path, monkeypatch)       # t.h5: chr1 30 bins, chr2 7 (no length attributes)
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", "g.fa", "-o", "f.bb"], capsys)
    assert code == 0 and "bins x bin size" not in err, err
    assert chroms(ws / "f.bb") == {"chr1": 295, "chr2": 70}
    write_tracks("l.h5", {"chr1": 30, "chr2": 7}, lengths={"chr1": 291, "chr2": 65})
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "l.h5", "-o", "l.bb"], capsys)
    assert code == 0 and "bins x bin size" not in err, err
    assert chroms(ws / "l.bb") == {"chr1": 291, "chr2": 65}
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "-o", "n.bb", "--changes", "n.bw"], capsys)
    assert code == 0, err
    assert "WARNING" in err and "bins x bin size" in err and "chr1, chr2" in err
    assert chroms(ws / "n.bb") == {"chr1": 300, "chr2": 70}
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "-o", "n.bed"], capsys)
    assert code == 0 and "bins x bin size" not in err, "text outputs need no sizes: no warning"


# -- empty files and empty contigs ---------------------------------------------------------------

def test_outputs_without_any_line_are_valid_empty_files(tmp_path, monkeypatch, capsys):
    ws = stand_in_workspace(tmp_path, monkeypatch)
    # the stand-in's change posterior is below 1 everywhere: no bedGraph line
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", "g.fa", "-o", "c.bb",
                             "--changes", "e.bw", "--boundaries", "e.bg", "--min-posterior", "1"], capsys)
    assert code == 0, err
    assert open(ws / "e.bg").read() == ""
    assert chroms(ws / "e.bw") == {} and bigwig_rows(ws / "e.bw") == []
    with reader_of(ws / "e.bw") as reader:
        assert reader.info()["summary"]["basesCovered"] == 0
    path = str(ws / "empty.bb")
    bigfiles.write_bigbed(path, iter(()), {"chr1": 100}, target=path, provenance=["##flashseg version=9"])
    assert chroms(path) == {} and field_counts(path) == (13, 9)
    assert bigfiles.provenance_from_autosql(autosql_of(path)) == ["##flashseg version=9"]


def test_a_fasta_contig_without_tracks_is_not_listed(tmp_path, monkeypatch, capsys):
    ws = stand_in_workspace(tmp_path, monkeypatch)
    write_fasta("g3.fa", {"chr0": 50, "chr1": 295, "chrX": 40, "chr2": 70})
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", "g3.fa", "-o", "c.bb",
                             "--stats", "s.tsv"], capsys)
    assert code == 0, err
    assert chroms(ws / "c.bb") == {"chr1": 295, "chr2": 70}
    assert "skipped" in open(ws / "s.tsv").read()


# -- what cannot be a browser file ---------------------------------------------------------------

BASE = ["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", "g.fa"]


@pytest.mark.parametrize("extra,says", [
    (["-o", "x.bw"], "-o/--output writes a bigBed"),
    (["--changes", "x.bb"], "--changes writes a bigWig"),
    (["--boundaries", "x.bigbed"], "--boundaries writes a bigWig"),
    (["--stats", "x.bb"], "not this output"),
    (["--samples", "2", "--samples-out", "x.bb"], "samples restart"),
    (["--posteriors", "x.bw"], "flashseg tracks bigwig"),
    (["-o", "fifo.bb"], "FIFO"),
])
def test_a_browser_file_where_none_can_go_is_a_usage_error(tmp_path, monkeypatch, capsys, extra, says):
    ws = stand_in_workspace(tmp_path, monkeypatch)
    os.mkfifo("fifo.bb")
    listing = set(os.listdir(ws))
    code, _, err = run_main(BASE + extra, capsys)
    assert code == 2 and err.startswith("flashseg: error: ") and err.count("\n") == 1, err
    assert says in err
    assert set(os.listdir(ws)) == listing
    assert stat.S_ISFIFO(os.stat("fifo.bb").st_mode)


def test_a_browser_file_never_replaces_an_input(tmp_path, monkeypatch, capsys):
    ws = stand_in_workspace(tmp_path, monkeypatch)
    os.symlink("g.fa", "genome.bw")
    before = open("g.fa").read()
    code, _, err = run_main(BASE + ["-o", "c.bb", "--changes", "genome.bw"], capsys)
    assert code == 2 and "would overwrite the input" in err, err
    assert open("g.fa").read() == before and not os.path.exists(ws / "c.bb")
    code, _, err = run_main(["gather", "g.fa", "-o", "genome.bw"], capsys)
    assert code == 2 and "would overwrite the input" in err, err


# -- a failed run publishes nothing ------------------------------------------------------------------

def test_a_decode_that_fails_midway_leaves_no_bigbed_or_bigwig(tmp_path, monkeypatch, capsys):
    ws = stand_in_workspace(tmp_path, monkeypatch)
    import flashseg.cli.decode as decode_module

    with open("old.bb", "w") as handle:
        handle.write("an older run\n")

    monkeypatch.setattr(decode_module, "_decode_contigs", lambda: disk_full_after_first_contig)
    code, _, err = run_main(BASE + ["-o", "old.bb", "--changes", "c.bw", "--boundaries", "b.bw"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert open("old.bb").read() == "an older run\n"
    assert not os.path.exists("c.bw") and not os.path.exists("b.bw") and not leftovers(ws)


def test_an_interrupt_while_converting_publishes_nothing(tmp_path, monkeypatch, capsys):
    """A signal lands while pybigtools pulls records (it would swallow the exception and
    print it): the run still ends as interrupted, with nothing published."""
    ws = stand_in_workspace(tmp_path, monkeypatch)
    real = bigfiles._text_records

    def interrupted(path, kind, target):
        for i, record in enumerate(real(path, kind, target)):
            if i == 3:
                raise KeyboardInterrupt
            yield record

    monkeypatch.setattr(bigfiles, "_text_records", interrupted)
    code, out, err = run_main(BASE + ["-o", "c.bed", "--changes", "c.bw"], capsys)
    assert code == 130 and "interrupted" in err and out == "", err
    assert not os.path.exists("c.bw") and not os.path.exists("c.bed") and not leftovers(ws)


def test_bad_records_are_one_error_naming_the_output(tmp_path):
    target = str(tmp_path / "x.bw")
    cases = [([("chr1", 0, 10, 0.5), ("chr1", 5, 20, 0.5)], "overlaps"),
             ([("chr1", 0, 10, 0.5), ("chr2", 0, 10, 0.5), ("chr1", 20, 30, 0.5)], "not contiguous"),
             ([("chr9", 0, 10, 0.5)], "no known size"),
             ([("chr1", 90, 110, 0.5)], "beyond the contig size 100"),
             ([("chr1", 10, 10, 0.5)], "empty or reversed"),
             ([("chr1", 0, 10, float("nan"))], "not a finite number")]
    for records, says in cases:
        with pytest.raises(bigfiles.DataError, match=says) as info:
            bigfiles.write_bigwig(target, iter(records), {"chr1": 100, "chr2": 100}, target="x.bw")
        assert str(info.value).startswith("x.bw: ")


def test_a_full_disk_while_pybigtools_writes_is_one_error(tmp_path, capfd):
    """pybigtools panics on a full disk, printing a backtrace: the error is one line
    saying what happened, and nothing reaches stderr."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        records = [("chr1", 200 * i, 200 * i + 200, float(np.float32(1 / (i + 2)))) for i in range(60000)]
        capfd.readouterr()
        with pytest.raises(bigfiles.DataError) as info:
            bigfiles.write_bigwig(str(disk / "x.tmp.bw"), iter(records), {"chr1": 200 * 60000}, target="x.bw")
        assert str(info.value) == "x.bw: cannot write output: No space left on device"
        assert capfd.readouterr().err == ""
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_killed_runs_bigfile_temporaries_are_removed_by_the_next_run(tmp_path, monkeypatch, capsys):
    ws = stand_in_workspace(tmp_path, monkeypatch)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = output._host()
    orphans = [f".c.bb~{host}~{dead.pid}~0badcafe.txt.tmp", f".c.bb~{host}~{dead.pid}~0badcafe.tmp.bb",
               f".c.bw~{host}~{dead.pid}~12345678.tmp.bw"]
    for name in orphans:
        open(name, "w").close()
    code, _, err = run_main(BASE + ["-o", "c.bb", "--changes", "c.bw"], capsys)
    assert code == 0, err
    assert not leftovers(ws)


def test_pybigtools_is_imported_only_when_a_browser_file_is_written():
    code = ("import sys, flashseg.cli, flashseg.cli.decode, flashseg.cli.gather, flashseg.cli.tracks, "
            "flashseg.io.bigfiles; assert 'pybigtools' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- gather ------------------------------------------------------------------------------------------

def test_gather_of_per_contig_runs_equals_a_whole_genome_bigbed_and_bigwig(sim, tmp_path, capsys):
    t = tmp_path
    decode(sim, capsys, "-o", str(t / "whole.bb"), "--changes", str(t / "whole.bw"))
    beds, graphs = [], []
    for name in reversed(list(CONTIGS)):
        decode(sim, capsys, "--contig", name, "-o", str(t / f"{name}.bed"), "--changes", str(t / f"{name}.bg"))
        beds.append(str(t / f"{name}.bed"))
        graphs.append(str(t / f"{name}.bg"))
    fasta = ["--fasta", str(sim / "genome.fa")]
    for inputs, out in ((beds, "all.bb"), (graphs, "all.bw")):
        code, _, err = run_main(["gather", *inputs, *fasta, "-o", str(t / out)], capsys)
        assert code == 0 and "WARNING" not in err, err
    assert bigbed_rows(t / "all.bb") == bigbed_rows(t / "whole.bb")
    assert bigwig_rows(t / "all.bw") == bigwig_rows(t / "whole.bw")
    assert list(chroms(t / "all.bb").items()) == list(CONTIGS.items())
    gathered = bigfiles.provenance_from_autosql(autosql_of(t / "all.bb"))
    assert gathered[:3] == bigfiles.provenance_from_autosql(autosql_of(t / "whole.bb"))[:3]
    assert len(gathered) == 4 and gathered[3].startswith("##flashseg command=")
    # without --fasta: input order, each contig as long as its last line reaches, with a warning
    code, _, err = run_main(["gather", *graphs, "-o", str(t / "nofasta.bw")], capsys)
    assert code == 0 and "WARNING" in err and "last end" in err, err
    rows = bigwig_rows(t / "all.bw")
    assert chroms(t / "nofasta.bw") == {c: max(r[2] for r in rows if r[0] == c) for c in {r[0] for r in rows}}
    assert list(chroms(t / "nofasta.bw")) == [n for n in reversed(list(CONTIGS)) if n != "chrS"]


def test_gather_refuses_inputs_the_browser_file_cannot_hold(sim, tmp_path, capsys):
    decode(sim, capsys, "--contig", "chrA", "-o", str(tmp_path / "a.bed"), "--changes", str(tmp_path / "a.bg"))
    for inputs, out, says in ((["a.bg"], "x.bb", "a bigBed holds BED9+4"), (["a.bed"], "x.bw", "column header")):
        code, _, err = run_main(["gather", *[str(tmp_path / i) for i in inputs], "-o", str(tmp_path / out)], capsys)
        assert code == 1 and says in err and err.count("\n") == 1, err
        assert not os.path.exists(tmp_path / out) and not leftovers(tmp_path)


# -- per-label posteriors ------------------------------------------------------------------------------

def test_tracks_bigwig_writes_one_file_per_label_from_the_posteriors(sim, tmp_path, capsys):
    post = tmp_path / "post.h5"
    decode(sim, capsys, "-o", os.devnull, "--posteriors", str(post))
    code, _, err = run_main(["tracks", "bigwig", str(post), "-o", str(tmp_path / "bw")], capsys)
    assert code == 0, err
    with h5py.File(post) as f:
        labels = [x.decode() if isinstance(x, bytes) else x for x in f.attrs["labels"]]
        gamma = {name: f[f"tracks/{name}"][()] for name in CONTIGS}
    assert sorted(os.listdir(tmp_path / "bw")) == sorted(f"{name}.bw" for name in labels)
    for column, label in enumerate(labels):
        path = tmp_path / "bw" / f"{label}.bw"
        assert list(chroms(path).items()) == [(n, L) for n, L in CONTIGS.items()
                                              if (gamma[n][:, column] >= 1e-4).any()]
        for name, length in CONTIGS.items():
            expected = np.zeros(len(gamma[name]), dtype=np.float32)
            kept = gamma[name][:, column] >= 1e-4
            expected[kept] = gamma[name][kept, column]
            got = np.zeros_like(expected)
            rows = [r for r in bigwig_rows(path) if r[0] == name]
            for _, start, end, value in rows:
                assert start % 200 == 0 and (end % 200 == 0 or end == length)
                got[start // 200:-(-end // 200)] = value
            np.testing.assert_array_equal(got, expected)
            assert all(a[2] < b[1] or a[3] != b[3] for a, b in zip(rows, rows[1:])), "equal neighbours merged"
    code, _, err = run_main(["tracks", "bigwig", str(post), "-o", str(tmp_path / "bw")], capsys)
    assert code == 2 and "--force" in err
    code, _, err = run_main(["tracks", "bigwig", str(post), "-o", str(tmp_path / "one"), "--label", labels[1]],
                            capsys)
    assert code == 0 and os.listdir(tmp_path / "one") == [f"{labels[1]}.bw"], err


def test_tracks_bigwig_leaves_out_the_rows_a_region_run_did_not_decode(sim, tmp_path, capsys):
    post = tmp_path / "post.h5"
    decode(sim, capsys, "-o", os.devnull, "--posteriors", str(post), "--region", "chrA:20001-30000")
    code, _, err = run_main(["tracks", "bigwig", str(post), "-o", str(tmp_path / "bw"), "--min-posterior", "0"],
                            capsys)
    assert code == 0, err
    for name in os.listdir(tmp_path / "bw"):
        rows = bigwig_rows(tmp_path / "bw" / name)
        assert {r[0] for r in rows} == {"chrA"}
        assert rows[0][1] == 20000 and rows[-1][2] == 30000


def test_tracks_bigwig_takes_only_posteriors(tmp_path, capsys):
    write_model(tmp_path / "m.yaml")
    tracks = write_tracks(tmp_path / "t.h5", {"chr1": 30})
    code, _, err = run_main(["tracks", "bigwig", tracks, "-o", str(tmp_path / "bw")], capsys)
    assert code == 1 and "not a posteriors file" in err and err.count("\n") == 1, err
    probs = write_tracks(tmp_path / "p.h5", {"chr1": 30}, score="probability",
                         values={"chr1": np.full((30, 2), 0.5)})
    code, _, err = run_main(["tracks", "bigwig", probs, "-o", str(tmp_path / "bw"), "--label", "C"], capsys)
    assert code == 1 and "no label C" in err, err
    code, _, err = run_main(["tracks", "bigwig", probs, "-o", str(tmp_path / "bw")], capsys)
    assert code == 0 and "bins x bin size" in err, err          # no length attributes
    assert bigwig_rows(tmp_path / "bw" / "A.bw") == [("chr1", 0, 300, 0.5)]
