"""Nothing a user owns is destroyed, and a failed run publishes nothing
(docs/formats.md, "Publishing outputs").

Outputs are compared with inputs (and with each other) by file identity;
targets that are not regular files are written in place; a failed run
leaves neither outputs nor temporaries; a killed run's temporaries are
removed by the next run; a full disk and a closed stdout are one line.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cli_helpers import disk_full_after_first_contig, run_main, stand_in_workspace, write_model, write_tracks
from flashseg.io import output

BS = 10


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """model, tracks (two contigs), FASTA; the stand-in core; cwd = tmp_path."""
    return stand_in_workspace(tmp_path, monkeypatch, bin_size=BS)


def files_in(directory) -> set[str]:
    return set(os.listdir(directory))


BASE = ["decode", "-m", "m.yaml", "-t", "t.h5", "--fasta", "g.fa"]


# -- 1. outputs never overwrite inputs ---------------------------------------------

@pytest.mark.parametrize("extra,victim", [
    (["--posteriors", "t.h5"], "t.h5"),
    (["-o", "g.fa"], "g.fa"),
    (["--stats", "m.yaml"], "m.yaml"),
    (["--changes", "g.fa.fai"], "g.fa.fai"),
    (["--boundaries", "link-to-tracks.h5"], "t.h5"),       # a symlink to an input
    (["--samples-out", "hard-link.h5", "--samples", "1"], "t.h5"),   # a hard link to an input
])
def test_an_output_that_is_an_input_is_refused_before_any_work(ws, capsys, extra, victim):
    os.symlink("t.h5", "link-to-tracks.h5")
    os.link("t.h5", "hard-link.h5")
    run_main(BASE + ["-o", "first.bed"], capsys)        # makes g.fa.fai, as any run does
    before = {name: digest(name) for name in ("t.h5", "g.fa", "m.yaml", "g.fa.fai")}
    listing = files_in(ws)
    code, out, err = run_main(BASE + extra, capsys)
    assert code == 2, err
    assert err.startswith("flashseg: error: ") and err.count("\n") == 1, err
    assert "would overwrite the input" in err
    assert {name: digest(name) for name in before} == before
    assert files_in(ws) == listing, "nothing is written, not even a temporary"
    assert os.path.islink("link-to-tracks.h5")


def test_outputs_are_compared_with_each_other_and_their_indexes(ws, capsys):
    code, _, err = run_main(BASE + ["-o", "x.bed.gz", "--stats", "x.bed.gz.tbi"], capsys)
    assert code == 2 and "same file" in err and "x.bed.gz.tbi" in err, err
    code, _, err = run_main(BASE + ["-o", "a.bed", "--changes", "./sub/../a.bed"], capsys)
    assert code == 2 and "same file" in err, err
    assert not [name for name in files_in(ws) if name.startswith(("x.bed", "a.bed"))]


def test_other_commands_refuse_to_overwrite_their_inputs(ws, capsys):
    code, _, err = run_main(BASE + ["-o", "calls.bed"], capsys)
    assert code == 0, err
    before = digest("calls.bed")
    code, _, err = run_main(["gather", "calls.bed", "-o", "calls.bed"], capsys)
    assert code == 2 and "would overwrite the input" in err, err
    assert digest("calls.bed") == before
    model = digest("m.yaml")
    code, _, err = run_main(["tracks", "coverage", "--bam", "t.h5", "-m", "m.yaml", "-o", "m.yaml"], capsys)
    assert code in (1, 2) and digest("m.yaml") == model, err


def test_simulate_writes_only_into_a_new_or_empty_directory(ws, capsys):
    os.mkdir("sim")
    with open("sim/notes.txt", "w") as f:
        f.write("mine")
    args = ["simulate", "-m", "m.yaml", "--contig", "chr1:500", "-o", "sim"]
    code, _, err = run_main(args, capsys)
    assert code == 2 and "not empty" in err and "--force" in err, err
    assert files_in("sim") == {"notes.txt"}
    code, _, err = run_main(args + ["--force"], capsys)
    assert code == 0, err
    assert open("sim/notes.txt").read() == "mine"
    assert {"tracks.h5", "truth.bed", "genome.fa", "model.yaml"} <= files_in("sim")
    # The model may live in the directory it simulates into: it is left as it is.
    os.replace("m.yaml", "sim/model.yaml")
    mine = digest("sim/model.yaml")
    code, _, err = run_main(["simulate", "-m", "sim/model.yaml", "--contig", "chr1:500", "-o", "sim",
                             "--force"], capsys)
    assert code == 0, err
    assert digest("sim/model.yaml") == mine


# -- 2. targets that are not regular files ---------------------------------------------

def test_a_fifo_is_written_in_place(ws, capsys):
    os.mkfifo("calls.fifo")
    got = []
    reader = threading.Thread(target=lambda: got.append(open("calls.fifo").read()))
    reader.start()
    code, _, err = run_main(BASE + ["-o", "calls.fifo"], capsys)
    reader.join(timeout=30)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat("calls.fifo").st_mode)
    assert got and "#chrom\tstart" in got[0] and "chr1\t" in got[0]
    assert not [name for name in files_in(ws) if name.endswith(".tmp")]


def test_a_character_device_is_written_in_place(ws, capsys):
    if os.geteuid() != 0:
        pytest.skip("making a private character device (mknod) needs root")
    try:
        os.mknod("null-device", stat.S_IFCHR | 0o666, os.makedev(1, 3))   # a /dev/null of our own
    except PermissionError:
        pytest.skip("this machine does not allow mknod, even for root")
    code, _, err = run_main(BASE + ["-o", "null-device", "--changes", "null-device"], capsys)
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("null-device").st_mode)


def test_a_symlinked_target_stays_a_symlink(ws, capsys):
    os.mkdir("real")
    os.symlink("real/calls.bed", "calls.bed")
    code, _, err = run_main(BASE + ["-o", "calls.bed"], capsys)
    assert code == 0, err
    assert os.path.islink("calls.bed") and "#chrom" in open("real/calls.bed").read()


def test_hdf5_outputs_must_be_regular_files(ws, capsys):
    os.mkfifo("post.fifo")
    code, _, err = run_main(BASE + ["-o", "c.bed", "--posteriors", "post.fifo"], capsys)
    assert code == 2 and "regular file" in err, err
    assert not os.path.exists("c.bed")


# -- 3. a failed run publishes nothing ---------------------------------------------------

def test_a_failed_run_publishes_no_output_and_keeps_the_old_ones(ws, capsys, monkeypatch):
    import flashseg.cli.decode as decode_module

    for name in ("a.bed", "c.bedgraph", "s.tsv"):
        with open(name, "w") as f:
            f.write("an older run\n")

    monkeypatch.setattr(decode_module, "_decode_contigs", lambda: disk_full_after_first_contig)
    code, _, err = run_main(BASE + ["-o", "a.bed", "--changes", "c.bedgraph", "--stats", "s.tsv"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    for name in ("a.bed", "c.bedgraph", "s.tsv"):
        assert open(name).read() == "an older run\n"
    assert not [name for name in files_in(ws) if name.endswith(".tmp")]


def test_outputs_are_published_only_when_all_are_complete(ws, capsys, monkeypatch):
    """The first output finished is not renamed before the last one is."""
    published = []
    real = os.replace

    def spy(src, dst):
        published.append((os.path.basename(dst), {os.path.exists(n) for n in ("a.bed", "s.tsv")}))
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", spy)
    code, _, err = run_main(BASE + ["-o", "a.bed", "--stats", "s.tsv"], capsys)
    assert code == 0, err
    names = [name for name, _ in published]
    assert set(names) == {"a.bed", "s.tsv"} and published[0][1] == {False}


def _small_disk(path):
    """A 256 kB tmpfs at ``path``, or None where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                          capture_output=True)
    return path if done.returncode == 0 else None


