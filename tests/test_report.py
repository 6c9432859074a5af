"""``flashseg report`` (issue 19): enrichment against hand computation and brute force,
the files and page it writes, its errors."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_main, write_model, write_tracks
from flashseg.io.annotations import anchor_name, read_anchors, read_segments
from flashseg.report import enrichment as enr
from flashseg.report.lengths import duration_pmf, run_pmf

ROOT = Path(__file__).resolve().parents[1]
MARKS = str(ROOT / "configs" / "models" / "marks-4.yaml")
MARKS_LABELS = ["Promoter", "Enhancer", "Repressed", "Quiescent"]
PNG = b"\x89PNG\r\n\x1a\n"


def segs(*rows):
    """ContigSegments from (start, end, label) rows."""
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return enr.ContigSegments(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy())


def intervals(*rows):
    a = np.array(rows, dtype=np.int64).reshape(-1, 2)
    return a[:, 0].copy(), a[:, 1].copy()


# -- the maths --------------------------------------------------------------------------------

def test_overlap_enrichment_by_hand():
    segmentation = {"chr1": segs((0, 100, 0), (100, 300, 1), (300, 400, 0))}
    # [50,150) and [120,170) overlap: their union [50,170) counts each base once; [390,500)
    # leaves the segmented genome at 400; chr9 is not in the calls
    annotation = {"chr1": intervals((50, 150), (120, 170), (390, 500)), "chr9": intervals((0, 1000))}
    table = enr.overlap_enrichment(segmentation, [annotation], 2)
    assert table.genome_bases == 400
    assert table.label_bases.tolist() == [200, 200]
    assert table.overlap[:, 0].tolist() == [60, 70]            # A: [50,100) + [390,400); B: [100,170)
    assert table.annotation_bases.tolist() == [130]
    np.testing.assert_allclose(table.genome_pct, [50, 50])
    np.testing.assert_allclose(table.fold[:, 0], [(60 / 200) / (130 / 400), (70 / 200) / (130 / 400)])


def test_fold_is_nan_without_bases():
    segmentation = {"chr1": segs((0, 10, 0))}
    table = enr.overlap_enrichment(segmentation, [{"chr1": intervals((20, 30))}], 2)
    assert np.isnan(table.fold).all()          # label 1 has no base; the annotation none in the genome


def _random_case(rng, n_labels=3):
    """Per-base label arrays (-1 in gaps) and the same as segments; random annotation intervals."""
    per_base, segmentation = {}, {}
    for contig in ("chr1", "chr2", "chrM"):
        length = int(rng.integers(1, 400))
        cuts = np.unique(np.concatenate(([0, length], rng.integers(0, length, rng.integers(0, 12)))))
        labels = np.full(length, -1)
        rows = []
        for s, e in zip(cuts[:-1], cuts[1:]):
            if rng.random() < 0.2:
                continue                       # a gap: not in the segmented genome
            c = int(rng.integers(0, n_labels))
            labels[s:e] = c
            rows.append((s, e, c))
        if rows:
            per_base[contig] = labels
            segmentation[contig] = segs(*rows)
    return per_base, segmentation


def _random_annotation(rng):
    out = {}
    for contig in ("chr1", "chr2", "chrX"):       # chrX is never in the calls
        n = int(rng.integers(0, 8))
        s = rng.integers(0, 450, n)
        out[contig] = (s, s + rng.integers(0, 80, n))
    return out


def test_overlap_enrichment_matches_per_base_brute_force():
    rng = np.random.default_rng(19)
    for _ in range(200):
        per_base, segmentation = _random_case(rng)
        if not segmentation:
            continue
        annotations = [_random_annotation(rng) for _ in range(3)]
        table = enr.overlap_enrichment(segmentation, annotations, 3)
        genome = sum(int((lab >= 0).sum()) for lab in per_base.values())
        for a, annotation in enumerate(annotations):
            inside = {c: np.zeros(len(lab), bool) for c, lab in per_base.items()}
            for contig, (s, e) in annotation.items():
                if contig in inside:
                    for x, y in zip(s, e):
                        inside[contig][x:y] = True       # a base once, however many intervals hold it
            for c in range(3):
                label = sum(int((lab == c).sum()) for lab in per_base.values())
                both = sum(int(((lab == c) & inside[k]).sum()) for k, lab in per_base.items())
                ann = sum(int(((lab >= 0) & inside[k]).sum()) for k, lab in per_base.items())
                assert table.overlap[c, a] == both
                assert table.label_bases[c] == label
                if label and ann:
                    assert table.fold[c, a] == pytest.approx((both / label) / (ann / genome), rel=1e-12)
                else:
                    assert np.isnan(table.fold[c, a])
        np.testing.assert_allclose(table.genome_pct, 100 * table.label_bases / genome)


def test_merge_intervals_is_the_union():
    rng = np.random.default_rng(3)
    for _ in range(100):
        s = rng.integers(0, 100, 10)
        e = s + rng.integers(0, 20, 10)
        u_start, u_end = enr.merge_intervals(s, e)
        covered = np.zeros(130, bool)
        for x, y in zip(s, e):
            covered[x:y] = True
        again = np.zeros(130, bool)
        for x, y in zip(u_start, u_end):
            again[x:y] = True
        assert (covered == again).all()
        assert (u_start[1:] > u_end[:-1]).all()         # disjoint and not touching


def test_neighborhood_on_both_strands_by_hand():
    segmentation = {"chr1": segs((0, 100, 0), (100, 200, 1), (200, 400, 2))}
    # + at 150: offsets -100, 0, +100 -> 50 (0), 150 (1), 250 (2)
    # - at 150: mirrored               -> 250 (2), 150 (1), 50 (0)
    # - at 350: 450 is off the genome   -> (ignored), 350 (2), 250 (2)
    anchors = {"chr1": (np.array([150, 150, 350]), np.array([False, True, True])), "chr7": (np.array([5]),
                                                                                           np.array([False]))}
    table = enr.neighborhood_enrichment(segmentation, anchors, 3, bin_size=100, flank=150)
    assert table.offsets.tolist() == [-100, 0, 100]
    assert table.counts.tolist() == [[1, 0, 1], [0, 2, 0], [1, 1, 2]]
    assert table.anchors.tolist() == [2, 3, 3]
    fraction = np.array([100, 100, 200]) / 400
    np.testing.assert_allclose(table.fold, table.counts / table.anchors / fraction[:, None])


@pytest.mark.parametrize("cells", [enr.ANCHOR_CELLS, 7])      # 7: a few anchors per block
def test_neighborhood_matches_brute_force_on_both_strands(cells, monkeypatch):
    monkeypatch.setattr(enr, "ANCHOR_CELLS", cells)
    rng = np.random.default_rng(7)
    for _ in range(150):
        per_base, segmentation = _random_case(rng)
        if not segmentation:
            continue
        anchors = {}
        for contig in ("chr1", "chr2", "chrX"):
            n = int(rng.integers(0, 10))
            anchors[contig] = (rng.integers(0, 420, n), rng.random(n) < 0.5)
        bin_size, flank = int(rng.integers(1, 40)), int(rng.integers(0, 120))
        table = enr.neighborhood_enrichment(segmentation, anchors, 3, bin_size=bin_size, flank=flank)
        n = flank // bin_size
        assert table.offsets.tolist() == [k * bin_size for k in range(-n, n + 1)]
        counts = np.zeros((3, 2 * n + 1), dtype=np.int64)
        for contig, (positions, minus) in anchors.items():
            labels = per_base.get(contig)
            if labels is None:
                continue
            for p, m in zip(positions, minus):
                for j, k in enumerate(range(-n, n + 1)):
                    at = p - k * bin_size if m else p + k * bin_size
                    if 0 <= at < len(labels) and labels[at] >= 0:
                        counts[labels[at], j] += 1
        assert (table.counts == counts).all()
        genome = sum(int((lab >= 0).sum()) for lab in per_base.values())
        fraction = np.array([sum(int((lab == c).sum()) for lab in per_base.values()) for c in range(3)]) / genome
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = counts / counts.sum(axis=0) / fraction[:, None]
        np.testing.assert_allclose(table.fold, expected, equal_nan=True)


def test_segment_lengths_and_runs():
    segmentation = {"a": segs((0, 20, 0), (20, 25, 1), (25, 45, 0)), "b": segs((0, 10, 0), (10, 30, 0))}
    lengths = enr.segment_lengths(segmentation, 2, 10)
    assert sorted(lengths[0].tolist()) == [1, 2, 2, 2] and lengths[1].tolist() == [1]   # 5 bp: one bin
    assert not enr.calls_are_runs(segmentation)                                          # b: 0 then 0
    assert enr.calls_are_runs({"a": segmentation["a"]})


def _model(text):
    from flashseg.io.model import parse_model
    import yaml

    return parse_model(yaml.safe_load(text)).model


def test_run_law_of_a_plain_hmm_is_geometric():
    model = _model("""
