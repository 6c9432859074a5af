"""The copy-number model finds simulated deletions and duplications in reads.

Every simulated event of >= 10 bins must be called with its label and both
boundaries within one bin (issue 5, item 7). Uses the real model file, the
real core and `flashseg decode --bam`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from flashseg.cli import main
from flashseg.io.model import load_model
from flashseg.io.simreads import simulate_reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "configs", "models", "copy-number.yaml")


def planned_events(rng, n_bins, labels):
    """Neutral background with events of 10..60 bins, >= 30 neutral bins apart."""
    neutral = labels.index("neutral")
    events = [labels.index(name) for name in ("del-hom", "del-het", "dup", "amp")]
    start, end, label = [], [], []
    pos = 0
    while True:
        gap = int(rng.integers(30, 120))
        size = int(rng.integers(10, 61))
        if pos + gap + size + 30 > n_bins:
            break
        start += [pos, pos + gap]
        end += [pos + gap, pos + gap + size]
        label += [neutral, int(rng.choice(events))]
        pos += gap + size
    start.append(pos)
    end.append(n_bins)
    label.append(neutral)
    return np.array(start), np.array(end), np.array(label)


def test_copy_number_events_called_within_one_bin(tmp_path, capsys):
    spec = load_model(MODEL)
    labels = list(spec.label_names)
    contigs = [("chrS1", 2_500_000), ("chrS2", 1_200_300)]
    rng = np.random.default_rng(11)
    segments = {name: planned_events(rng, -(-length // spec.bin_size), labels) for name, length in contigs}
    bam_path = tmp_path / "cnv.bam"
    simulate_reads(bam_path, contigs, segments, spec, depth=60.0, read_length=100, seed=5)

    out = tmp_path / "calls.bed"
    with pytest.raises(SystemExit) as exc:
        main(["decode", "-m", MODEL, "--bam", str(bam_path), "--device", "cpu", "--threads", "1", "-o", str(out)])
        raise SystemExit(0)  # main() returns on success
    assert exc.value.code == 0, capsys.readouterr().err

    calls = {}
    for line in out.read_text().splitlines():
        if line.startswith("#"):
            continue
        chrom, s, e, name = line.split("\t")[:4]
        calls.setdefault(chrom, []).append((int(s) // spec.bin_size, -(-int(e) // spec.bin_size), name))
    n_events = 0
    for name, (start, end, label) in segments.items():
        for s, e, c in zip(start.tolist(), end.tolist(), label.tolist()):
            if labels[c] == "neutral" or e - s < 10:
                continue
            n_events += 1
            hits = [(cs, ce, cl) for cs, ce, cl in calls[name]
                    if cl == labels[c] and abs(cs - s) <= 1 and abs(ce - e) <= 1]
            assert hits, f"{name}:{s}-{e} {labels[c]} not called within one bin; calls near it: " + str(
                [x for x in calls[name] if x[1] > s - 5 and x[0] < e + 5])
    assert n_events >= 20