def test_a_full_disk_is_one_line_naming_the_output(tmp_path):
    """On a real full disk (a small tmpfs) when this machine lets us mount one,
    else on a writer that fails as a full disk does."""
    disk = _small_disk(tmp_path / "disk") if os.geteuid() == 0 else None
    model = write_model(tmp_path / "m.yaml", bin_size=BS)
    try:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root, or mount refused); "
                        "test_a_write_error_names_the_output covers the messages")
        for _ in range(3):   # h5py's cleanup crashed (exit 139) in some runs, not all
            proc = subprocess.run([sys.executable, "-m", "flashseg", "simulate", "-m", model, "--contig",
                                   "chr1:2000000", "--contig", "chr2:1000000", "-o", str(disk / "sim")],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 1, proc.stderr[-2000:]
            assert proc.stderr.startswith("flashseg: error: ") and proc.stderr.count("\n") == 1, proc.stderr
            assert "No space left on device" in proc.stderr and str(disk / "sim") in proc.stderr
            assert os.listdir(disk / "sim") == [], "nothing published, no temporary left"
    finally:
        if disk is not None:
            subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_write_error_names_the_output(ws, capsys, monkeypatch):
    class Full:
        def __init__(self, stream):
            self.stream = stream

        def write(self, text):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.stream, name)

    real_open = output._TextTarget.open
    monkeypatch.setattr(output._TextTarget, "open", lambda self: output._Named(Full(real_open(self)), self.path))
    code, _, err = run_main(BASE + ["-o", "a.bed"], capsys)
    assert code == 1, err
    assert err == "flashseg: error: a.bed: cannot write output: No space left on device\n"
    assert not [name for name in files_in(ws) if name.startswith(".a.bed")]


