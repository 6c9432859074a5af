"""Tracks HDF5: writer/reader round trip, score kinds, contig order, weights, chunked reads."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from cli_helpers import write_tracks
from flashseg.errors import DataError
from flashseg.io.tracks import TracksWriter, TrackSet, open_track_set, open_tracks, parse_track_spec


def test_round_trip_and_attributes(tmp_path):
    path = tmp_path / "t.h5"
    x = np.arange(40, dtype=np.float64).reshape(20, 2) / 7
    with TracksWriter(path, labels=["A", "B"], bin_size=200, dtype="float64", compression="gzip") as w:
        w.add_contig("chr1", 20, length_bp=3950)
        w.write("chr1", 0, x[:8])
        w.write("chr1", 8, x[8:])
        w.add_array("/depth/chr1", np.arange(20, dtype=np.int32))
    with open_tracks(path) as f:
        assert f.labels == ["A", "B"] and f.bin_size == 200 and f.score == "log_likelihood"
        assert f.length_bp("chr1") == 3950 and f.dtype("chr1") == "float64" and f.compression("chr1") == "gzip"
        np.testing.assert_array_equal(f.read("chr1", 3, 17), x[3:17])
    assert [n for n in os.listdir(tmp_path)] == ["t.h5"]


def test_writer_removes_temp_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with TracksWriter(tmp_path / "t.h5", labels=["A"], bin_size=10) as w:
            w.add_contig("c", 5)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_rejects_bad_bins_and_names(tmp_path):
    with TracksWriter(tmp_path / "t.h5", labels=["A"], bin_size=10) as w:
        with pytest.raises(DataError, match="do not fit"):
            w.add_contig("c", 7, length_bp=100)
        with pytest.raises(DataError, match="'/'"):
            w.add_contig("a/b", 3)
        # (rows left unwritten on purpose: an explicit fill value allows that)
        w.add_contig("c", 10, length_bp=100, fill_value=0)  # floor and ceil agree
        w.add_contig("d", 9, length_bp=95, fill_value=0)     # floor (partial bin dropped)
        with pytest.raises(DataError, match="outside"):
            w.write("c", 8, np.zeros((3, 1)))


@pytest.mark.parametrize("attr, expected", [(True, ["chr10", "chr2", "chr1"]), (False, ["chr10", "chr2", "chr1"])])
def test_contig_order_attr_or_creation(tmp_path, attr, expected):
    path = write_tracks(tmp_path / "t.h5", {"chr10": 3, "chr2": 3, "chr1": 3}, contigs_attr=attr)
    with open_tracks(path) as f:
        assert f.contigs == expected


def test_contig_order_natural_sort_without_tracking(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:  # as another tool might write it: no order tracked
        f.attrs.update({"format": "flashseg.tracks", "format_version": 1, "labels": ["A"], "bin_size": 5,
                        "score": "log_likelihood"})
        for name in ["chr10", "chrX", "chr2", "chr1"]:
            f[f"tracks/{name}"] = np.zeros((2, 1), dtype=np.float16)
    with open_tracks(path) as f:
        assert f.contigs == ["chr1", "chr2", "chr10", "chrX"]
        assert f.dtype("chr1") == "float16"


def test_score_kinds(tmp_path):
    p = np.array([[0.25, 0.75], [0.0, 1.0]])
    with open_tracks(write_tracks(tmp_path / "p.h5", {"c": 2}, score="probability", dtype="float64",
                                  values={"c": p})) as f:
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(f.read("c", 0, 2), np.log(p))
        assert f.read("c", 1, 2)[0, 0] == -np.inf
    logits = np.array([[1.0, 3.0], [0.0, 0.0]])
    with open_tracks(write_tracks(tmp_path / "l.h5", {"c": 2}, score="logit", dtype="float64",
                                  values={"c": logits})) as f:
        y = f.read("c", 0, 2)
        np.testing.assert_allclose(np.exp(y).sum(axis=1), 1.0)
        np.testing.assert_allclose(y[0], [1 - 3 - np.log(1 + np.exp(-2)), -np.log(1 + np.exp(-2))])
    ll = np.array([[-np.inf, -1.0]])
    with open_tracks(write_tracks(tmp_path / "ll.h5", {"c": 1}, score="log_probability", values={"c": ll})) as f:
        np.testing.assert_array_equal(f.read("c", 0, 1), ll)


def test_nan_error_names_first_bad_bin_and_nan_as_missing(tmp_path):
    x = np.ones((50, 2))
    x[17, 1] = np.nan
    x[30, 0] = np.nan
    path = write_tracks(tmp_path / "t.h5", {"chrA": 50}, values={"chrA": x})
    with open_tracks(path) as f:
        with pytest.raises(DataError, match=r"contig chrA: bin 17: NaN"):
            f.read("chrA", 10, 40)
        y = f.read("chrA", 10, 40, nan_as_missing=True)
        assert (y[7] == 0).all() and (y[20] == 0).all() and (y[0] == 1).all()


def test_float16_reads_as_float64(tmp_path):
    path = write_tracks(tmp_path / "t.h5", {"c": 4}, dtype="float16", values={"c": np.full((4, 2), 0.1)})
    with open_tracks(path) as f:
        y = f.read("c", 0, 4)
        assert y.dtype == np.float64 and np.allclose(y, np.float16(0.1))


def test_track_set_weights_and_label_order(tmp_path):
    a = write_tracks(tmp_path / "a.h5", {"c": 5}, labels=("A", "B"), dtype="float64", seed=1)
    b = write_tracks(tmp_path / "b.h5", {"c": 5}, labels=("B", "A"), dtype="float64", seed=2)
    with open_tracks(a) as fa, open_tracks(b) as fb:
        xa, xb = fa.read("c", 0, 5), fb.read("c", 0, 5)
    with open_track_set([a, f"{b}:0.5"], ["B", "A"]) as ts:
        got = ts.emissions("c")(0, 5)
    np.testing.assert_allclose(got, xa[:, ::-1] + 0.5 * xb)


def test_emissions_offset_gaps_and_ranges_only(tmp_path, monkeypatch):
    x = np.arange(200, dtype=np.float64).reshape(100, 2)
    path = write_tracks(tmp_path / "t.h5", {"c": 100}, dtype="float64", values={"c": x})
    ts = open_track_set([path])
    reads = []
    original = ts.files[0].read_raw
    monkeypatch.setattr(ts.files[0], "read_raw", lambda c, a, b: (reads.append((a, b)), original(c, a, b))[1])
    em = ts.emissions("c", offset=40, n_bins=30, gaps=np.array([[10, 20], [45, 48], [90, 95]]))
    got = em(0, 30)
    expected = x[40:70].copy()
    expected[5:8] = 0
    np.testing.assert_array_equal(got, expected)
    em(25, 30)
    assert reads == [(40, 70), (65, 70)]  # only the asked rows, shifted by the offset
    with pytest.raises(ValueError):
        em(0, 31)
    ts.close()


def test_parse_track_spec():
    assert parse_track_spec("a.h5") == ("a.h5", 1.0)
    assert parse_track_spec("a.h5:0.5") == ("a.h5", 0.5)
    assert parse_track_spec("dir:x/a.h5") == ("dir:x/a.h5", 1.0)


def test_track_set_rejects_missing_contig(tmp_path):
    a = write_tracks(tmp_path / "a.h5", {"c": 5, "d": 2})
    b = write_tracks(tmp_path / "b.h5", {"c": 5})
    with pytest.raises(DataError, match="contig d: contig is not in"):
        TrackSet([open_tracks(a), open_tracks(b)])
