"""BED9+4 / bedGraph formatting against hand-checked golden files; atomic and BGZF outputs."""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pytest

from flashseg.core.results import SegmentCalls
from flashseg.errors import DataError
from flashseg.io.bed import BED_HEADER, BedWriter, autosql_path, provenance_lines
from flashseg.io.bedgraph import BedGraphSink
from flashseg.io.output import atomic_path, open_text_output

GOLDEN = Path(__file__).parent / "golden"


def calls(start, end, label, seg, sp, ep, lp):
    return SegmentCalls(np.array(start), np.array(end), np.array(label, dtype=np.int32), seg_post=np.array(seg),
                        start_post=np.array(sp), end_post=np.array(ep), label_post=np.array(lp))


def bed_writer(stream, target="-"):
    return BedWriter(stream, bin_size=200, label_names=["A", "B"], label_colors=["255,0,0", "0,0,255"],
                     label_strands=[".", "+"], provenance=["##flashseg version=0.1.0", "##flashseg model=m.yaml sha256=abc",
                                                           "##flashseg seed=3"], target=target)


def write_golden_bed(stream):
    w = bed_writer(stream)
    w.write_header()
    # chrT: 1050 bp = 6 bins, the last one 50 bp (end clipped); score rounds half up: 999.5 -> 1000, 0.4999 -> 0
    w.write_calls("chrT", calls([0, 2], [2, 6], [0, 1], [0.9995, 0.0004999], [1.0, 0.123456789],
                                [0.123456789, 1.0], [0.87654321, 1.0]), length=1050)
    # a --region decode: bins relative to offset 3
    w.write_calls("chrU", calls([0], [1], [0], [0.4995], [1.0], [1.0], [0.5]), length=5000, offset=3)


def test_bed_golden():
    out = io.StringIO()
    write_golden_bed(out)
    assert out.getvalue() == (GOLDEN / "segments.bed").read_text()
    assert out.getvalue().splitlines()[3] == BED_HEADER


@pytest.mark.parametrize("start, end, message", [([0, 2], [3, 4], "overlaps"), ([0, 2], [2, 2], "empty"),
                                                 ([0, 6], [6, 8], "outside the contig length")])
def test_bed_validates_before_writing(start, end, message):
    out = io.StringIO()
    with pytest.raises(DataError, match=message):
        bed_writer(out, "x.bed").write_calls("c", calls(start, end, [0, 1], [1, 1], [1, 1], [1, 1], [1, 1]),
                                             length=1200)
    assert out.getvalue() == ""


def test_bedgraph_golden_and_chunk_independence():
    values = np.array([1.0, 0.25, 0.25, 0.0, 1e-05, 0.333333333, 0.3333334])  # bins 0..5 used; L = 1050
    expected = (GOLDEN / "changes.bedgraph").read_text()
    for chunk in (1, 2, 3, 7):
        out = io.StringIO()
        sink = BedGraphSink(out, contig="chrT", bin_size=200, length=1050, min_posterior=1e-5)
        for a in range(0, 6, chunk):
            sink.add(a, values[a:min(6, a + chunk)])
        sink.close()
        assert out.getvalue() == expected, chunk


def test_bedgraph_min_posterior_drops_bins():
    out = io.StringIO()
    sink = BedGraphSink(out, contig="c", bin_size=10, length=50, min_posterior=0.5)
    sink.add(0, [1.0, 0.4, 0.6, 0.6, 0.49])
    sink.close()
    assert out.getvalue() == "c\t20\t40\t0.6\n"


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(target)) as temp:
            Path(temp).write_text("partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    with atomic_path(str(target)) as temp:
        Path(temp).write_text("done")
    assert os.listdir(tmp_path) == ["out.txt"] and target.read_text() == "done"


def test_unique_temp_names(tmp_path):
    target = str(tmp_path / "x.bed")
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and os.path.dirname(a) == str(tmp_path)
        Path(a).write_text("a")
        Path(b).write_text("b")


def test_gz_output_is_bgzf_with_tabix(tmp_path):
    import pysam

    target = str(tmp_path / "s.bed.gz")
    with open_text_output(target) as stream:
        write_golden_bed(stream)
    assert sorted(os.listdir(tmp_path)) == ["s.bed.gz", "s.bed.gz.tbi"]
    with gzip.open(target, "rt") as handle:
        assert handle.read() == (GOLDEN / "segments.bed").read_text()
    with pysam.TabixFile(target) as tbx:
        assert [r.split("\t")[1] for r in tbx.fetch("chrT", 500, 600)] == ["400"]


def test_provenance_and_autosql():
    lines = provenance_lines(version="1", model_path="m.yaml", model_sha256="ff", seed=2, command="flashseg x")
    assert lines == ["##flashseg version=1", "##flashseg model=m.yaml sha256=ff", "##flashseg seed=2",
                     "##flashseg command=flashseg x"]
    text = Path(autosql_path()).read_text()
    fields = [line.split()[1].rstrip(";") for line in text.splitlines() if line.strip().endswith('"')
              and ";" in line.split('"')[0]]
    assert fields[-4:] == ["seg_post", "start_post", "end_post", "label_post"] and len(fields) == 13