# -- 4. killed runs and temporaries ----------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(ws, capsys):
    host = output._host()
    dead, alive = _dead_pid(), os.getppid()
    orphans = [f".a.bed.gz~{host}~{dead}~0badcafe.tmp", f".a.bed.gz.tbi~{host}~{dead}~12345678.tmp",
               f".a.bed.gz~{host}~{dead}~0badcafe.tmp.tbi", f".c.bedgraph~{host}~{dead}~deadbeef.3.tmp"]
    kept = [f".a.bed.gz~{host}~{alive}~0badcafe.tmp",        # its process is still running
            f".a.bed.gz~other-host~{dead}~0badcafe.tmp",     # another host's (a shared filesystem)
            f".a.bed.gzip~{host}~{dead}~0badcafe.tmp",       # another target's
            "notes.txt"]
    for name in orphans + kept:
        open(name, "w").close()
    code, _, err = run_main(BASE + ["-o", "a.bed.gz", "--changes", "c.bedgraph"], capsys)
    assert code == 0, err
    left = files_in(ws)
    assert not set(orphans) & left
    assert set(kept) <= left


def test_sigkill_leaves_temporaries_that_the_next_run_removes(tmp_path):
    """A real SIGKILL in the middle of a run: its temporaries stay, named by
    host and PID, and the next run of the same outputs removes them."""
    write_model(tmp_path / "m.yaml", bin_size=BS)
    write_tracks(tmp_path / "t.h5", {"chr1": 30})
    script = textwrap.dedent("""
        import sys, time
        import flashseg.cli.decode as d
        def hang(model, jobs, **kw):
            time.sleep(600)
            yield
        d._decode_contigs = lambda: hang
        from flashseg.cli import main
        main(["decode", "-m", "m.yaml", "-t", "t.h5", "-o", "a.bed", "--changes", "c.bedgraph"])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(n.startswith(".a.bed~") for n in os.listdir(tmp_path)):
            time.sleep(0.1)
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert temps and all(f"~{socket.gethostname()}~" in n or "~" in n for n in temps), os.listdir(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert any(n.startswith(".a.bed~") for n in os.listdir(tmp_path))
    again = subprocess.run([sys.executable, "-m", "flashseg", "decode", "-m", "m.yaml", "-t", "t.h5",
                            "-o", "a.bed", "--changes", "c.bedgraph"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")], os.listdir(tmp_path)


# -- 5. standard output -------------------------------------------------------------------

def test_a_closed_stdout_is_one_line(tmp_path):
    write_model(tmp_path / "m.yaml", bin_size=BS)
    write_tracks(tmp_path / "t.h5", {"chr1": 30})
    proc = subprocess.run([sys.executable, "-m", "flashseg", "decode", "-m", "m.yaml", "-t", "t.h5", "-o", "-"],
                          cwd=tmp_path, capture_output=False, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(1), timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "flashseg: error: standard output is not open: give -o FILE or leave stdout open\n"


def test_a_reader_that_closes_the_pipe_early_ends_quietly(tmp_path):
    write_model(tmp_path / "m.yaml", bin_size=BS)
    write_tracks(tmp_path / "t.h5", {"chr1": 3000})
    proc = subprocess.run(f"{sys.executable} -m flashseg decode -m m.yaml -t t.h5 | head -1", shell=True,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