bin_size: 10
max_duration: 1
tail: none
labels:
  - {name: A, duration: {family: table, log: [0]}}
  - {name: B, duration: {family: table, log: [0]}}
transitions: {A: {A: 0.9, B: 0.1}, B: {A: 0.3, B: 0.7}}
""")
    d = np.arange(1, 201)
    law = run_pmf(model, 200)
    np.testing.assert_allclose(law[:, 0], 0.1 * 0.9 ** (d - 1), rtol=1e-12)
    np.testing.assert_allclose(law[:, 1], 0.3 * 0.7 ** (d - 1), rtol=1e-12)


def test_run_law_against_a_sum_over_segment_counts():
    model = _model("""
bin_size: 10
max_duration: 6
labels:
  - {name: A, duration: {family: negative_binomial, mean: 3, dispersion: 2}}
  - {name: B, duration: {family: geometric, mean: 2}}
transitions: {A: {A: 0.4, B: 0.6}, B: {A: 1.0}}
""")
    D = 60
    p = duration_pmf(model, D)
    assert p[:, 1].sum() == pytest.approx(1 - 0.5 ** D)          # geometric, mean 2, through its tail
    assert p[:, 0].sum() == pytest.approx(1.0, abs=1e-6)
    law = run_pmf(model, D)
    # sum over n segments: P(n) = 0.6 * 0.4^(n - 1), the n-fold convolution of p
    expected = np.zeros(D)
    conv = np.concatenate(([1.0], np.zeros(D)))
    for n in range(1, D + 1):
        conv = np.convolve(conv, np.concatenate(([0.0], p[:, 0])))[: D + 1]
        expected += 0.6 * 0.4 ** (n - 1) * conv[1:]
    np.testing.assert_allclose(law[:, 0], expected, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(law[:, 1], p[:, 1])                 # no self-transition: the duration law


# -- the readers ------------------------------------------------------------------------------

def test_anchor_formats(tmp_path):
    path = tmp_path / "tss.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("chr1\t100\t+\nchr1\t200\t-\nchr2\t5\nchr2\t7\t.\n")
    got = read_anchors(path)
    assert got["chr1"][0].tolist() == [100, 200] and got["chr1"][1].tolist() == [False, True]
    assert got["chr2"][0].tolist() == [5, 7] and not got["chr2"][1].any()
    bed = tmp_path / "genes.bed"
    bed.write_text("track name=x\nchr1\t100\t500\tg1\t0\t+\nchr1\t100\t500\tg2\t0\t-\nchr1\t10\t20\n")
    got = read_anchors(bed)
    assert got["chr1"][0].tolist() == [100, 499, 10] and got["chr1"][1].tolist() == [False, True, False]
    assert anchor_name("/x/RefSeqTSS.hg18.txt.gz") == "RefSeqTSS.hg18"
    assert anchor_name("tss.bed") == "tss" and anchor_name("a.b") == "a.b"


def test_segments_readers(tmp_path):
    bed4 = tmp_path / "chromhmm_segments.bed"
    bed4.write_text("chr2\t0\t400\tB\nchr1\t200\t600\tA\nchr1\t0\t200\tB\n")
    got = read_segments(bed4, ["A", "B"])
    assert list(got) == ["chr2", "chr1"]
    assert got["chr1"].start.tolist() == [0, 200] and got["chr1"].label.tolist() == [1, 0]
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t0\t200\tA\nchr1\t200\t400\tE7\n")
    with pytest.raises(Exception, match=r"bad.bed: line 2: label 'E7' is not one of the model's labels"):
        read_segments(bad, ["A", "B"])
    bad.write_text("chr1\t0\t200\tA\nchr1\t100\t400\tB\n")
    with pytest.raises(Exception, match=r"line 2: segment chr1:100-400 overlaps the segment of line 1"):
        read_segments(bad, ["A", "B"])


# -- the command --------------------------------------------------------------------------------

def _marks_inputs(tmp_path):
    """Calls over two contigs under marks-4 (200 bp bins), their observations, posteriors and
    boundaries, annotations (a directory with plain and gzipped BED) and anchors."""
    from flashseg.io.observations import ObservationsWriter
    from flashseg.io.tracks import TracksWriter

    rng = np.random.default_rng(5)
    lines = ["##flashseg version=test",
             "#chrom\tstart\tend\tname\tscore\tstrand\tthickStart\tthickEnd\titemRgb\tseg_post\tstart_post"
             "\tend_post\tlabel_post"]
    n_bins = {"chr1": 600, "chr2": 300}
    labels_of = {}
    for contig, n in n_bins.items():
        per_bin = np.empty(n, dtype=np.int64)
        a = 0
        while a < n:
            b = min(n, a + int(rng.integers(1, 40)))
            c = int(rng.integers(0, 4))
            per_bin[a:b] = c
            end_bp = min(b * 200, n * 200 - 50)
            lines.append(f"{contig}\t{a * 200}\t{end_bp}\t{MARKS_LABELS[c]}\t500\t.\t{a * 200}\t{end_bp}\t0,0,0"
                         "\t0.5\t1\t1\t0.9")
            a = b
        labels_of[contig] = per_bin
    (tmp_path / "calls.bed").write_text("\n".join(lines) + "\n")
    with ObservationsWriter(str(tmp_path / "obs.h5"), features=["H3K27me3", "H3K4me1", "H3K27ac", "H3K4me3"],
                            kind="binary", bin_size=200) as w:
        for contig, n in n_bins.items():
            w.add_contig(contig, n, length_bp=n * 200 - 50)
            w.write(contig, 0, (rng.random((n, 4)) < 0.3).astype(np.uint8))
    with TracksWriter(str(tmp_path / "post.h5"), labels=MARKS_LABELS[::-1], bin_size=200, score="probability") as w:
        for contig, n in n_bins.items():
            w.add_contig(contig, n, length_bp=n * 200 - 50)
            p = rng.random((n, 4))
            w.write(contig, 0, p / p.sum(axis=1, keepdims=True))
    (tmp_path / "bound.bedgraph").write_text("chr1\t2000\t2200\t0.8\nchr1\t9000\t9200\t0.3\nchr2\t0\t200\t1\n")
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "genes.bed").write_text("chr1\t1000\t30000\tg\t0\t+\nchr2\t100\t5000\tg\t0\t-\nchrUn\t0\t99\n")
    with gzip.open(ann / "cpg.bed.gz", "wt") as f:
        f.write("chr1\t500\t900\nchr1\t800\t1200\n")
    (ann / "README.txt").write_text("not an annotation\n")
    (tmp_path / "exons.bed").write_text("chr1\t50000\t51000\n")
    with gzip.open(tmp_path / "RefSeqTSS.test.txt.gz", "wt") as f:
        f.write("chr1\t20000\t+\nchr1\t60000\t-\nchr2\t30000\t+\nchrUn\t5\t+\n")
    (tmp_path / "tes.bed").write_text("chr1\t20000\t60001\tg\t0\t-\n")
    return tmp_path


def _check_figure(path: Path):
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(PNG), path
    else:
        root = ET.fromstring(data)
        assert root.tag.endswith("svg"), path


def test_report_writes_every_figure_table_and_the_page(tmp_path, capsys):
    d = _marks_inputs(tmp_path)
    out = d / "report"
    code, _, err = run_main(["report", "-m", MARKS, "--segments", str(d / "calls.bed"), "-o", str(out),
                             "--annotations", str(d / "annotations"), "--annotations", str(d / "exons.bed"),
                             "--anchors", str(d / "RefSeqTSS.test.txt.gz"), "--anchors", str(d / "tes.bed"),
                             "--flank", "1000", "--observations", str(d / "obs.h5"),
                             "--posteriors", str(d / "post.h5"), "--boundaries", str(d / "bound.bedgraph"),
                             "--region", "chr1:1-60000"], capsys)
    assert code == 0, err
    stems = ["emissions", "signals", "transitions", "durations", "enrichment", "neighborhood_RefSeqTSS.test",
             "neighborhood_tes", "locus"]
    expected = {f"{s}.{x}" for s in stems for x in ("png", "svg")} | {
        "index.html", "enrichment.tsv", "signals.tsv", "neighborhood_RefSeqTSS.test.tsv", "neighborhood_tes.tsv"}
    assert set(os.listdir(out)) == expected
    for name in expected:
        if name.endswith((".png", ".svg")):
            _check_figure(out / name)
    page = (out / "index.html").read_text()
    for stem in stems:
        assert f'src="{stem}.png"' in page and f'href="{stem}.svg"' in page
    assert "rgb(255,0,0)" in page                    # Promoter's colour from the model

    # enrichment.tsv: exactly the layout, and the numbers of the library
    rows = [line.split("\t") for line in (out / "enrichment.tsv").read_text().splitlines()]
    assert rows[0] == ["label", "genome_pct", "cpg.bed.gz", "genes.bed", "exons.bed"]
    assert [r[0] for r in rows[1:]] == MARKS_LABELS
    segmentation = read_segments(d / "calls.bed", MARKS_LABELS)
    from flashseg.io.annotations import read_intervals

    table = enr.overlap_enrichment(segmentation, [read_intervals(d / "annotations" / "cpg.bed.gz"),
                                                  read_intervals(d / "annotations" / "genes.bed"),
                                                  read_intervals(d / "exons.bed")], 4)
    got = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(got, np.column_stack([table.genome_pct, table.fold]), rtol=1e-5, equal_nan=True)
    assert 0 < got[:, 0].sum() == pytest.approx(100, rel=1e-5)

    rows = [line.split("\t") for line in (out / "neighborhood_RefSeqTSS.test.tsv").read_text().splitlines()]
    assert rows[0] == ["label"] + [str(k * 200) for k in range(-5, 6)]
    assert [r[0] for r in rows[1:]] == MARKS_LABELS
    anchors = read_anchors(d / "RefSeqTSS.test.txt.gz")
    fold = enr.neighborhood_enrichment(segmentation, anchors, 4, bin_size=200, flank=1000).fold
    np.testing.assert_allclose(np.array([[float(v) for v in r[1:]] for r in rows[1:]]), fold, rtol=1e-5,
                               equal_nan=True)
    rows = (out / "signals.tsv").read_text().splitlines()
    assert rows[0] == "label\tH3K27me3\tH3K4me1\tH3K27ac\tH3K4me3"

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from check_report_chromium import chromium

    if chromium() is None:
        pytest.skip("chromium is not installed: run benchmarks/check_report_chromium.py where it is")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_report_chromium.py"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "images loaded: 8/8" in proc.stdout



def test_report_of_chromhmm_bed4_with_a_track_model(tmp_path, capsys):
    model = write_model(tmp_path / "m.yaml", bin_size=10)
    (tmp_path / "segments.bed").write_text("chr1\t0\t50\tA\nchr1\t50\t80\tB\nchr1\t80\t200\tA\nchr2\t0\t30\tB\n")
    tracks = write_tracks(tmp_path / "t.h5", {"chr1": 20, "chr2": 3, "chr3": 4})
    code, _, err = run_main(["report", "-m", model, "--segments", str(tmp_path / "segments.bed"),
                             "-o", str(tmp_path / "r"), "-t", tracks, "--region", "chr1:1-200"], capsys)
    assert code == 0, err
    assert {"emissions.png", "emissions.svg", "durations.png", "transitions.svg", "locus.png",
            "index.html"} <= set(os.listdir(tmp_path / "r"))
    assert "signals.png" not in os.listdir(tmp_path / "r")    # the tracks went into the emissions figure


def test_report_errors_are_one_line_and_publish_nothing(tmp_path, capsys):
    d = _marks_inputs(tmp_path)
    base = ["report", "-m", MARKS, "--segments", str(d / "calls.bed")]

    def fails(argv, code, text):
        got, out, err = run_main(base + argv, capsys)
        assert got == code, err
        lines = err.strip().splitlines()
        assert lines[0].startswith("flashseg: error: ") and text in lines[0], err
        assert len(lines) == 1 or lines[1].startswith("(see "), err
        assert "Traceback" not in err

    shutil.copy(d / "tes.bed", d / "tes.txt")
    fails(["-o", str(d / "r1"), "--anchors", str(d / "tes.bed"), "--anchors", str(d / "tes.txt")], 2,
          "both give neighborhood_tes.tsv")
    fails(["-o", str(d / "r2"), "--posteriors", str(d / "post.h5")], 2, "give --region too")
    (d / "full").mkdir()
    (d / "full" / "x").write_text("")
    fails(["-o", str(d / "full")], 2, "is not empty")
    fails(["-o", str(d / "r3"), "--region", "chr1:5-1"], 2, "START <= END")
    # bad data found while writing: nothing is published
    (d / "bad.txt").write_text("chr1\t100\t+\nchr1\tx\t+\n")
    fails(["-o", str(d / "r4"), "--anchors", str(d / "bad.txt")], 1, "bad.txt: line 2: expected chrom, position")
    assert os.listdir(d / "r4") == []
    (d / "calls2.bed").write_text("chr1\t0\t200\tPromoter\nchr1\t200\t400\tE5\n")
    got, _, err = run_main(["report", "-m", MARKS, "--segments", str(d / "calls2.bed"), "-o", str(d / "r5")],
                           capsys)
    assert got == 1 and err.strip() == (f"flashseg: error: {d / 'calls2.bed'}: line 2: label 'E5' is not one of "
                                        "the model's labels (Promoter, Enhancer, Repressed, Quiescent)")
    fails(["-o", str(d / "r6"), "--region", "chr9:1-100", "--boundaries", str(d / "bound.bedgraph")], 1,
          "contig chr9 has no segments")
    # an output that is an input
    (d / "r7").mkdir()
    shutil.copy(d / "calls.bed", d / "r7" / "index.html")
    got, _, err = run_main(["report", "-m", MARKS, "--segments", str(d / "r7" / "index.html"), "-o", str(d / "r7"),
                            "--force"], capsys)
    assert got == 2 and "would overwrite the input" in err


def test_report_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib raises ImportError
    d = _marks_inputs(tmp_path)
    code, _, err = run_main(["report", "-m", MARKS, "--segments", str(d / "calls.bed"), "-o", str(d / "r")],
                            capsys)
    assert code == 2
    assert err.strip() == ("flashseg: error: flashseg report needs matplotlib: pip install '.[report]' in a clone "
                           "of flashseg (or pip install matplotlib)")
    assert not (d / "r").exists()
