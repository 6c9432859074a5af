"""flashseg decode end to end with the real core: simulate a genome, decode it, check every output."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import fake_decode_contig, run_main, write_tracks
from flashseg.cli import cli
from flashseg.io.bed import BED_HEADER
from flashseg.io.tracks import open_tracks

DEMO_MODEL = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "demo.yaml")
CONTIGS = {"chr1": 60000, "chr2": 40000, "chrM": 1030}  # 300, 200, 6 bins of 200 bp


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    result = CliRunner().invoke(cli, ["simulate", "-m", DEMO_MODEL, "--seed", "5", "--n-gap", "3000", "-o", str(d)]
                                + sum((["--contig", f"{n}:{L}"] for n, L in CONTIGS.items()), []))
    assert result.exit_code == 0, result.output
    return d


def decode(sim, tmp_path, *args, expect=0):
    argv = ["decode", "-m", str(sim / "model.yaml"), "-t", str(sim / "tracks.h5"), "--fasta", str(sim / "genome.fa"),
            *args]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def data_lines(path):
    return [line.rstrip("\n").split("\t") for line in open(path) if not line.startswith("#")]


def test_bed_tiles_each_contig_in_fasta_order(sim, tmp_path):
    out, stats = tmp_path / "o.bed", tmp_path / "s.tsv"
    decode(sim, tmp_path, "-o", str(out), "--stats", str(stats))
    lines = open(out).read().splitlines()
    assert lines[0].startswith("##flashseg version=") and BED_HEADER in lines
    assert any(line.startswith("##flashseg model=") and "sha256=" in line for line in lines)
    rows = data_lines(out)
    assert list(dict.fromkeys(r[0] for r in rows)) == list(CONTIGS)
    for name, length in CONTIGS.items():
        segs = [r for r in rows if r[0] == name]
        assert segs[0][1] == "0" and segs[-1][2] == str(length)
        assert all(a[2] == b[1] for a, b in zip(segs, segs[1:]))
        for r in segs:
            assert r[6:8] == r[1:3] and 0 <= float(r[9]) <= 1 + 1e-9 and 0 <= float(r[12]) <= 1 + 1e-9
            assert abs(int(r[4]) - 1000 * float(r[9])) <= 0.5 + 1e-3
        assert float(segs[0][10]) == 1 and float(segs[-1][11]) == 1
    st = [line.split("\t") for line in open(stats).read().splitlines()]
    assert st[0] == ["#contig", "bins", "log_partition", "viterbi_score", "segments", "seconds", "status"]
    assert [r[0] for r in st[1:]] == list(CONTIGS) and all(r[6] == "ok" for r in st[1:])
    assert [int(r[1]) for r in st[1:]] == [300, 200, 6]
    assert all(float(r[3]) <= float(r[2]) for r in st[1:])  # MAP score <= logZ
    assert [int(r[4]) for r in st[1:]] == [sum(1 for x in rows if x[0] == n) for n in CONTIGS]


def test_calls_recover_the_simulated_truth(sim, tmp_path):
    out = tmp_path / "o.bed"
    decode(sim, tmp_path, "-o", str(out), "--gap-min", "1000")
    from flashseg.cli.demo import _agreement

    assert _agreement(str(sim / "truth.bed"), str(out)) > 0.85


def test_threads_and_chunk_size_do_not_change_outputs(sim, tmp_path):
    """One thread; a thread per contig; more threads than contigs, which also
    runs each contig's chunks at once (chunk-parallel passes)."""
    outs = []
    for threads, chunk in [(1, 32768), (3, 64), (5, 64)]:
        d = tmp_path / f"t{threads}"
        d.mkdir()
        decode(sim, d, "-o", str(d / "o.bed"), "--changes", str(d / "c.bg"), "--boundaries", str(d / "b.bg"),
               "--threads", str(threads), "--chunk-size", str(chunk), "--min-posterior", "0.01")
        outs.append([data_lines(d / "o.bed"), open(d / "c.bg").read(), open(d / "b.bg").read()])
    a = outs[0]
    for b in outs[1:]:
        assert a[1] == b[1] and a[2] == b[2]
        assert [r[:4] for r in a[0]] == [r[:4] for r in b[0]]
        np.testing.assert_allclose([float(x) for r in a[0] for x in r[9:]], [float(x) for r in b[0] for x in r[9:]],
                                   rtol=1e-5, atol=1e-6)


