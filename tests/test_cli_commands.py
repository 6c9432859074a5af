"""info, validate, simulate, gather, demo, and the command line's startup and help."""
from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cli_helpers import run_main, write_fasta, write_model, write_tracks
from flashseg.cli import cli

DEMO_MODEL = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "demo.yaml")


def invoke(*argv, code=0):
    result = CliRunner().invoke(cli, list(argv), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from flashseg.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('numba', 'torch', 'triton', 'h5py', 'pysam', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out and "decode" in out and "simulate" in out


def test_version():
    from flashseg import __version__

    assert invoke("--version").strip().endswith(__version__)


def test_info_tracks_and_model(tmp_path):
    path = write_tracks(tmp_path / "t.h5", {"chr2": 7, "chr1": 3}, lengths={"chr2": 70}, dtype="float16")
    out = invoke("info", path)
    assert "labels\t2\tA, B" in out and "bin_size\t10" in out and "bins\t10" in out
    assert "chr2\t7\t70\tfloat16\tlzf" in out and "chr1\t3\tNA\tfloat16\tlzf" in out
    out = invoke("info", DEMO_MODEL)
    assert "max_duration\t64" in out and "Background\t200,200,200\t.\t" in out
    assert "#transitions (row = from, column = to)\tBackground\tEnhancer\tPromoter\tRepressed" in out
    assert "Background\t0\t0.45\t0.25\t0.3" in out


def test_info_contigs_lists_what_decode_would_decode(tmp_path, caplog):
    m = write_model(tmp_path / "m.yaml")
    t = write_tracks(tmp_path / "t.h5", {"chr1": 10, "chr2": 5, "chrE": 0})
    g = write_fasta(tmp_path / "g.fa", {"chr2": 50, "chrX": 10, "chr1": 100, "chrE": 4})
    assert invoke("info", "--contigs", "-m", m, "-t", t, "--fasta", g) == "chr2\nchr1\n"
    assert invoke("info", "--contigs", "-m", m, "-t", t) == "chr1\nchr2\n"


def test_validate_scans_every_value(tmp_path, capsys):
    import h5py
    import numpy as np

    m = write_model(tmp_path / "m.yaml")
    t = write_tracks(tmp_path / "t.h5", {"chr1": 100})
    out = invoke("validate", "-m", m, "-t", t)
    assert "decodable: 1 contigs, 100 bins" in out
    with h5py.File(t, "a") as f:
        f["tracks/chr1"][77, 1] = np.nan
    rc, out, err = run_main(["validate", "-m", m, "-t", t], capsys)
    assert rc == 1 and "contig chr1: bin 77: NaN" in err
    assert invoke("validate", "-m", m, "-t", t, "--nan-as-missing").count("ok") == 2


def test_simulate_is_reproducible(tmp_path):
    dirs = []
    for name in ("a", "b"):
        invoke("simulate", "-m", DEMO_MODEL, "--contig", "c1:20000", "--contig", "c2:999", "--seed", "3",
               "--n-gap", "500", "-o", str(tmp_path / name))
        dirs.append(tmp_path / name)
    assert sorted(os.listdir(dirs[0])) == ["genome.fa", "genome.fa.fai", "model.yaml", "tracks.h5", "truth.bed"]
    for f in ("genome.fa", "truth.bed"):
        assert filecmp.cmp(dirs[0] / f, dirs[1] / f, shallow=False)
    from flashseg.io.tracks import open_tracks

    with open_tracks(dirs[0] / "tracks.h5") as x, open_tracks(dirs[1] / "tracks.h5") as y:
        assert x.contigs == ["c1", "c2"] and x.n_bins("c2") == 5 and x.length_bp("c2") == 999
        assert (x.read("c1", 0, 100) == y.read("c1", 0, 100)).all()
    truth = [line.split("\t") for line in open(dirs[0] / "truth.bed") if not line.startswith("#")]
    assert truth[-1][0] == "c2" and truth[-1][2].strip() == "999"
    seq = "".join(line.strip() for line in open(dirs[0] / "genome.fa") if not line.startswith(">"))
    assert len(seq) == 20999 and "N" * 500 in seq and set(seq) == set("ACGTN")


def test_gather_rejects_conflicts(tmp_path, capsys):
    a, b = tmp_path / "a.bed", tmp_path / "b.bed"
    a.write_text("#h\nchr1\t0\t10\tA\n")
    b.write_text("#h\nchr1\t10\t20\tA\n")
    rc, _, err = run_main(["gather", str(a), str(b), "-o", str(tmp_path / "o.bed")], capsys)
    assert rc == 1 and "contig chr1: contig also in" in err and not (tmp_path / "o.bed").exists()
    b.write_text("#other\nchr2\t0\t20\tA\n")
    rc, _, err = run_main(["gather", str(a), str(b), "-o", str(tmp_path / "o.bed")], capsys)
    assert rc == 1 and "column header differs" in err


def test_demo_runs_from_anywhere(tmp_path):
    out = invoke("demo", "--outdir", str(tmp_path / "d"))
    assert "segments (BED9+4):" in out and "agreement with the simulated truth" in out
    assert sorted(os.listdir(tmp_path / "d")) == ["changes.bedgraph", "segments.bed", "stats.tsv"]
    agreement = float(out.split("agreement with the simulated truth: ")[1].split("%")[0])
    assert agreement > 90


def test_bundled_example_is_small():
    from flashseg.cli.demo import demo_dir

    size = sum(os.path.getsize(os.path.join(demo_dir(), f)) for f in os.listdir(demo_dir()))
    assert size < 1_000_000


def test_real_subprocess_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flashseg", "decode", "-m", DEMO_MODEL, "-t", DEMO_MODEL],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("flashseg: error: ") and "demo.yaml" in proc.stderr


def test_quiet_commands_print_nothing(tmp_path):
    # -q (before or after the subcommand) drops the "wrote ..." line; without it, it is there
    def run(*args):
        return subprocess.run([sys.executable, "-m", "flashseg", *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    loud = run("simulate", "-m", DEMO_MODEL, "--contig", "c:20000", "-o", "a")
    assert loud.returncode == 0 and loud.stderr.startswith("wrote a/tracks.h5"), loud.stderr
    for argv in (["-q", "simulate"], ["simulate", "-q"]):
        quiet = run(*argv, "-m", DEMO_MODEL, "--contig", "c:20000", "-o", f"b{len(argv[0])}")
        assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "", quiet.stderr
    quiet = run("tracks", "bigwig", "-q", "missing.h5", "-o", "d")
    assert quiet.returncode != 0 and quiet.stderr.startswith("flashseg: error:")   # errors still show


def test_info_contigs_of_observations(tmp_path):
    marks = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "marks-4.yaml")
    invoke("simulate", "-m", marks, "--contig", "chrB:20000", "--contig", "chrA:10000", "-o", str(tmp_path / "s"))
    obs, model = str(tmp_path / "s" / "observations.h5"), str(tmp_path / "s" / "model.yaml")
    listed = invoke("info", "--contigs", "-m", model, "--observations", obs)
    # the contigs decode would decode from these observations, in the same order
    decoded = invoke("decode", "-m", model, "--observations", obs, "-o", "-")
    order = list(dict.fromkeys(line.split("\t")[0] for line in decoded.splitlines() if not line.startswith("#")))
    assert listed.split() == order and sorted(order) == ["chrA", "chrB"]
    assert "go with --contigs" in CliRunner().invoke(cli, ["info", model, "--observations", obs]).output
