"""BAM coverage: counting vs a plain pysam loop, filters, likelihoods vs scipy, depth, errors."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pysam
import pytest
from scipy import stats

from bam_helpers import fake_spec, random_reads, reference_counts, write_bam
from flashseg.errors import DataError
from flashseg.io import alignments
from flashseg.io import bed
from flashseg import bins
from flashseg.core import coverage as core_coverage
from flashseg.io import coverage
from flashseg.io.reads import ReadFilter

CONTIGS = [("chr1", 23_456), ("chr2", 9_999)]


@pytest.fixture(scope="module")
def random_bam(tmp_path_factory):
    path = tmp_path_factory.mktemp("bam") / "random.bam"
    return write_bam(path, CONTIGS, random_reads(np.random.default_rng(7), CONTIGS, 4000))


@pytest.fixture(scope="module")
def paired_bam(tmp_path_factory):
    path = tmp_path_factory.mktemp("bam") / "paired.bam"
    return write_bam(path, CONTIGS, random_reads(np.random.default_rng(8), CONTIGS, 4000, paired=True))


@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "pysam"])
@pytest.mark.parametrize("bin_size", [1, 100, 1000])
@pytest.mark.parametrize("min_mapq", [0, 20])
def test_counts_match_plain_loop(random_bam, bin_size, min_mapq, fast):
    expected = reference_counts(random_bam, CONTIGS, bin_size, min_mapq=min_mapq)
    # small units: many fetch ranges per contig, reads straddling every edge
    got = alignments.count_contigs(random_bam, CONTIGS, bin_size, ReadFilter(min_mapq=min_mapq), unit_bp=1_700,
                            fast=fast)
    for name, _ in CONTIGS:
        assert got[name].dtype == np.int32
        np.testing.assert_array_equal(got[name], expected[name])


def test_counts_in_worker_processes_match(random_bam):
    one = alignments.count_contigs(random_bam, CONTIGS, 100, ReadFilter(), threads=1, unit_bp=5_000)
    two = alignments.count_contigs(random_bam, CONTIGS, 100, ReadFilter(), threads=2, unit_bp=5_000,
                            reads_per_process=0)  # force worker processes
    for name, _ in CONTIGS:
        np.testing.assert_array_equal(one[name], two[name])


@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "pysam"])
@pytest.mark.parametrize("max_fragment", [300, 1000])
def test_fragment_midpoints_match_plain_loop(paired_bam, max_fragment, fast):
    expected = reference_counts(paired_bam, CONTIGS, 100, fragments=True, max_fragment=max_fragment)
    got = alignments.count_contigs(paired_bam, CONTIGS, 100, ReadFilter(fragments=True, max_fragment=max_fragment),
                            unit_bp=1_300, fast=fast)
    for name, _ in CONTIGS:
        np.testing.assert_array_equal(got[name], expected[name])
    assert sum(int(c.sum()) for c in got.values()) > 100


@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "pysam"])
@pytest.mark.parametrize("flag,mapq,kept", [
    (0, 60, True), (16, 60, True), (0, 20, True), (0, 19, False),
    (0x4, 60, False), (0x100, 60, False), (0x200, 60, False), (0x400, 60, False), (0x800, 60, False),
])
def test_each_filter(tmp_path, flag, mapq, kept, fast):
    clean = {"contig": "chr1", "pos": 150, "flag": 0, "mapq": 60}
    probe = {"contig": "chr1", "pos": 250, "flag": flag, "mapq": mapq}
    path = write_bam(tmp_path / "f.bam", CONTIGS, [clean, probe])
    counts = alignments.count_contigs(path, CONTIGS, 100, ReadFilter(min_mapq=20), fast=fast)["chr1"]
    assert counts[1] == 1
    assert counts[2] == (1 if kept else 0)
    assert counts.sum() == (2 if kept else 1)


def test_fragments_need_proper_pairs_and_count_once(tmp_path):
    reads = [
        # a proper pair: leftmost mate tlen 300, its mate tlen -300 -> one midpoint at 1000 + 150
        {"contig": "chr1", "pos": 1000, "flag": 0x1 | 0x2, "tlen": 300},
        {"contig": "chr1", "pos": 1250, "flag": 0x1 | 0x2 | 0x10, "tlen": -300},
        # paired but not proper: dropped
        {"contig": "chr1", "pos": 5000, "flag": 0x1, "tlen": 300},
        # single-end: dropped in fragment mode
        {"contig": "chr1", "pos": 7000, "flag": 0},
    ]
    path = write_bam(tmp_path / "p.bam", CONTIGS, reads)
    counts = alignments.count_contigs(path, CONTIGS, 100, ReadFilter(fragments=True))["chr1"]
    assert counts.sum() == 1 and counts[11] == 1


def test_last_partial_bin_and_contig_end(tmp_path):
    reads = [{"contig": "chr2", "pos": 9_998, "length": 1}, {"contig": "chr2", "pos": 9_900, "length": 50}]
    path = write_bam(tmp_path / "e.bam", CONTIGS, reads)
    counts = alignments.count_contigs(path, CONTIGS, 1000, ReadFilter())
    assert counts["chr2"].shape == (10,) and counts["chr2"][9] == 2
    np.testing.assert_allclose(bins.exposure(9_999, 1000)[-2:], [1.0, 0.999])


@pytest.mark.parametrize("model,dispersion", [("poisson", 0.0), ("negative_binomial", 0.2),
                                              ("negative_binomial", 3.0)])
def test_log_likelihood_matches_scipy(model, dispersion):
    counts = np.array([0, 1, 2, 5, 17, 40, 41, 300])
    exposure = np.array([1, 1, 1, 1, 1, 1, 1, 0.25])
    means = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    depth = 37.5
    got = core_coverage.coverage_log_likelihood(counts, exposure, means, depth, model, dispersion)
    assert got.shape == (counts.size, means.size) and got.dtype == np.float64
    mu = np.maximum(means, core_coverage.MIN_COPY_RATIO)[None, :] * depth * exposure[:, None]
    k = counts[:, None]
    if model == "poisson":
        expected = stats.poisson.logpmf(k, mu)
    else:
        r = 1 / dispersion
        expected = stats.nbinom.logpmf(k, r, r / (r + mu))
        # the variance really is mu + dispersion * mu^2
        np.testing.assert_allclose(stats.nbinom.var(r, r / (r + mu)), mu + dispersion * mu ** 2)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert np.all(np.isfinite(got))  # mean 0 is floored, not -inf


def test_median_depth_over_covered_full_bins():
    contigs = [("a", 1000), ("b", 550)]
    counts = {"a": np.array([0, 3, 3, 9, 0, 4, 100, 2, 2, 5], dtype=np.int32),
              "b": np.array([7, 0, 1, 1, 6, 999], dtype=np.int32)}   # last bin partial: excluded
    covered = [3, 3, 9, 4, 100, 2, 2, 5, 7, 1, 1, 6]
    assert core_coverage.median_depth(counts, contigs, 100) == np.median(covered)
    masks = {"a": np.zeros(10, bool), "b": np.zeros(6, bool)}
    masks["a"][6] = True
    covered.remove(100)
    assert core_coverage.median_depth(counts, contigs, 100, masks) == np.median(covered)
    assert core_coverage.median_depth({"a": np.zeros(10, np.int32)}, [("a", 1000)], 100) == 0.0


def test_estimate_depth_errors_without_reads(tmp_path):
    path = write_bam(tmp_path / "z.bam", CONTIGS, [{"contig": "chr1", "pos": 5, "mapq": 3}])
    with pytest.raises(DataError, match="no reads pass the filters.*--depth"):
        coverage.estimate_depth(path, CONTIGS, 100)


def test_blacklist_mask_and_reader(tmp_path):
    black = tmp_path / "black.bed"
    black.write_text("# comment\nchr1\t250\t251\tx\nchr1\t1000\t1201\nchr2\t0\t0\n")
    intervals = bed.read_intervals(black)
    mask = bins.mask(intervals["chr1"], 1_500, 100)
    assert np.flatnonzero(mask).tolist() == [2, 10, 11, 12]
    assert not bins.mask(intervals["chr2"], 1_500, 100).any()
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\tten\t20\n")
    with pytest.raises(DataError, match="line 1"):
        bed.read_intervals(bad)


def test_emissions_source_matches_full_computation(random_bam):
    spec = fake_spec([0.0, 1.0, 2.0], model="negative_binomial", dispersion=0.1, bin_size=100)
    length = dict(CONTIGS)["chr1"]
    n_bins = bins.n_bins(length, 100)
    black = {"chr1": [(500, 900)]}
    source = coverage.coverage_emissions(random_bam, "chr1", n_bins, spec, 3.0, length=length, blacklist=black,
                                    block_bins=37, cache_blocks=2)
    counts = alignments.count_contigs(random_bam, CONTIGS, 100)["chr1"]
    mask = bins.mask(black["chr1"], length, 100)
    full = coverage.log_likelihood_for(spec, counts, bins.exposure(length, 100), 3.0, mask)
    assert np.all(full[5:9] == 0) and np.any(full[:5] != 0)
    # any range, also right to left, and across block edges
    for a, b in [(200, n_bins), (0, 1), (30, 80), (0, n_bins), (n_bins - 1, n_bins), (74, 74)]:
        np.testing.assert_allclose(source(a, b), full[a:b], rtol=0, atol=0)
    source.close()


def test_cram_counts_match_bam(tmp_path, random_bam):
    fasta = tmp_path / "g.fa"
    with open(fasta, "w") as fh:
        for name, length in CONTIGS:
            fh.write(f">{name}\n" + "ACGT" * (length // 4) + "A" * (length % 4) + "\n")
    pysam.faidx(str(fasta))
    cram = str(tmp_path / "r.cram")
    pysam.view("-C", "-T", str(fasta), "-o", cram, random_bam, catch_stdout=False)
    pysam.index(cram)
    with pytest.raises(DataError, match="needs its reference"):
        alignments.open_alignments(cram)
    got = alignments.count_contigs(cram, CONTIGS, 100, reference=fasta, threads=2, unit_bp=7_000,
                            reads_per_process=0)
    expected = alignments.count_contigs(random_bam, CONTIGS, 100)
    for name, _ in CONTIGS:
        np.testing.assert_array_equal(got[name], expected[name])


# ---------------------------------------------------------------------------- errors

def test_no_index_names_samtools_index(tmp_path):
    path = write_bam(tmp_path / "noidx.bam", CONTIGS, [{"contig": "chr1", "pos": 5}], index=False)
    with pytest.raises(DataError, match=r"no index.*`samtools index .*noidx\.bam`"):
        alignments.count_contigs(path, CONTIGS, 100)


def test_unsorted_header_and_content(tmp_path):
    reads = [{"contig": "chr1", "pos": 900}, {"contig": "chr1", "pos": 5}]
    declared = write_bam(tmp_path / "u1.bam", CONTIGS, reads, sort_order="unsorted", index=False, sort=False)
    with pytest.raises(DataError, match="not coordinate-sorted.*SO:unsorted"):
        alignments.open_alignments(declared)
    silent = write_bam(tmp_path / "u2.bam", CONTIGS, reads, sort_order=None, index=False, sort=False)
    with pytest.raises(DataError, match="not coordinate-sorted and not indexed.*samtools sort"):
        alignments.open_alignments(silent)


def test_truncated_bam(tmp_path, random_bam):
    data = open(random_bam, "rb").read()
    path = tmp_path / "cut.bam"
    path.write_bytes(data[: len(data) // 2])
    shutil.copy(random_bam + ".bai", str(path) + ".bai")
    with pytest.raises(DataError, match="truncated"):
        alignments.count_contigs(path, CONTIGS, 100)


def test_fasta_disagreements(tmp_path):
    path = write_bam(tmp_path / "n.bam", [("1", 1000), ("2", 500)], [{"contig": "1", "pos": 5}])
    with pytest.raises(DataError, match=r"contig chr1 .* not in the BAM header.*'1'.*'chr' prefix"):
        alignments.check_contigs(path, alignments.bam_contigs(path), "g.fa", [("chr1", 1000)])
    with pytest.raises(DataError, match="600 bp in the BAM header but 500 bp|500 bp in the BAM header but 600 bp"):
        alignments.check_contigs(path, alignments.bam_contigs(path), "g.fa", [("1", 1000), ("2", 600)])
    # BAM-only contigs (decoys) are fine
    alignments.check_contigs(path, alignments.bam_contigs(path), "g.fa", [("2", 500)])


def test_not_a_bam(tmp_path):
    path = tmp_path / "junk.bam"
    path.write_bytes(b"hello, not a BAM\n" * 10)
    with pytest.raises(DataError, match="junk.bam"):
        alignments.open_alignments(path)


@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "pysam"])
@pytest.mark.parametrize("threads", [1, 2])
def test_corrupt_block_mid_file(tmp_path, random_bam, threads, fast):
    data = bytearray(open(random_bam, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 500] = bytes(500)  # the end-of-file marker stays intact
    path = tmp_path / "corrupt.bam"
    path.write_bytes(bytes(data))
    shutil.copy(random_bam + ".bai", str(path) + ".bai")
    with pytest.raises(DataError, match=r"corrupt\.bam: .*corrupt"):
        alignments.count_contigs(path, CONTIGS, 100, threads=threads, unit_bp=5_000, fast=fast,
                          reads_per_process=0)


def test_stale_index_warns_once(tmp_path):
    import logging

    path = write_bam(tmp_path / "stale.bam", CONTIGS, [{"contig": "chr1", "pos": 5}])
    os.utime(path + ".bai", (1_000_000, 1_000_000))  # index older than the file
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("flashseg")
    logger.addHandler(handler)
    try:
        alignments.count_contigs(path, CONTIGS, 100)
        alignments.count_contigs(path, CONTIGS, 100)
    finally:
        logger.removeHandler(handler)
    assert len(messages) == 1 and "older than the file" in messages[0] and "samtools index" in messages[0]


@pytest.mark.parametrize("unit_bp", [3_000, 70_000, 10_000_000])
def test_compiled_path_sparse_and_long_reads(tmp_path, unit_bp):
    """Empty index windows, reads spanning many windows, contigs without reads, partial last bins."""
    contigs = [("c1", 3_000_017), ("c2", 40_000), ("c3", 1_000_001)]
    rng = np.random.default_rng(3)
    reads = [{"contig": "c1", "pos": int(p), "length": int(rng.integers(1, 40_000)),
              "mapq": int(rng.choice([10, 60]))} for p in rng.integers(0, 2_960_000, 300)]
    reads += [{"contig": "c1", "pos": 2_999_990, "length": 27}, {"contig": "c1", "pos": 0}]
    reads += [{"contig": "c3", "pos": int(p)} for p in (5, 16_384, 16_383, 999_999, 500_000)]
    path = write_bam(tmp_path / "sparse.bam", contigs, reads)
    expected = reference_counts(path, contigs, 1000)
    compiled = alignments.count_contigs(path, contigs, 1000, unit_bp=unit_bp, fast=True)
    plain = alignments.count_contigs(path, contigs, 1000, unit_bp=unit_bp, fast=False)
    for name, _ in contigs:
        np.testing.assert_array_equal(compiled[name], expected[name])
        np.testing.assert_array_equal(plain[name], expected[name])
    assert compiled["c2"].sum() == 0 and compiled["c3"].sum() == 5


def test_compiled_path_is_used_for_bam_with_bai(random_bam):
    counter = alignments.RangeCounter(random_bam)
    try:
        assert counter.index is not None
        with pytest.raises(DataError, match="contig chrX is not in the BAM header"):
            counter.count("chrX", 0, 1, 100, 100, ReadFilter())
    finally:
        counter.close()