def test_changes_bedgraph_and_posteriors(sim, tmp_path):
    ch, post = tmp_path / "c.bg", tmp_path / "p.h5"
    decode(sim, tmp_path, "-o", str(tmp_path / "o.bed"), "--method", "posterior", "--changes", str(ch),
           "--posteriors", str(post), "--stats", str(tmp_path / "s.tsv"))
    rows = [line.split("\t") for line in open(ch).read().splitlines()]
    order = list(dict.fromkeys(r[0] for r in rows))
    assert order == [c for c in CONTIGS if c in order]
    for r in rows:
        s, e, v = int(r[1]), int(r[2]), float(r[3])
        assert s >= 200 and e <= CONTIGS[r[0]] and s % 200 == 0 and v >= 1e-4 and v <= 1 + 1e-6
    for a, b in zip(rows, rows[1:]):
        assert a[0] != b[0] or int(a[2]) < int(b[1]) or a[3] != b[3]  # equal neighbours merged
    with open_tracks(post) as f:
        assert f.score == "probability" and f.contigs == list(CONTIGS) and f.dtype("chr1") == "float32"
        g = f.read("chr2", 0, 200)
        np.testing.assert_allclose(np.exp(g).sum(axis=1), 1.0, atol=1e-5)
    st = [line.split("\t") for line in open(tmp_path / "s.tsv").read().splitlines()[1:]]
    assert all(r[3] == "NA" for r in st)


def test_region_keeps_genome_coordinates(sim, tmp_path):
    out, ch = tmp_path / "o.bed", tmp_path / "c.bg"
    decode(sim, tmp_path, "--region", "chr2:10001-20100", "-o", str(out), "--changes", str(ch))
    rows = data_lines(out)
    assert {r[0] for r in rows} == {"chr2"}
    assert rows[0][1] == "10000" and rows[-1][2] == "20200"  # bins 50..100 overlap the region
    assert all(10200 <= int(line.split("\t")[1]) and int(line.split("\t")[2]) <= 20200 for line in open(ch))


def test_samples_order_and_reproducibility(sim, tmp_path):
    paths = []
    for name, extra in [("a", ["--contig", "chr2", "--contig", "chrM"]), ("b", [])]:
        p = tmp_path / f"{name}.bed"
        decode(sim, tmp_path, "-o", str(tmp_path / f"{name}.o.bed"), "--samples", "3", "--samples-out", str(p),
               "--seed", "11", *extra)
        paths.append(p)
    lines = open(paths[0]).read().splitlines()
    assert lines[-0 - len(data_lines(paths[0])) - 1] == "#chrom\tstart\tend\tname\tsample"
    rows = data_lines(paths[0])
    keys = [(list(CONTIGS).index(r[0]), int(r[4]), int(r[1])) for r in rows]
    assert keys == sorted(keys) and {r[4] for r in rows} == {"0", "1", "2"}
    whole = [r for r in data_lines(paths[1]) if r[0] in ("chr2", "chrM")]
    assert whole == rows  # per-contig and whole-genome runs draw the same samples


def test_per_contig_runs_gathered_equal_whole_genome(sim, tmp_path):
    whole = tmp_path / "whole.bed"
    decode(sim, tmp_path, "-o", str(whole))
    parts = []
    for name in reversed(list(CONTIGS)):
        p = tmp_path / f"{name}.bed"
        decode(sim, tmp_path, "--contig", name, "-o", str(p))
        parts.append(str(p))
    gathered = tmp_path / "all.bed.gz"
    result = CliRunner().invoke(cli, ["gather", *parts, "--fasta", str(sim / "genome.fa"), "-o", str(gathered)])
    assert result.exit_code == 0, result.output
    import gzip

    text = gzip.open(gathered, "rt").read()
    assert [line for line in text.splitlines() if not line.startswith("##")] == \
        [line for line in open(whole).read().splitlines() if not line.startswith("##")]
    assert "##flashseg command=" in text and os.path.exists(str(gathered) + ".tbi")


def test_stdout_is_the_default(sim, tmp_path):
    result = decode(sim, tmp_path, "--contig", "chrM")
    assert BED_HEADER in result.output and "chrM\t0\t" in result.output


