"""Issue 17, silently wrong results: inputs that used to give confident wrong output with exit 0
now give one line and exit 1 (bad data) or 2 (bad options), and a writer cannot leave rows
that read as "no evidence" by accident."""
from __future__ import annotations

import os
import shutil
import struct
import threading

import click
import h5py
import numpy as np
import pysam
import pytest

from bam_helpers import random_reads, reference_counts, write_bam
from cli_helpers import fake_decode_contigs, run_main, write_fasta, write_model, write_tracks
from flashseg.errors import DataError
from flashseg.io import alignments
from flashseg.io.observations import ObservationsWriter, open_observations
from flashseg.io.tracks import TracksWriter, open_tracks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "data", "tiny-workflow")
CNV_MODEL = os.path.join(ROOT, "configs", "models", "copy-number.yaml")
CONTIGS = [("c1", 60_000), ("c2", 30_000), ("c3", 50_000)]


def one_line_error(code, err, expected_code=1):
    assert code == expected_code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -----------------------------------------------------------------------------
# An index made for another BAM


@pytest.fixture()
def tiny(tmp_path):
    for name in ("genome.fa", "reads.bam", "reads.bam.bai"):
        shutil.copy(os.path.join(TINY, name), tmp_path / name)
    return tmp_path


def other_bam(path, contigs, n=300, seed=1):
    """A BAM with the same header and other reads (an index made for it fits the header)."""
    rng = np.random.default_rng(seed)
    name, length = contigs[0]
    reads = [{"contig": name, "pos": int(p)} for p in np.sort(rng.integers(0, length // 3, n))]
    return write_bam(path, contigs, reads)


def subset_bam(source, target, keep):
    """The reads of ``source`` that ``keep`` accepts, same header and compression: the blocks
    they share are byte-identical, so an index of one points at real reads of the other."""
    with pysam.AlignmentFile(str(source)) as src, pysam.AlignmentFile(str(target), "wb", template=src) as out:
        for read in src.fetch(until_eof=True):
            if keep(read):
                out.write(read)
    pysam.index(str(target))
    return str(target)


@pytest.mark.parametrize("command", ["tracks coverage", "decode"])
def test_cli_refuses_an_index_made_for_another_bam(tiny, capsys, command):
    """Before: exit 0 and calls from the wrong reads (the subset's index skips most of chrT1)."""
    other = subset_bam(tiny / "reads.bam", tiny / "other.bam",
                       lambda read: read.reference_name == "chrT1" and read.reference_start < 100_000)
    shutil.copy(other + ".bai", tiny / "reads.bam.bai")
    argv = command.split() + ["--bam", str(tiny / "reads.bam"), "-m", CNV_MODEL, "--threads", "1"]
    out = tiny / ("cov.h5" if command != "decode" else "calls.bed")
    argv += ["-o", str(out)]
    code, _, err = run_main(argv, capsys)
    err = one_line_error(code, err)
    assert f"{tiny / 'reads.bam.bai'}:" in err and "does not belong to" in err and "samtools index" in err
    assert not out.exists()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "pysam"])
def test_index_of_another_bam_with_the_same_header(tmp_path, fast, threads):
    rng = np.random.default_rng(11)
    bams = [write_bam(tmp_path / f"b{i}.bam", CONTIGS, random_reads(rng, CONTIGS[:2 + i % 2], 500 + 700 * i))
            for i in range(3)]
    for i, target in enumerate(bams):
        expected = reference_counts(target, CONTIGS, 500, min_mapq=20)
        good = alignments.count_contigs(target, CONTIGS, 500, fast=fast, unit_bp=20_000, threads=threads,
                                        reads_per_process=0)
        for name, _ in CONTIGS:
            np.testing.assert_array_equal(good[name], expected[name])
        shutil.copy(target + ".bai", target + ".good")
        for j, source in enumerate(bams):
            if i == j:
                continue
            shutil.copy(source + ".bai", target + ".bai")
            with pytest.raises(DataError, match=r"b%d\.bam\.bai: .*does not belong to .*b%d\.bam" % (i, i)):
                alignments.count_contigs(target, CONTIGS, 500, fast=fast, unit_bp=20_000, threads=threads,
                                         reads_per_process=0)
        shutil.copy(target + ".good", target + ".bai")


@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "pysam"])
def test_index_with_another_number_of_references(tmp_path, fast):
    target = write_bam(tmp_path / "t.bam", CONTIGS, [{"contig": "c1", "pos": 5}, {"contig": "c2", "pos": 9}])
    source = write_bam(tmp_path / "s.bam", CONTIGS[:1], [{"contig": "c1", "pos": 5}])
    shutil.copy(source + ".bai", target + ".bai")
    with pytest.raises(DataError, match=r"t\.bam\.bai: it has 1 reference\(s\), the BAM header 3"):
        alignments.count_contigs(target, CONTIGS, 100, fast=fast)


