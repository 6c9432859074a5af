"""The Snakefile: lint, dry runs, and a real run whose gathered BED equals one whole-genome decode."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAKEMAKE = shutil.which("snakemake", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(SNAKEMAKE is None,
                                reason="snakemake is not installed (pip install 'flashseg[workflow]')")
TINY = os.path.join("tests", "data", "tiny-workflow")


@pytest.fixture()
def workdir(tmp_path):
    """A copy of the workflow and the tiny genome (no .fai: the faidx rule makes it)."""
    shutil.copy(os.path.join(ROOT, "Snakefile"), tmp_path)
    shutil.copytree(os.path.join(ROOT, "configs"), tmp_path / "configs")
    shutil.copytree(os.path.join(ROOT, "profiles"), tmp_path / "profiles")
    (tmp_path / TINY).mkdir(parents=True)
    for name in ("genome.fa", "reads.bam", "reads.bam.bai"):
        shutil.copy(os.path.join(ROOT, TINY, name), tmp_path / TINY / name)
    return tmp_path


def env():
    # the rules call `flashseg` and `python`: use this interpreter's
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return dict(os.environ, PATH=path)


def snakemake(workdir, *args, timeout=300):
    return subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def test_lint(workdir):
    result = snakemake(workdir, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run(workdir):
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    for rule in ("faidx", "coverage", "contigs", "gather"):
        assert rule in result.stdout
    assert "gather_bigbed" not in result.stdout
    assert not (workdir / "results").exists()
    config = yaml.safe_load((workdir / "configs" / "workflow.yaml").read_text())
    config["gather"]["bigbed"] = True
    (workdir / "bigbed.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "--cores", "2", "--configfile", "bigbed.yaml")
    assert result.returncode == 0 and "gather_bigbed" in result.stdout, result.stdout + result.stderr


def test_dry_run_with_slurm_profile(workdir):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the SLURM executor plugin is not installed")
    result = snakemake(workdir, "--workflow-profile", "profiles/slurm", "-n")
    assert result.returncode == 0, result.stdout + result.stderr


def _body(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [line for line in handle if not line.startswith("##")]


def _run_and_compare(workdir, n_samples):
    config = yaml.safe_load((workdir / "configs" / "workflow.yaml").read_text())
    config["decode"]["samples"] = n_samples
    config["decode"]["seed"] = 17
    config["gather"]["bigbed"] = not n_samples
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2", "--configfile", "run.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = workdir / "results"
    assert (workdir / TINY / "genome.fa.fai").exists()
    assert (out / "tiny.bed.gz.tbi").exists()
    assert sorted(p.name for p in (out / "tiny" / "contigs").iterdir()) == ["chrT1.bed", "chrT2.bed"]
    for log in ("coverage.log", "contigs.log", "gather.log", "decode/chrT1.log", "decode/chrT2.log"):
        assert (out / "logs" / "tiny" / log).exists()

    command = [sys.executable, "-m", "flashseg", "decode", "-m", "configs/models/copy-number.yaml",
               "-t", "results/tiny/coverage.h5", "--fasta", f"{TINY}/genome.fa", "--device", "cpu",
               "--seed", "17", "-o", "whole.bed"]
    if n_samples:
        command += ["--samples", str(n_samples), "--samples-out", "whole.samples.bed"]
    whole = subprocess.run(command, cwd=workdir, env=env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    gathered = _body(out / "tiny.bed.gz")
    assert gathered == _body(workdir / "whole.bed")
    if config["gather"]["bigbed"]:
        import pybigtools

        with pybigtools.open(str(out / "tiny.bb")) as reader:
            records = [(chrom, str(r[0]), str(r[1]), *r[2:]) for chrom in reader.chroms()
                       for r in reader.records(chrom)]
        assert records == [tuple(line.rstrip("\n").split("\t")) for line in gathered[1:]]
    else:
        assert not (out / "tiny.bb").exists()
    if n_samples:
        samples = _body(out / "tiny.samples.bed")
        assert samples == _body(workdir / "whole.samples.bed")
        assert {line.split("\t")[4].strip() for line in samples[1:]} == {str(i) for i in range(n_samples)}
    return gathered


@pytest.mark.slow
def test_real_run_equals_whole_genome_decode(workdir):
    gathered = _run_and_compare(workdir, 0)
    # the calls find the simulated events of the tiny genome
    names = [line.split("\t")[3] for line in gathered[1:]]
    assert {"del-hom", "del-het", "dup", "amp"} <= set(names)


@pytest.mark.slow
def test_real_run_samples_equal_whole_genome_samples(workdir):
    _run_and_compare(workdir, 3)


def _run_of_your_own(workdir, model, contigs, sample, evidence):
    """Simulate ``contigs`` from ``model`` into sim/, then run the workflow on one
    sample whose ``evidence`` (tracks or observations) is the simulated file, without a FASTA."""
    made = subprocess.run([sys.executable, "-m", "flashseg", "simulate", "-m", model,
                           *[arg for contig in contigs for arg in ("--contig", contig)], "-o", "sim"],
                          cwd=workdir, env=env(), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    (workdir / "mine.yaml").write_text(f"model: {model}\nfasta: null\nsamples:\n  {sample}:\n"
                                       f"    {evidence}: [sim/{evidence}.h5]\n")
    result = snakemake(workdir, "--cores", "2", "--configfile", "mine.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_run_of_your_own_never_runs_the_bundled_demo_and_needs_no_fasta(workdir):
    """--configfile with a model and a tracks sample and no FASTA: the demo's BAM
    sample (which needs a coverage model) is not merged in, and no faidx runs."""
    _run_of_your_own(workdir, "configs/models/demo.yaml", ["chrA:60000", "chrB:40000"], "mine", "tracks")
    out = workdir / "results"
    assert sorted(p.name for p in out.iterdir()) == ["logs", "mine", "mine.bed.gz", "mine.bed.gz.tbi"]
    assert not (workdir / TINY / "genome.fa.fai").exists()
    gathered = _body(out / "mine.bed.gz")
    assert {line.split("\t")[0] for line in gathered[1:]} == {"chrA", "chrB"}


def test_an_observations_sample_equals_a_whole_genome_decode(workdir):
    """A sample of observations (scored with the model's emissions section) goes
    through info --contigs, one decode per contig and gather like tracks do."""
    _run_of_your_own(workdir, "configs/models/marks-4.yaml", ["chrA:400000", "chrB:200000"], "marks",
                     "observations")
    whole = subprocess.run([sys.executable, "-m", "flashseg", "decode", "-m", "configs/models/marks-4.yaml",
                            "--observations", "sim/observations.h5", "--device", "cpu", "-o", "whole.bed"],
                           cwd=workdir, env=env(), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    gathered = _body(workdir / "results" / "marks.bed.gz")
    assert gathered == _body(workdir / "whole.bed") and len(gathered) > 2


def test_a_config_with_samples_but_no_model_is_an_error(workdir):
    (workdir / "half.yaml").write_text("samples:\n  mine:\n    tracks: [x.h5]\n")
    result = snakemake(workdir, "-n", "--configfile", "half.yaml")
    assert result.returncode != 0 and "give `model:`" in result.stdout + result.stderr