def test_per_bin_outputs_stay_in_fasta_order_when_later_contigs_finish_first(tmp_path, monkeypatch, capsys):
    """Consumers of later contigs get their chunks first; the files must still follow contig order."""
    import flashseg.cli.decode as decode_module
    from cli_helpers import fake_spec

    def reversed_core(model, jobs, *, threads=1, **kw):
        jobs = list(jobs)
        results = {}
        for job in reversed(jobs):
            results[job["name"]] = fake_decode_contig(model, job["emissions"], job["n_bins"], name=job["name"],
                                                      per_bin=job.get("per_bin"), **kw)
        for job in jobs:
            yield results[job["name"]]

    monkeypatch.setattr(decode_module, "_decode_contigs", lambda: reversed_core)
    monkeypatch.setattr(decode_module, "load_model_spec", lambda p: fake_spec(p))
    import flashseg.io.perbin as perbin_module

    monkeypatch.setattr(perbin_module, "_BUFFER_CHARS", 64)  # force spilling to the temp files
    monkeypatch.chdir(tmp_path)
    names = {f"c{i}": 20 + i for i in range(6)}
    write_tracks("t.h5", names)
    open("m.yaml", "w").write("unused")
    rc, out, err = run_main(["decode", "-m", "m.yaml", "-t", "t.h5", "--changes", "c.bg", "-o", "o.bed",
                             "--min-posterior", "0"], capsys)
    assert rc == 0, err
    order = list(dict.fromkeys(line.split("\t")[0] for line in open("c.bg")))
    assert order == list(names)
    assert sorted(os.listdir(".")) == ["c.bg", "m.yaml", "o.bed", "t.h5"]


def test_closed_stdout_pipe_ends_quietly(sim):
    cmd = (f"{sys.executable} -m flashseg decode -m {sim / 'model.yaml'} -t {sim / 'tracks.h5'} --chunk-size 64 "
           f"| head -c 10")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "##flashseg" and proc.stderr == ""


# The run is slowed down so the signal lands mid-run: in plain Python (reads
# on the worker thread; the signal is sent once temporaries exist), or while
# the main thread sleeps inside a C library's Python callback (as when numba
# compiles; sent once the callback has started), where the handler's
# SystemExit is swallowed and the stop must still happen.
_SLOW = {
    "python": ("import flashseg.io.tracks as t\n"
               "orig = t.TrackSet.read\n"
               "def read(self, *a):\n    time.sleep(0.05)\n    return orig(self, *a)\n"
               "t.TrackSet.read = read\n"),
    "C callback": ("import flashseg.core as core\n"
                   "orig = core.decode_contigs\n"
                   "def in_callback():\n"
                   "    open(MARKER, 'w').close()\n"
                   "    time.sleep(5)\n"
                   "def decode_contigs(*a, **kw):\n"
                   "    for result in orig(*a, **kw):\n"
                   "        yield result\n"
                   "        ctypes.CFUNCTYPE(None)(in_callback)()\n"
                   "core.decode_contigs = decode_contigs\n"),
}


@pytest.mark.parametrize("where", sorted(_SLOW))
def test_sigterm_removes_temporaries(sim, tmp_path, where):
    """SLURM's SIGTERM: exit 143, no output file, no temporary left, no traceback."""
    slow = tmp_path / "slow.py"
    marker = tmp_path / "in-callback"
    slow.write_text(f"import ctypes, time\nMARKER = {str(marker)!r}\n" + _SLOW[where]
                    + "import sys\nfrom flashseg.cli import main\nsys.argv[0] = 'flashseg'\nmain()\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(slow), "decode", "-m", str(sim / "model.yaml"), "-t",
                             str(sim / "tracks.h5"), "--chunk-size", "8", "--threads", "1", "-o", str(out / "o.bed"),
                             "--changes", str(out / "c.bg")], stderr=subprocess.PIPE, text=True)

    def ready():
        if where == "C callback":
            return marker.exists()
        return any(n.endswith(".tmp") for n in os.listdir(out))

    deadline = time.time() + 60
    while time.time() < deadline and not ready():
        time.sleep(0.05)
    assert ready(), "the run ended before the signal could be sent"
    time.sleep(0.3)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert os.listdir(out) == [], os.listdir(out)
    assert "Traceback" not in err and "ignored" not in err, err