def test_a_csi_beside_the_bam_is_the_index_checked(tmp_path):
    """htslib prefers X.bam.csi to X.bam.bai: that is the index held to the BAM."""
    target = write_bam(tmp_path / "t.bam", CONTIGS, random_reads(np.random.default_rng(2), CONTIGS, 900))
    source = other_bam(tmp_path / "s.bam", CONTIGS)
    pysam.index("-c", source)
    shutil.copy(source + ".csi", target + ".csi")   # the right .bai stays beside it
    for fast in (True, False):
        with pytest.raises(DataError, match=r"t\.bam\.csi: .*does not belong to"):
            alignments.count_contigs(target, CONTIGS, 500, fast=fast)


def rewrite_linear(bai_path, edit):
    """Rewrite a .bai with edit(tid, linear) -> new linear (uint64 array) for each reference."""
    data = open(bai_path, "rb").read()
    out = bytearray(data[:8])
    (n_ref,) = struct.unpack_from("<i", data, 4)
    at = 8
    for tid in range(n_ref):
        start = at
        (n_bin,) = struct.unpack_from("<i", data, at)
        at += 4
        for _ in range(n_bin):
            _, n_chunk = struct.unpack_from("<Ii", data, at)
            at += 8 + 16 * n_chunk
        out += data[start:at]
        (n_intv,) = struct.unpack_from("<i", data, at)
        linear = np.frombuffer(data, dtype="<u8", count=n_intv, offset=at + 4).copy()
        at += 4 + 8 * n_intv
        linear = np.asarray(edit(tid, linear), dtype="<u8")
        out += struct.pack("<i", linear.size) + linear.tobytes()
    out += data[at:]
    with open(bai_path, "wb") as handle:
        handle.write(bytes(out))


def test_linear_offsets_into_the_middle_of_a_record_name_the_index(tmp_path):
    path = write_bam(tmp_path / "t.bam", CONTIGS, random_reads(np.random.default_rng(4), CONTIGS, 3000))
    rewrite_linear(path + ".bai", lambda tid, lin: np.where(np.arange(lin.size) >= 1, lin + 7, lin))
    with pytest.raises(DataError, match=r"t\.bam\.bai: .*(no BAM record|past the end).*does not belong"):
        alignments.count_contigs(path, CONTIGS, 500, fast=True, unit_bp=20_000)


def test_ranges_past_the_last_indexed_window_are_read_not_trusted(tmp_path):
    """A linear index cut short claims "no reads beyond": the compiled path reads the BAM instead."""
    path = write_bam(tmp_path / "t.bam", CONTIGS, random_reads(np.random.default_rng(5), CONTIGS, 3000))
    expected = reference_counts(path, CONTIGS, 500)
    rewrite_linear(path + ".bai", lambda tid, lin: lin[:1])
    got = alignments.count_contigs(path, CONTIGS, 500, fast=True, unit_bp=20_000)
    for name, _ in CONTIGS:
        np.testing.assert_array_equal(got[name], expected[name])


# -----------------------------------------------------------------------------
# Contig names a tab-separated output cannot hold

BAD_NAMES = ["chr\t1", "chr\n1", "chr 1", "chr\x011", "chr\r"]


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import flashseg.cli.decode as decode_module

    monkeypatch.setattr(decode_module, "_decode_contigs", lambda: fake_decode_contigs)
    write_model("m.yaml", bin_size=10)
    write_tracks("t.h5", {"chr1": 30, "chr2": 7})
    write_fasta("g.fa", {"chr1": 295, "chr2": 70})
    return tmp_path


