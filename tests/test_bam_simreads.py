"""Simulated reads: sorted, indexed, depth following each label's mean, reproducible."""
from __future__ import annotations

import numpy as np
import pysam
import pytest

from bam_helpers import fake_spec
from flashseg.errors import DataError
from flashseg.io import alignments
from flashseg.io import coverage
from flashseg.io.simreads import simulate_reads

CONTIGS = [("chrA", 200_050), ("chrB", 50_000)]
# bins of 100 bp: chrA has 2001 bins (the last one 50 bp), chrB 500
SEGMENTS = {
    "chrA": (np.array([0, 600, 1200]), np.array([600, 1200, 2001]), np.array([1, 0, 2])),
    "chrB": (np.array([0]), np.array([500]), np.array([1])),
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    spec = fake_spec([0.0, 1.0, 2.0], bin_size=100)
    path = tmp_path_factory.mktemp("sim") / "reads.bam"
    simulate_reads(path, CONTIGS, SEGMENTS, spec, depth=20.0, read_length=75, seed=3)
    return str(path), spec


def test_sorted_indexed_and_within_contigs(simulated):
    path, _ = simulated
    with pysam.AlignmentFile(path) as f:
        assert f.has_index()
        assert f.header.to_dict()["HD"]["SO"] == "coordinate"
        previous = (-1, -1)
        for read in f.fetch(until_eof=True):
            key = (read.reference_id, read.reference_start)
            assert key >= previous
            previous = key
            assert read.reference_end <= f.get_reference_length(read.reference_name)
            assert read.mapping_quality == 60


def test_depth_follows_label_means(simulated):
    path, spec = simulated
    counts = alignments.count_contigs(path, CONTIGS, 100)
    a = counts["chrA"]
    assert a[600:1200].sum() == 0            # copy ratio 0: no reads
    for lo, hi, mean in [(0, 600, 20.0), (1200, 2000, 40.0)]:
        observed = a[lo:hi].mean()
        # Poisson: the mean of n bins has sd sqrt(mean / n)
        assert abs(observed - mean) < 5 * np.sqrt(mean / (hi - lo))
        assert abs(a[lo:hi].var() / mean - 1) < 0.3  # Poisson dispersion
    assert a[2000] < 40  # the 50 bp last bin gets half the reads
    assert abs(counts["chrB"].mean() - 20.0) < 5 * np.sqrt(20 / 500)
    depth = coverage.estimate_depth(path, CONTIGS, 100)
    covered = np.concatenate([a[:2000], counts["chrB"]])  # full bins only
    assert depth == np.median(covered[covered > 0])
    assert 20 < depth < 40  # 1100 bins at level 1 and 800 at level 2


def test_reproducible_and_per_contig_seeded(tmp_path, simulated):
    path, spec = simulated
    again = tmp_path / "again.bam"
    only_b = tmp_path / "only_b.bam"
    simulate_reads(again, CONTIGS, SEGMENTS, spec, depth=20.0, read_length=75, seed=3)
    simulate_reads(only_b, CONTIGS, {"chrB": SEGMENTS["chrB"]}, spec, depth=20.0, read_length=75, seed=3)
    first = alignments.count_contigs(path, CONTIGS, 100)
    second = alignments.count_contigs(again, CONTIGS, 100)
    third = alignments.count_contigs(only_b, CONTIGS, 100)
    np.testing.assert_array_equal(first["chrA"], second["chrA"])
    np.testing.assert_array_equal(first["chrB"], third["chrB"])
    assert third["chrA"].sum() == 0
    other_seed = tmp_path / "seed4.bam"
    simulate_reads(other_seed, CONTIGS, SEGMENTS, spec, depth=20.0, read_length=75, seed=4)
    assert not np.array_equal(first["chrB"], alignments.count_contigs(other_seed, CONTIGS, 100)["chrB"])


def test_errors_and_no_partial_file(tmp_path):
    spec = fake_spec([1.0], bin_size=100)
    target = tmp_path / "x.bam"
    with pytest.raises(DataError, match="outside"):
        simulate_reads(target, [("c", 1000)], {"c": ([0], [11], [0])}, spec, depth=5.0)
    assert list(tmp_path.iterdir()) == []
    spec.coverage = None
    with pytest.raises(DataError, match="coverage section"):
        simulate_reads(target, [("c", 1000)], {"c": ([0], [10], [0])}, spec, depth=5.0)
