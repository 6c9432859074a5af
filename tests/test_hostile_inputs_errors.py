"""Issue 17, tracebacks instead of one line, and a machine where numba cannot cache.

Every hostile input here (a malformed tracks or observations file, an
extreme model, a gzip FASTA, an integer option beyond what the kernels
hold, a click usage error) ends with exit 1 or 2 and one line
``flashseg: error: ...`` (exit 2 may add one line pointing at --help),
never a traceback; and decoding works where neither the install nor the
home directory can hold numba's kernel cache.
"""
from __future__ import annotations

import gzip
import bz2
import itertools
import os
import shutil
import subprocess
import sys

import click
import h5py
import numpy as np
import pytest

import flashseg
from cli_helpers import MODEL_YAML, run_main, stand_in_workspace, write_model, write_tracks
from flashseg.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BS = 10


def assert_one_line(code, err, expected, *needles):
    """Exit code ``expected``, stderr one ``flashseg: error:`` line (exit 2: optionally followed by
    the pointer to --help), no traceback, every needle in the message."""
    assert code == expected, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and lines[0].startswith("flashseg: error: "), err
    if expected == 2 and len(lines) == 2:
        assert lines[1].startswith("(see 'flashseg") and lines[1].endswith(" --help')"), err
    else:
        assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """Model (labels A, B; bin size 10), tracks t.h5 (chr1 30 bins, chr2 7) and FASTA; cwd = tmp_path.
    Decoding uses the stand-in core: these tests are about reading the inputs."""
    return stand_in_workspace(tmp_path, monkeypatch, bin_size=BS)


COMMANDS = {
    "info": ["info", "t.h5"],
    "validate": ["validate", "-m", "m.yaml", "-t", "t.h5"],
    "decode": ["decode", "-m", "m.yaml", "-t", "t.h5", "-o", "out.bed"],
}


# -----------------------------------------------------------------------------
# Tracks files (BinnedReader: shared by tracks and observations)

def _replace(f, data, name="chr1"):
    del f["tracks"][name]
    f["tracks"].create_dataset(name, data=data)


def _attr(key, value, where="/"):
    def edit(f):
        f[where].attrs[key] = value
    return edit


def _bytes_attr(key, values):
    def edit(f):
        f.attrs.create(key, np.array(values, dtype=f"S{max(len(v) for v in values)}"))
    return edit


def _link(kind, listed=True):
    def edit(f):
        f["tracks"]["chr3"] = (h5py.SoftLink("/nowhere") if kind == "dangling"
                               else h5py.ExternalLink("/no/such/file.h5", "/x"))
        if listed:
            f.attrs["contigs"] = ["chr1", "chr2", "chr3"]
    return edit


def _tracks_dataset(f):
    del f["tracks"]
    f.create_dataset("tracks", data=np.zeros(3))


def _undecodable_name(keep_contigs_attr):
    def edit(f):
        f["tracks"].create_dataset(b"chr\xff", data=np.zeros((5, 2), dtype="f4"))
        if not keep_contigs_attr:
            del f.attrs["contigs"]
    return edit