def rename_contig(path, group, old, new):
    with h5py.File(path, "a") as f:
        f[group].move(old, new)
        if "contigs" in f.attrs:
            names = [new if c == old else c for c in f.attrs["contigs"].astype(str)]
            f.attrs["contigs"] = np.array(names, dtype=h5py.string_dtype())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_tracks_contig_name_with_whitespace_or_control_character(ws, capsys, name):
    rename_contig("t.h5", "tracks", "chr2", name)
    code, out, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "-o", "calls.bed"], capsys)
    err = one_line_error(code, err)
    assert err.startswith("flashseg: error: t.h5: ") and repr(name) in err
    assert not os.path.exists("calls.bed")
    with pytest.raises(DataError, match="contains"):
        open_tracks("t.h5")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_writers_refuse_such_names(tmp_path, name):
    with TracksWriter(tmp_path / "t.h5", labels=["A"], bin_size=10) as w:
        with pytest.raises(DataError, match=r"t\.h5: .*contains"):
            w.add_contig(name, 3)
    with ObservationsWriter(tmp_path / "o.h5", features=["a"], kind="binary", bin_size=10) as w:
        with pytest.raises(DataError, match=r"o\.h5: .*contains"):
            w.add_contig(name, 3)


def test_observations_contig_name_is_checked(tmp_path):
    path = tmp_path / "o.h5"
    with ObservationsWriter(path, features=["a"], kind="binary", bin_size=10) as w:
        w.add_contig("chr1", 2)
        w.write("chr1", 0, np.zeros((2, 1), dtype=np.uint8))
    rename_contig(path, "observations", "chr1", "chr\t1")
    with pytest.raises(DataError, match=r"o\.h5: contig name 'chr\\t1' contains whitespace"):
        open_observations(path)


def test_fasta_contig_name_with_a_control_character(ws, capsys):
    with open("g.fa", "w") as f:
        f.write(">chr1\n" + "A" * 295 + "\n>chr\x022\n" + "C" * 70 + "\n")
    code, _, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", "g.fa", "-o", "calls.bed"], capsys)
    err = one_line_error(code, err)
    assert "g.fa: " in err and r"'chr\x022'" in err and "control character" in err


@pytest.mark.parametrize("name", ["chr 1", "chr\t1", "chr\x011"])
def test_bam_header_contig_name(tmp_path, capsys, name):
    path = write_bam(tmp_path / "n.bam", [(name, 5000), ("chr2", 3000)], [{"contig": name, "pos": 5}])
    code, _, err = run_main(["tracks", "coverage", "--bam", path, "-m", CNV_MODEL, "-o", str(tmp_path / "c.h5"),
                             "--threads", "1"], capsys)
    err = one_line_error(code, err)
    assert f"{path}: contig name {name!r} contains" in err
    assert not (tmp_path / "c.h5").exists()


def test_chromhmm_chromosome_name(tmp_path):
    from flashseg.io.chromhmm import read_header

    path = tmp_path / "cell_chr1_binary.txt"
    path.write_text("cell\tchr 1\nm1\tm2\n0\t1\n")
    with pytest.raises(DataError, match=r"cell_chr1_binary\.txt: line 1: contig name 'chr 1' contains whitespace"):
        read_header(path)


def test_simulate_contig_name_is_a_usage_error(tmp_path, capsys):
    write_model(tmp_path / "m.yaml")
    code, _, err = run_main(["simulate", "-m", str(tmp_path / "m.yaml"), "--contig", "chr 1:1000",
                             "-o", str(tmp_path / "sim")], capsys)
    assert code == 2 and "contains whitespace" in err, err


def test_error_locations_stay_on_one_line():
    text = str(DataError("bad", file="t.h5", contig="chr\n1", bin=3))
    assert "\n" not in text and text == r"t.h5: contig 'chr\n1': bin 3: bad"


# -----------------------------------------------------------------------------
# Number options: NaN and infinity are usage errors

def float_params():
    from flashseg.cli import cli

    ctx = click.Context(cli)
    found = []

    def walk(command, path):
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), path + [name])
            return
        for param in command.params:
            if isinstance(param.type, click.types.FloatParamType):
                found.append((" ".join(path), param))

    walk(cli, [])
    return found


def test_every_float_option_refuses_nan_and_infinity():
    params = float_params()
    assert {(cmd, p.opts[-1]) for cmd, p in params} >= {
        ("decode", "--min-posterior"), ("decode", "--depth"), ("tracks coverage", "--depth"), ("fit", "--tol"),
        ("simulate", "--signal"), ("simulate", "--reads-depth")}
    for cmd, param in params:
        for value in ("nan", "NaN", "inf", "-inf", "+Infinity"):
            with pytest.raises(click.BadParameter, match="finite"):
                param.type.convert(value, param, None)


