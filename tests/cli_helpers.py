"""Shared test helpers for the I/O and CLI tests: small inputs and a stand-in core.

The stand-in (`fake_decode_contigs`) is a deliberately simple decoder with
the core's calling convention (docs/algorithms.md shapes, per-bin chunks in ascending
order). It lets the I/O tests check formatting, ordering and atomicity
independently of the inference; decode tests against the real core live in
test_cli_decode.py and are used as soon as flashseg.core provides it.
"""
from __future__ import annotations

import math
import types

import numpy as np

from flashseg.core.results import ContigResult, SegmentCalls, Segments
from flashseg.io.tracks import TracksWriter


def softmax(x):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=1, keepdims=True)


def fake_decode_contig(model, emissions, n_bins, *, name="", method="viterbi", merge_adjacent=False,
                       per_bin=None, n_samples=0, seed=0, chunk_size=32768, device="cpu"):
    """Per-bin softmax as 'gamma', runs of its argmax as segments; per-bin chunks streamed."""
    labels = np.empty(n_bins, dtype=np.int64)
    gamma_sums = []
    prev_gamma = None
    for a in range(0, n_bins, chunk_size):
        b = min(n_bins, a + chunk_size)
        x = emissions(a, b)
        assert x.shape == (b - a, model.n_labels) and x.dtype == np.float64
        g = softmax(x)
        labels[a:b] = g.argmax(axis=1)
        prev = np.vstack([prev_gamma[-1:] if prev_gamma is not None else g[:1], g[:-1]])
        change = 1.0 - (g * prev).sum(axis=1)
        if a == 0:
            change[0] = 1.0
        if per_bin is not None:
            per_bin.chunk(a, g, change.copy(), change)
        prev_gamma = g
        gamma_sums.append(g)
    gamma = np.vstack(gamma_sums) if gamma_sums else np.zeros((0, model.n_labels))
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate(([0], edges)) if n_bins else np.zeros(0, np.int64)
    ends = np.concatenate((edges, [n_bins])) if n_bins else np.zeros(0, np.int64)
    lab = labels[starts] if n_bins else np.zeros(0, np.int64)
    label_post = np.array([gamma[s:e, c].mean() for s, e, c in zip(starts, ends, lab)])
    calls = SegmentCalls(starts.astype(np.int64), ends.astype(np.int64), lab.astype(np.int32),
                         seg_post=label_post * 0.9, start_post=np.full(len(starts), 0.75),
                         end_post=np.full(len(starts), 0.5), label_post=label_post)
    samples = [Segments(calls.start.copy(), calls.end.copy(), calls.label.copy()) for _ in range(n_samples)]
    return ContigResult(name, n_bins, float(n_bins) * -1.5, None if method == "posterior" else -2.25 * n_bins,
                        calls, samples, seconds=0.001)


def fake_decode_contigs(model, jobs, *, threads=1, **kwargs):
    for job in jobs:
        yield fake_decode_contig(model, job["emissions"], job["n_bins"], name=job["name"],
                                 per_bin=job.get("per_bin"), **kwargs)


def disk_full_after_first_contig(model, jobs, **kwargs):
    """fake_decode_contigs for the first contig, then the disk fills up (a run that fails midway)."""
    jobs = list(jobs)
    yield from fake_decode_contigs(model, jobs[:1], **kwargs)
    raise OSError(28, "No space left on device")


def write_tracks(path, contigs, labels=("A", "B"), bin_size=10, score="log_likelihood", dtype="float32",
                 seed=0, values=None, lengths=None, contigs_attr=True):
    """contigs: {name: n_bins}; values: {name: array} overrides the random scores."""
    rng = np.random.default_rng(seed)
    with TracksWriter(path, labels=list(labels), bin_size=bin_size, score=score, dtype=dtype) as w:
        for name, n in contigs.items():
            w.add_contig(name, n, length_bp=(lengths or {}).get(name))
            x = values[name] if values and name in values else rng.normal(size=(n, len(labels)))
            w.write(name, 0, x)
    if not contigs_attr:
        import h5py

        with h5py.File(path, "a") as f:
            del f.attrs["contigs"]
    return str(path)


