"""Regenerate the tiny workflow genome: two contigs and one simulated BAM.

    python tests/data/tiny-workflow/make_data.py

Copy-number events (1 kb bins of configs/models/copy-number.yaml) are fixed
below; reads follow each label's coverage mean at 40 reads per bin
(flashseg.io.simreads). The sequence is random ACGT: flashseg counts read
positions only. Output: genome.fa, genome.fa.fai, reads.bam, reads.bam.bai, truth.bed.
"""
import os

import numpy as np
import pysam

from flashseg.io.model import load_model
from flashseg.io.simreads import simulate_reads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CONTIGS = [("chrT1", 400_000), ("chrT2", 249_500)]  # chrT2 ends in a 500 bp bin
EVENTS = {  # (start bin, end bin, label)
    "chrT1": [(0, 100, "neutral"), (100, 140, "del-het"), (140, 250, "neutral"), (250, 290, "dup"),
              (290, 330, "neutral"), (330, 345, "del-hom"), (345, 400, "neutral")],
    "chrT2": [(0, 80, "neutral"), (80, 100, "amp"), (100, 180, "neutral"), (180, 200, "del-het"),
              (200, 250, "neutral")],
}


def main():
    spec = load_model(os.path.join(ROOT, "configs", "models", "copy-number.yaml"))
    index = {name: i for i, name in enumerate(spec.label_names)}
    rng = np.random.default_rng(2024)
    with open(os.path.join(HERE, "genome.fa"), "w") as fasta:
        for name, length in CONTIGS:
            seq = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, length)].tobytes().decode()
            fasta.write(f">{name}\n")
            for i in range(0, length, 60):
                fasta.write(seq[i:i + 60] + "\n")
    pysam.faidx(os.path.join(HERE, "genome.fa"))
    segments = {name: tuple(np.array(col) for col in zip(*[(s, e, index[l]) for s, e, l in events]))
                for name, events in EVENTS.items()}
    simulate_reads(os.path.join(HERE, "reads.bam"), CONTIGS, segments, spec, depth=40.0, read_length=100,
                   seed=7)
    with open(os.path.join(HERE, "truth.bed"), "w") as truth:
        for name, length in CONTIGS:
            for s, e, label in EVENTS[name]:
                truth.write(f"{name}\t{s * spec.bin_size}\t{min(e * spec.bin_size, length)}\t{label}\n")


if __name__ == "__main__":
    main()