@pytest.mark.parametrize("argv", [
    ["decode", "--min-posterior", "nan"],
    ["decode", "--depth", "nan"],
    ["decode", "--depth", "inf"],
    ["tracks", "coverage", "--depth", "nan"],
    ["fit", "--tol", "nan"],
    ["fit", "--tol", "inf"],
    ["simulate", "--signal", "nan"],
    ["simulate", "--signal", "inf"],
    ["simulate", "--reads-depth", "nan"],
])
def test_nan_number_options_exit_2(capsys, argv):
    code, out, err = run_main(argv, capsys)
    assert code == 2 and argv[-2] in err and "finite" in err and out == "", err


# -----------------------------------------------------------------------------
# Writers: rows never written

def test_tracks_writer_refuses_unwritten_rows(tmp_path):
    path = tmp_path / "t.h5"
    with pytest.raises(DataError, match=r"t\.h5: contig chr2: bin 4: rows \[4, 8\) of 10 were never written"):
        with TracksWriter(path, labels=["A", "B"], bin_size=10) as w:
            w.add_contig("chr1", 5)
            w.write("chr1", 0, np.ones((5, 2)))
            w.add_contig("chr2", 10)
            w.write("chr2", 0, np.ones((4, 2)))
            w.write("chr2", 8, np.ones((2, 2)))
    assert not path.exists() and os.listdir(tmp_path) == []
    from flashseg.io.output import must_exit_hard

    assert not must_exit_hard()   # a refused file is discarded, not abandoned like a failed disk write


def test_a_contig_never_written_at_all(tmp_path):
    with pytest.raises(DataError, match=r"contig c: bin 0: rows \[0, 3\) of 3"):
        with TracksWriter(tmp_path / "t.h5", labels=["A"], bin_size=10) as w:
            w.add_contig("c", 3)
    assert os.listdir(tmp_path) == []


def test_rows_written_in_any_order_from_several_threads(tmp_path):
    path = tmp_path / "t.h5"
    n, step = 1000, 37
    values = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    starts = list(range(0, n, step))[::-1]
    with TracksWriter(path, labels=["A", "B"], bin_size=10, chunk_rows=64) as w:
        w.add_contig("c", n)
        w.add_contig("empty", 0)

        def work(mine):
            for a in mine:
                w.write("c", a, values[a:a + step])

        threads = [threading.Thread(target=work, args=(starts[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        w.write("c", 0, values[:3])   # overlapping writes are fine
    with open_tracks(path) as f:
        np.testing.assert_array_equal(f.read("c", 0, n), values)


def test_explicit_fill_value_allows_gaps(tmp_path):
    path = tmp_path / "t.h5"
    with TracksWriter(path, labels=["A"], bin_size=10, score="probability") as w:
        w.add_contig("c", 4, fill_value=np.nan)
        w.write("c", 1, np.full((2, 1), 0.5))
    with h5py.File(path) as f:
        x = f["tracks/c"][:, 0]
    assert np.isnan(x[[0, 3]]).all() and (x[1:3] == 0.5).all()


def test_observations_writer_needs_every_row_unless_a_fill_is_given(tmp_path):
    with pytest.raises(DataError, match=r"o\.h5: contig c: bin 2: rows \[2, 3\) of 3 were never written"):
        with ObservationsWriter(tmp_path / "o.h5", features=["a"], kind="count", bin_size=10) as w:
            w.add_contig("c", 3)
            w.write("c", 0, np.zeros((2, 1), dtype=np.int32))
    assert os.listdir(tmp_path) == []
    with ObservationsWriter(tmp_path / "o.h5", features=["a"], kind="count", bin_size=10) as w:
        w.add_contig("c", 3, fill_value=w.missing)
        w.write("c", 0, np.zeros((2, 1), dtype=np.int32))
    with open_observations(tmp_path / "o.h5") as f:
        x = f.read("c", 0, 3)[:, 0]
    assert (x[:2] == 0).all() and np.isnan(x[2])
    with ObservationsWriter(tmp_path / "b.h5", features=["a"], kind="binary", bin_size=10) as w:
        with pytest.raises(DataError, match="fill_value 7 is not a binary observation"):
            w.add_contig("c", 3, fill_value=7)