def write_fasta(path, contigs, seed=0, n_runs=None):
    """contigs: {name: length}; n_runs: {name: [(start, end), ...]} of N."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for name, length in contigs.items():
            seq = np.array(list("ACGT"))[rng.integers(0, 4, length)]
            for s, e in (n_runs or {}).get(name, []):
                seq[s:e] = "N"
            text = "".join(seq)
            f.write(f">{name}\n")
            for i in range(0, length, 60):
                f.write(text[i:i + 60] + "\n")
    return str(path)


MODEL_YAML = """\
name: test-two
bin_size: {bin_size}
max_duration: 8
tail: geometric
labels:
  - name: A
    color: "255,0,0"
    strand: "."
    duration: {{family: geometric, mean: 4}}
  - name: B
    color: "0,0,255"
    strand: "+"
    duration: {{family: geometric, mean: 4}}
initial: uniform
final: free
transitions:
  A: {{B: 1.0}}
  B: {{A: 1.0}}
"""


def write_model(path, bin_size=10, text=None):
    with open(path, "w") as f:
        f.write(text if text is not None else MODEL_YAML.format(bin_size=bin_size))
    return str(path)


def fake_spec(path="model.yaml", bin_size=10, labels=("A", "B")):
    """A ModelSpec look-alike for tests that must not depend on the YAML loader."""
    from flashseg.core.model import SemiMarkovModel

    C = len(labels)
    K = 8
    dur = np.log(np.full((K, C), 1.0 / K))
    with np.errstate(divide="ignore"):  # log 0 = -inf: no self-transitions
        trans = np.log(np.where(np.eye(C) > 0, 0.0, 1.0 / max(1, C - 1))) if C > 1 else np.zeros((1, 1))
    model = SemiMarkovModel(dur, None, trans, np.full(C, -math.log(C)), np.zeros(C))
    colors = ["255,0,0", "0,0,255", "0,128,0", "128,128,128"]
    strands = [".", "+", "-", "."]
    return types.SimpleNamespace(
        name="fake", bin_size=bin_size, max_duration=K, tail="none", path=str(path), sha256="0" * 64,
        labels=[types.SimpleNamespace(name=n, color=colors[i % 4], strand=strands[i % 4])
                for i, n in enumerate(labels)],
        label_names=list(labels), model=model, warnings=[], mean_durations=np.full(C, 4.5),
        tail_rho=np.full(C, np.nan), transition_probabilities=np.exp(trans), coverage=None)


def run_main(argv, capsys):
    """Run the real entry point in-process: (exit code, stdout, stderr)."""
    from flashseg.cli import main

    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def real_core_works() -> bool:
    """True when flashseg.core decodes a tiny input (the lead's core is under active development)."""
    try:
        from flashseg.core import ArrayEmissions, decode_contig  # noqa: F401
    except ImportError:
        return False
    return True


def stand_in_workspace(tmp_path, monkeypatch, bin_size=10):
    """A good decode workspace in ``tmp_path`` (the cwd): model m.yaml (labels A, B),
    tracks t.h5 (chr1 30 bins, chr2 7), FASTA g.fa; decoding uses the stand-in core,
    so tests built on it are about reading inputs and writing outputs."""
    monkeypatch.chdir(tmp_path)
    import flashseg.cli.decode as decode_module

    monkeypatch.setattr(decode_module, "_decode_contigs", lambda: fake_decode_contigs)
    write_model("m.yaml", bin_size=bin_size)
    write_tracks("t.h5", {"chr1": 30, "chr2": 7})
    write_fasta("g.fa", {"chr1": 295, "chr2": 70})
    return tmp_path
