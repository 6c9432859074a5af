"""FASTA genome: lengths, duplicate names, N gaps, and which contigs a run decodes."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from cli_helpers import write_fasta, write_tracks
import flashseg.io.fasta as fasta_module
from flashseg.errors import DataError
from flashseg.io.fasta import open_genome
from flashseg.plan import Region, plan_contigs
from flashseg.io.tracks import open_track_set


def test_lengths_order_and_index(tmp_path):
    path = write_fasta(tmp_path / "g.fa", {"chr2": 70, "chr1": 125})
    with open_genome(path) as g:
        assert g.names == ["chr2", "chr1"] and g.lengths == {"chr2": 70, "chr1": 125}
    assert (tmp_path / "g.fa.fai").exists()


def test_whitespace_truncated_duplicates(tmp_path):
    path = tmp_path / "g.fa"
    path.write_text(">chr1 assembled\nACGT\n>chr1 unplaced\nAC\n")
    with pytest.raises(DataError, match="duplicate contig name 'chr1'"):
        open_genome(path)


@pytest.mark.parametrize("block", [3, 7, 1 << 22])
def test_gaps_independent_of_scan_block(tmp_path, monkeypatch, block):
    monkeypatch.setattr(fasta_module, "_SCAN_BLOCK", block)
    path = write_fasta(tmp_path / "g.fa", {"a": 40}, n_runs={"a": [(0, 7), (10, 12), (20, 40)]})
    with open_genome(path) as g:
        assert g.gaps("a", 1) == [(0, 7), (10, 12), (20, 40)]
        assert g.gaps("a", 5) == [(0, 7), (20, 40)]
        # bins of 4 bp fully inside a gap: bin 0 (0-4), bins 5..9 (20-40)
        np.testing.assert_array_equal(g.gap_bins("a", 4, 5, 10), [[0, 1], [5, 10]])


def test_plan_skips_with_warning_and_hint(tmp_path, caplog):
    tracks = open_track_set([write_tracks(tmp_path / "t.h5", {"chr1": 10, "chrE": 0}, bin_size=10)])
    genome = open_genome(write_fasta(tmp_path / "g.fa", {"2": 50, "chr1": 95, "chrE": 3}))
    # the CLI's logging setup stops propagation to the root logger, so listen on "flashseg" itself
    logger = logging.getLogger("flashseg")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="flashseg"):
            plan = plan_contigs(tracks, genome)
    finally:
        logger.removeHandler(caplog.handler)
    assert [j.name for j in plan.jobs] == ["chr1"]
    assert [(s[0], s[2]) for s in plan.skipped] == [("2", "not in the tracks"), ("chrE", "0 bins")]
    assert "skipping 2 contig(s)" in caplog.text and "2, chrE" in caplog.text
    tracks.close()
    genome.close()


def test_plan_contig_order_and_region(tmp_path):
    tracks = open_track_set([write_tracks(tmp_path / "t.h5", {"b": 10, "a": 10}, bin_size=10)])
    genome = open_genome(write_fasta(tmp_path / "g.fa", {"a": 100, "b": 91}))
    plan = plan_contigs(tracks, genome, contigs=["b", "a"])
    assert [j.name for j in plan.jobs] == ["a", "b"]  # FASTA order
    job = plan_contigs(tracks, genome, region=Region.parse("b:25-61")).jobs[0]
    assert (job.offset, job.n_bins, job.length_bp) == (2, 5, 91)  # bins 2..6 cover bp 24..70
    with pytest.raises(DataError, match="beyond the contig length 91"):
        plan_contigs(tracks, genome, region=Region.parse("b:25-92"))
    tracks.close()
    genome.close()


def test_region_parse():
    assert Region.parse("chrUn:x:1-10") == Region("chrUn:x", 0, 10)
    assert Region.parse("chr1:1,000-2,000") == Region("chr1", 999, 2000)
    for bad in ["chr1", "chr1:0-5", "chr1:9-5", "chr1:a-b"]:
        with pytest.raises(ValueError):
            Region.parse(bad)