TRACK_CASES = {
    "dataset-1d": (lambda f: _replace(f, np.zeros(30, dtype="f4")), ["contig chr1", "shape (30,)"]),
    "dataset-3d": (lambda f: _replace(f, np.zeros((30, 2, 1), dtype="f4")), ["contig chr1", "shape (30, 2, 1)"]),
    "dataset-scalar": (lambda f: _replace(f, np.float32(1)), ["contig chr1", "shape ()"]),
    "bin-size-nan": (_attr("bin_size", np.nan), ["bin_size"]),
    "bin-size-inf": (_attr("bin_size", np.inf), ["bin_size"]),
    "bin-size-string": (_attr("bin_size", "ten"), ["bin_size"]),
    "bin-size-huge": (_attr("bin_size", 1e20), ["bin_size", "2147483647"]),
    "format-version-nan": (_attr("format_version", np.nan), ["format_version"]),
    "format-version-inf": (_attr("format_version", np.inf), ["format_version"]),
    "format-version-string": (_attr("format_version", "one"), ["format_version"]),
    "length-nan": (_attr("length", np.nan, "tracks/chr1"), ["contig chr1", "'length' attribute"]),
    "length-inf": (_attr("length", np.inf, "tracks/chr1"), ["contig chr1", "'length' attribute"]),
    "length-string": (_attr("length", "300bp", "tracks/chr1"), ["contig chr1", "'length' attribute"]),
    "length-array": (_attr("length", np.array([295, 1]), "tracks/chr1"), ["contig chr1", "'length' attribute"]),
    "length-negative": (_attr("length", -5, "tracks/chr1"), ["contig chr1", "'length' attribute"]),
    "length-huge": (_attr("length", 1e30, "tracks/chr1"), ["contig chr1", "rows do not fit"]),
    "length-not-the-rows": (_attr("length", 5000, "tracks/chr1"), ["contig chr1", "30 rows do not fit"]),
    "tracks-is-a-dataset": (_tracks_dataset, ["/tracks is not a group"]),
    "dangling-link": (_link("dangling"), ["contig chr3", "dangling"]),
    "external-link": (_link("external"), ["contig chr3", "external link"]),
    "name-not-utf8": (_undecodable_name(False), ["not UTF-8"]),
    "name-not-utf8-listed": (_undecodable_name(True), ["not UTF-8"]),
    "contigs-attr-not-utf8": (_bytes_attr("contigs", [b"chr1", b"chr\xff"]), ["not UTF-8"]),
    "labels-not-utf8": (_bytes_attr("labels", [b"A", b"\xffB"]), ["'labels'", "not UTF-8"]),
    "format-not-utf8": (lambda f: f.attrs.create("format", np.bytes_(b"flashseg.\xff")), ["'format'", "not UTF-8"]),
    "score-not-utf8": (lambda f: f.attrs.create("score", np.bytes_(b"\xfelogit")), ["'score'", "not UTF-8"]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(TRACK_CASES))
def test_malformed_tracks_are_one_line(ws, capsys, case, command):
    edit, needles = TRACK_CASES[case]
    with h5py.File("t.h5", "a") as f:
        edit(f)
    code, out, err = run_main(COMMANDS[command], capsys)
    assert_one_line(code, err, 1, "t.h5: ", *needles)
    assert not os.path.exists("out.bed")


def _corrupt_first_chunk(path):
    """A tracks file whose first (lzf-compressed) chunk is garbage: its rows cannot be read."""
    write_tracks(path, {"chr1": 30, "chr2": 7}, values={"chr1": np.zeros((30, 2)), "chr2": np.zeros((7, 2))})
    with h5py.File(path, "r") as f:
        info = f["tracks"]["chr1"].id.get_chunk_info(0)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)


@pytest.mark.parametrize("command", ["validate", "decode"])
def test_unreadable_rows_name_the_file_and_contig(ws, capsys, command):
    _corrupt_first_chunk("t.h5")
    code, out, err = run_main(COMMANDS[command], capsys)
    assert_one_line(code, err, 1, "t.h5: contig chr1: cannot read bins")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_truncated_hdf5_file_says_so(ws, capsys, command):
    data = open("t.h5", "rb").read()
    with open("t.h5", "wb") as handle:
        handle.write(data[:len(data) // 2])
    code, out, err = run_main(COMMANDS[command], capsys)
    assert_one_line(code, err, 1, "t.h5: truncated HDF5 file")


def test_unopenable_hdf5_file_names_the_reason(ws, capsys, monkeypatch):
    """An unreadable file (chmod 000 as another user: root reads everything, so the refusal is simulated)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(h5py, "File", refuse)
    code, out, err = run_main(COMMANDS["validate"], capsys)
    assert_one_line(code, err, 1, "t.h5: cannot open: Permission denied")


def test_observations_files_share_the_checks(ws, capsys):
    from flashseg.io.observations import ObservationsWriter

    with ObservationsWriter("o.h5", features=["f1", "f2"], kind="binary", bin_size=BS) as w:
        w.add_contig("chr1", 30)
        w.write("chr1", 0, np.zeros((30, 2), dtype=np.uint8))
    shutil.copy("o.h5", "o2.h5")
    with h5py.File("o.h5", "a") as f:
        f.attrs.create("kind", np.bytes_(b"bin\xffary"))
    code, out, err = run_main(["info", "o.h5"], capsys)
    assert_one_line(code, err, 1, "o.h5: attribute 'kind' is not UTF-8 text")
    with h5py.File("o2.h5", "a") as f:
        f["observations"]["chr1"].attrs["length"] = np.nan
    code, out, err = run_main(["info", "o2.h5"], capsys)
    assert_one_line(code, err, 1, "o2.h5: contig chr1: 'length' attribute")


def test_a_directory_as_a_file_is_one_usage_line(ws, capsys):
    os.mkdir("d.h5")
    for argv in (["info", "d.h5"], ["validate", "-m", "m.yaml", "-t", "d.h5"], ["decode", "-m", ".", "-t", "t.h5"]):
        code, out, err = run_main(argv, capsys)
        assert_one_line(code, err, 2, "directory")


# -----------------------------------------------------------------------------
# The model YAML

def _model(old, new, count=1):
    text = MODEL_YAML.format(bin_size=BS)
    assert old in text
    return text.replace(old, new, count)


DURATION_A = "{family: geometric, mean: 4}"
MODEL_CASES = {
    "family-list": (_model(DURATION_A, "{family: [geometric], mean: 4}"), "labels[0].duration.family"),
    "family-mapping": (_model(DURATION_A, "{family: {a: 1}, mean: 4}"), "labels[0].duration.family"),
    "emissions-family-list": (MODEL_YAML.format(bin_size=BS) + "emissions: {family: [bernoulli], features: [x]}\n",
                              "emissions.family"),
    "integer-beyond-a-double": (_model("mean: 4", "mean: 1" + "0" * 400), "labels[0].duration.mean"),
    "integer-of-5000-digits": (_model("mean: 4", "mean: " + "9" * 5000), "invalid YAML at line 9"),
    "invalid-date": (_model("name: test-two", "name: 2001-13-45"), "invalid YAML at line 1"),
    "nested-too-deeply": (_model("name: test-two", "name: " + "[" * 5000 + "]" * 5000), "nested too deeply"),
    "bin-size-beyond-int32": (_model(f"bin_size: {BS}", "bin_size: 100000000000000000000"), "bin_size"),
    "lognormal-sigma-1e5": (_model(DURATION_A, "{family: lognormal, mu: 1, sigma: 1e5}"), "labels[0].duration"),
    "gamma-extreme": (_model(DURATION_A, "{family: gamma, shape: 1e300, mean: 1e-300}"), "labels[0].duration"),
    "negative-binomial-extreme": (_model(DURATION_A, "{family: negative_binomial, mean: 1e12, dispersion: 1e-300}"),
                                  "labels[0].duration"),
    "poisson-extreme": (_model(DURATION_A, "{family: poisson, mean: 1e300, min: 1e300}"), "labels[0].duration"),
}


@pytest.mark.parametrize("command", [["info", "m.yaml"], ["validate", "-m", "m.yaml"]], ids=["info", "validate"])
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_hostile_models_are_one_line(ws, capsys, case, command):
    text, needle = MODEL_CASES[case]
    write_model("m.yaml", text=text)
    code, out, err = run_main(command, capsys)
    assert_one_line(code, err, 1, "m.yaml: ", needle)


EXTREMES = (1e-300, 1e-12, 1e6, 1e12, 1e300)
PARAMETERS = {"geometric": ("mean",), "negative_binomial": ("mean", "dispersion"), "poisson": ("mean",),
              "lognormal": ("mu", "sigma"), "gamma": ("shape", "mean"), "uniform": (), "table": ()}
BOUNDS = ({}, {"min": 1e12}, {"min": 1e300}, {"max": 1e12}, {"min": 5, "max": 5})


def test_the_sweep_covers_every_duration_family():
    from flashseg.io.durations import FAMILIES

    assert PARAMETERS == {name: tuple(keys) for name, keys in FAMILIES.items()}


@pytest.mark.parametrize("family", list(PARAMETERS))
def test_extreme_duration_parameters_give_a_model_or_one_error(family):
    """Every parameter at 1e-300, 1e-12, 1e6, 1e12 and 1e300 (all combinations), with extreme
    min/max, under both tails: a model, or a DataError whose one line names the duration."""
    from flashseg.io.model import parse_model

    names = PARAMETERS[family]
    for values in itertools.product(EXTREMES, repeat=len(names)):
        for bounds, tail in itertools.product(BOUNDS, ("geometric", "none")):
            duration = {"family": family, **dict(zip(names, values)), **bounds}
            if family == "uniform":
                duration.setdefault("max", 1e12)
            if family == "table":
                duration["probabilities"] = [1, 2, 3]
            if tail == "none" and family == "gamma" and duration["shape"] > 1e6:
                continue    # correct but slow (seconds each): the mean of a very narrow law far beyond K
            data = {"bin_size": BS, "max_duration": 16, "tail": tail, "transitions": {},
                    "labels": [{"name": "A", "duration": duration}]}
            try:
                spec = parse_model(data)
            except DataError as exc:
                text = str(exc)
                assert "\n" not in text and text.startswith("labels[0].duration"), (duration, tail, text)
                continue
            spec.model.mean_durations()


# -----------------------------------------------------------------------------
# FASTA compression

def _gzip_fasta(name="g.fa.gz"):
    with open("g.fa", "rb") as src, gzip.open(name, "wb") as dst:
        dst.write(src.read())
    return name


@pytest.mark.parametrize("command", ["validate", "decode", "info"])
def test_gzip_fasta_says_bgzip_or_plain(ws, capsys, command):
    fasta = _gzip_fasta()
    argv = {"validate": ["validate", "-m", "m.yaml", "-t", "t.h5", "--fasta", fasta],
            "decode": ["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", fasta, "-o", "out.bed"],
            "info": ["info", "--contigs", "-m", "m.yaml", "-t", "t.h5", "--fasta", fasta]}[command]
    code, out, err = run_main(argv, capsys)
    assert_one_line(code, err, 1, "g.fa.gz: ", "bgzip", "plain")


def test_other_compressions_and_misnamed_fasta(ws, capsys):
    with open("g.fa", "rb") as src, bz2.open("g.fa.bz2", "wb") as dst:
        dst.write(src.read())
    shutil.copy("g.fa", "plain.fa.gz")
    for fasta, needle in (("g.fa.bz2", "bzip2-compressed"), ("plain.fa.gz", "not gzip-compressed")):
        code, out, err = run_main(["validate", "-m", "m.yaml", "-t", "t.h5", "--fasta", fasta], capsys)
        assert_one_line(code, err, 1, f"{fasta}: ", needle)


# -----------------------------------------------------------------------------
# Integer options

HUGE = str(10 ** 20)
INTEGER_OPTIONS = [
    (["decode", "-m", "m.yaml", "-t", "t.h5"], "--samples"),
    (["decode", "-m", "m.yaml", "-t", "t.h5"], "--gap-min"),
    (["decode", "-m", "m.yaml", "-t", "t.h5"], "--threads"),
    (["decode", "-m", "m.yaml", "-t", "t.h5"], "--chunk-size"),
    (["decode", "-m", "m.yaml", "-t", "t.h5"], "--min-mapq"),
    (["decode", "-m", "m.yaml", "-t", "t.h5"], "--max-fragment"),
    (["tracks", "coverage", "--bam", "t.h5", "-m", "m.yaml", "-o", "c.h5"], "--min-mapq"),
    (["tracks", "coverage", "--bam", "t.h5", "-m", "m.yaml", "-o", "c.h5"], "--max-fragment"),
    (["tracks", "coverage", "--bam", "t.h5", "-m", "m.yaml", "-o", "c.h5"], "--bin-size"),
    (["tracks", "coverage", "--bam", "t.h5", "-m", "m.yaml", "-o", "c.h5"], "--threads"),
    (["tracks", "counts", "--bam", "t.h5", "--fasta", "g.fa", "-o", "c.h5"], "--bin-size"),
    (["tracks", "counts", "--bam", "t.h5", "--fasta", "g.fa", "-o", "c.h5", "--bin-size", "10"], "--threads"),
    (["tracks", "chromhmm", ".", "-o", "imported"], "--bin-size"),
    (["fit", "--observations", "t.h5", "-o", "f.yaml"], "--states"),
    (["fit", "--observations", "t.h5", "-o", "f.yaml", "--states", "2"], "--max-duration"),
    (["fit", "--observations", "t.h5", "-o", "f.yaml", "--states", "2"], "--restarts"),
    (["fit", "--observations", "t.h5", "-o", "f.yaml", "--states", "2"], "--max-iter"),
    (["fit", "--observations", "t.h5", "-o", "f.yaml", "--states", "2"], "--threads"),
    (["fit", "--observations", "t.h5", "-o", "f.yaml", "--states", "2"], "--chunk-size"),
    (["simulate", "-m", "m.yaml", "--contig", "c1:1000", "-o", "sim"], "--read-length"),
    (["simulate", "-m", "m.yaml", "--contig", "c1:1000", "-o", "sim"], "--n-gap"),
]


@pytest.mark.parametrize("argv, option", INTEGER_OPTIONS, ids=[f"{a[0]}-{o}" for a, o in INTEGER_OPTIONS])
def test_integer_options_beyond_the_kernels_are_usage_errors(ws, capsys, argv, option):
    code, out, err = run_main(argv + [option, HUGE], capsys)
    assert_one_line(code, err, 2, option, "range")


def _integer_params():
    """(command path, param) of every integer option of every command."""
    from flashseg.cli import cli

    found = []

    def walk(command, path):
        if isinstance(command, click.Group):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), path + [name])
        for param in command.params:
            if isinstance(param.type, click.types.IntParamType):
                found.append((" ".join(path), param))

    walk(cli, [])
    return found


def test_every_integer_option_has_an_upper_bound():
    params = _integer_params()
    names = {(cmd, p.opts[-1]) for cmd, p in params}
    assert {("decode", "--chunk-size"), ("fit", "--states"), ("tracks coverage", "--min-mapq"),
            ("simulate", "--read-length"), ("decode", "--seed")} <= names
    for cmd, param in params:
        if param.name == "seed" or getattr(param, "count", False):    # seeds: used modulo 2**64; -v -q
            continue
        assert isinstance(param.type, click.IntRange) and param.type.max is not None, (cmd, param.opts)
        assert param.type.max <= 2**63 - 1, (cmd, param.opts)


def test_min_mapq_is_a_byte(ws, capsys):
    code, out, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "--min-mapq", "256"], capsys)
    assert_one_line(code, err, 2, "--min-mapq", "0<=x<=255")


def test_fit_max_duration_bound_is_the_models():
    from flashseg.cli._common import MAX_DURATION
    from flashseg.io.model import MAX_DURATION as MODEL_MAX_DURATION

    assert MAX_DURATION == MODEL_MAX_DURATION


def test_fit_takes_a_negative_seed(ws, capsys):
    from flashseg.io.observations import ObservationsWriter

    rows = np.random.default_rng(0).integers(0, 2, (200, 2)).astype(np.uint8)
    with ObservationsWriter("o.h5", features=["f1", "f2"], kind="binary", bin_size=BS) as w:
        w.add_contig("chr1", 200)
        w.write("chr1", 0, rows)
    argv = ["fit", "--observations", "o.h5", "--states", "2", "--max-duration", "1", "--max-iter", "1", "-q"]
    code, out, err = run_main(argv + ["--seed", "-1", "-o", "neg.yaml"], capsys)
    assert code == 0 and "Traceback" not in err, err
    code, out, err = run_main(argv + ["--seed", str(2**64 - 1), "-o", "pos.yaml"], capsys)
    assert code == 0, err
    # -1 is 2**64 - 1 modulo 2**64: the same fit (comment lines record the command, the name the file)
    strip = lambda p: [line for line in open(p) if not line.startswith(("#", "name:"))]  # noqa: E731
    assert strip("neg.yaml") == strip("pos.yaml")


# -----------------------------------------------------------------------------
# click's usage errors

@pytest.mark.parametrize("argv, needle, where", [
    (["decode"], "Missing option '-m' / '--model'", "flashseg decode"),
    (["decode", "--no-such-option"], "No such option", "flashseg decode"),
    (["no-such-command"], "No such command", "flashseg"),
    (["tracks", "coverage", "--bam", "missing.bam"], "does not exist", "flashseg tracks coverage"),
    (["decode", "-m", "m.yaml", "-t", "t.h5", "--samples", "3"], "--samples-out", "flashseg decode"),
    (["decode", "-m", "m.yaml", "-t", "t.h5", "--method", "exact"], "'exact' is not one of", "flashseg decode"),
])
def test_usage_errors_are_one_line_and_a_pointer_to_help(ws, capsys, argv, needle, where):
    code, out, err = run_main(argv, capsys)
    assert_one_line(code, err, 2, needle)
    assert err.splitlines() == [err.splitlines()[0], f"(see '{where} --help')"], err
    assert "Usage:" not in err and "Try '" not in err and out == ""


# -----------------------------------------------------------------------------
# Numba's kernel cache where nothing can be written

def test_kernel_cache_fallback_only_when_nothing_is_writable(tmp_path):
    from flashseg import kernel_cache

    pkgs = [str(tmp_path / "flashseg" / "core"), str(tmp_path / "flashseg" / "io")]
    env = {"HOME": str(tmp_path / "home")}
    everything = lambda path: True  # noqa: E731
    nothing = lambda path: False  # noqa: E731
    assert not kernel_cache.needs_fallback(pkgs, env, everything)
    assert kernel_cache.needs_fallback(pkgs, env, nothing)
    # any one of the three places is enough
    user = kernel_cache.user_cache_dir(env)
    assert user == str(tmp_path / "home" / ".cache" / "numba")
    assert not kernel_cache.needs_fallback(pkgs, env, lambda path: path == user)
    assert not kernel_cache.needs_fallback(pkgs, env, lambda path: path.endswith("__pycache__"))
    given = dict(env, NUMBA_CACHE_DIR=str(tmp_path / "given"))
    assert not kernel_cache.needs_fallback(pkgs, given, lambda path: path == given["NUMBA_CACHE_DIR"])
    # an unwritable NUMBA_CACHE_DIR alone does not help; XDG_CACHE_HOME moves the user directory
    assert kernel_cache.needs_fallback(pkgs, given, lambda path: False)
    xdg = dict(env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert kernel_cache.user_cache_dir(xdg) == str(tmp_path / "xdg" / "numba")
    # one package's __pycache__ writable and the other's not: numba would fail for the other
    assert kernel_cache.needs_fallback(pkgs, env, lambda path: path == os.path.join(pkgs[0], "__pycache__"))


def test_usable_dir_follows_the_file_system(tmp_path):
    from flashseg.kernel_cache import usable_dir

    assert usable_dir(str(tmp_path / "not" / "yet" / "there"))
    (tmp_path / "file").write_text("x")
    assert not usable_dir(str(tmp_path / "file"))
    assert not usable_dir(str(tmp_path / "file" / "below"))


def test_kernel_cache_fallback_uses_a_seeded_temporary_directory(tmp_path, monkeypatch):
    import hashlib

    from flashseg import kernel_cache

    core = tmp_path / "site" / "flashseg" / "core"
    (core / "__pycache__").mkdir(parents=True)
    (core / "__pycache__" / "cpu_kernels.f-10.py311.nbi").write_bytes(b"index")
    (core / "__pycache__" / "cpu_kernels.f-10.py311.1.nbc").write_bytes(b"code")
    (core / "__pycache__" / "cpu_kernels.cpython-311.pyc").write_bytes(b"pyc")
    monkeypatch.setattr(kernel_cache, "NOTICE", None)
    env = {"HOME": str(tmp_path / "home")}
    temp = kernel_cache.ensure_writable_cache([str(core)], env, usable=lambda path: False)
    try:
        assert temp and env["NUMBA_CACHE_DIR"] == temp and os.path.isdir(temp)
        assert "numba cannot write its kernel cache" in kernel_cache.NOTICE and temp in kernel_cache.NOTICE
        assert "\n" not in kernel_cache.NOTICE
        # where numba's NUMBA_CACHE_DIR locator looks for core/*.py
        from numba.core.caching import UserProvidedCacheLocator

        subdir = os.path.join(temp, UserProvidedCacheLocator.get_suitable_cache_subpath(str(core / "cpu_kernels.py")))
        assert subdir.endswith("core_" + hashlib.sha1(str(core).encode()).hexdigest())
        assert sorted(os.listdir(subdir)) == ["cpu_kernels.f-10.py311.1.nbc", "cpu_kernels.f-10.py311.nbi"]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    monkeypatch.setattr(kernel_cache, "NOTICE", None)
    assert kernel_cache.ensure_writable_cache([str(core)], {"HOME": "/"}, usable=lambda path: True) is None
    assert kernel_cache.NOTICE is None


@pytest.mark.slow
def test_decode_where_no_cache_directory_is_writable(tmp_path):
    """A read-only install run by a user whose home is not writable (docker run --user 12345):
    numba used to refuse ("cannot cache function ...: no locator available"). Root writes
    everywhere, so files stand where the cache directories would go."""
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(flashseg.__file__), site / "flashseg",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    for package in ("core", "io"):
        (site / "flashseg" / package / "__pycache__").write_text("not a directory")
    (tmp_path / "home").write_text("not a directory either")
    work = tmp_path / "work"
    work.mkdir()
    write_model(work / "m.yaml", bin_size=BS)
    write_tracks(work / "t.h5", {"chr1": 30})
    env = dict(os.environ, PYTHONPATH=str(site), HOME=str(tmp_path / "home"))
    for key in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-m", "flashseg", "decode", "-m", "m.yaml", "-t", "t.h5", "-o", "out.bed"],
                         env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "no locator" not in out.stderr
    assert out.stderr.count("numba cannot write its kernel cache") == 1, out.stderr
    assert str(site / "flashseg") in out.stderr
    assert (work / "out.bed").read_text().count("chr1\t") >= 1
