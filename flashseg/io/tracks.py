"""Emission tracks: HDF5 files of per-bin scores (docs/formats.md, "Emission tracks").

Layout::

    /                       attrs: format = "flashseg.tracks", format_version = 1,
                                   labels = [...] (C names), bin_size (int >= 1),
                                   score = log_likelihood | log_probability | probability | logit,
                                   contigs = [...] (optional contig order)
    /tracks/<contig>        float16 | float32 | float64, shape (T, C), chunked along axis 0
        attrs: length       contig length in bp (optional; checked against the FASTA)

Writing: :class:`TracksWriter` (a context manager; the file appears under its
name only when the ``with`` block succeeds). Reading: :func:`open_tracks` for
one file, :class:`TrackSet` for several files combined with weights and with
labels matched by name to the model's order; observation files scored by a
model's emissions (:class:`flashseg.io.observations.ObservationScores`) join a
TrackSet as further sources. Reads are always of a bin
range, never a whole contig, so memory stays bounded by the chunk size.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from .binned_hdf5 import DEFAULT_CHUNK_ROWS, BinnedReader, BinnedWriter, check_length, check_names

FORMAT = "flashseg.tracks"
FORMAT_VERSION = 1
SCORE_KINDS = ("log_likelihood", "log_probability", "probability", "logit")
DTYPES = ("float16", "float32", "float64")


class TracksWriter(BinnedWriter):
    """Write a tracks file contig by contig, chunk by chunk.

    >>> with TracksWriter("x.h5", labels=["A", "B"], bin_size=200) as w:
    ...     w.add_contig("chr1", 1000, length_bp=199_950)
    ...     w.write("chr1", 0, scores)          # (n, 2) array, any float dtype

    The file is written to a unique temporary name beside ``path`` and
    renamed on successful exit of the ``with`` block; it is removed when the
    block raises.
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    GROUP = "tracks"

    def __init__(self, path, labels, bin_size: int, score: str = "log_likelihood",
                 dtype: str = "float32", compression: str | None = "lzf",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS):
        path = str(path)
        self.labels = check_names(labels, "label", path)
        if score not in SCORE_KINDS:
            raise DataError(f"score must be one of {', '.join(SCORE_KINDS)}, got {score!r}", file=path)
        if str(np.dtype(dtype)) not in DTYPES:
            raise DataError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}", file=path)
        self.score = score
        super().__init__(path, width=len(self.labels), bin_size=bin_size, dtype=dtype,
                         compression=compression, chunk_rows=chunk_rows)

    def root_attrs(self) -> dict:
        return {"labels": self.labels, "score": self.score}


class TracksFile(BinnedReader):
    """One open tracks file. Use :func:`open_tracks`."""

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    GROUP = "tracks"
    WHAT = "a flashseg tracks file"
    DTYPES = DTYPES
    COLUMN_WORD = "labels"

    def __init__(self, path: str, weight: float = 1.0):
        self.weight = float(weight)
        if not math.isfinite(self.weight):
            raise DataError(f"track weight must be finite, got {weight}", file=str(path))
        super().__init__(path)

    def _columns(self, attrs) -> list[str]:
        if "labels" not in attrs:
            raise DataError("missing 'labels' attribute", file=self.path)
        labels = self.text_attr(attrs, "labels", many=True)
        if not labels or len(set(labels)) != len(labels):
            raise DataError("'labels' must be non-empty and unique", file=self.path)
        self.labels = labels
        self.score = self.text_attr(attrs, "score")
        if self.score not in SCORE_KINDS:
            raise DataError(f"score attribute is {self.score!r}, expected one of {', '.join(SCORE_KINDS)}",
                            file=self.path)
        return labels

    # -- data ------------------------------------------------------------
    def read(self, contig: str, a: int, b: int, *, nan_as_missing: bool = False) -> np.ndarray:
        """Rows ``[a, b)`` as float64 log scores in this file's label order (unweighted)."""
        x = np.asarray(self.read_raw(contig, a, b), dtype=np.float64)
        nan_rows = None
        nan = np.isnan(x)
        if nan.any():
            rows = nan.any(axis=1)
            if not nan_as_missing:
                first = a + int(np.argmax(rows))
                raise DataError("NaN score (use --nan-as-missing to treat NaN bins as missing data)",
                                file=self.path, contig=contig, bin=first)
            nan_rows = rows
            x[rows] = 0.0 if self.score != "probability" else 1.0
        if self.score == "probability":
            bad = (x < 0) | (x > 1)
            if bad.any():
                first = int(np.argmax(bad.any(axis=1)))
                value = x[first][bad[first]][0]
                raise DataError(f"probability {value:g} outside [0, 1]", file=self.path,
                                contig=contig, bin=a + first)
            with np.errstate(divide="ignore"):
                x = np.log(x)
        else:
            pinf = np.isposinf(x)
            if pinf.any():
                first = int(np.argmax(pinf.any(axis=1)))
                raise DataError("+inf score", file=self.path, contig=contig, bin=a + first)
            if self.score == "logit":
                x = _log_softmax(x)
        if nan_rows is not None:
            x[nan_rows] = 0.0
        return x


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=1, keepdims=True)
    all_neg_inf = ~np.isfinite(m)
    m = np.where(all_neg_inf, 0.0, m)
    with np.errstate(divide="ignore"):
        return x - m - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))


def open_tracks(path, weight: float = 1.0) -> TracksFile:
    """Open one tracks file, checking its attributes (raises DataError naming the file)."""
    return TracksFile(path, weight)


def parse_track_spec(spec: str) -> tuple[str, float]:
    """``file.h5`` or ``file.h5:0.5`` -> (path, weight). A suffix that is not a number stays in the path."""
    path, sep, tail = spec.rpartition(":")
    if sep:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return spec, 1.0


class TrackSet:
    """Several track files summed with weights, columns in the model's label order."""

    def __init__(self, files: list[TracksFile], labels: list[str] | None = None,
                 *, nan_as_missing: bool = False):
        if not files:
            raise DataError("no tracks given")
        self.files = files
        self.labels = list(labels) if labels is not None else list(files[0].labels)
        self.nan_as_missing = nan_as_missing
        self._columns = []
        want = set(self.labels)
        for f in files:
            have = set(f.labels)
            if have != want:
                missing = [x for x in self.labels if x not in have]
                extra = [x for x in f.labels if x not in want]
                parts = []
                if missing:
                    parts.append(f"missing label(s) {', '.join(missing)}")
                if extra:
                    parts.append(f"unknown label(s) {', '.join(extra)}")
                raise DataError(f"labels do not match the model's: {'; '.join(parts)}", file=f.path)
            # column j of the model = column perm[j] of this file
            self._columns.append(np.array([f.labels.index(x) for x in self.labels]))
        first = files[0]
        for f in files[1:]:
            if f.bin_size != first.bin_size:
                raise DataError(f"bin_size {f.bin_size} differs from {first.path}'s {first.bin_size}",
                                file=f.path)
        self.bin_size = first.bin_size
        self.contigs = list(first.contigs)
        for f in files[1:]:
            for c in f.contigs:
                if c not in first:
                    raise DataError(f"contig is not in {first.path}", file=f.path, contig=c)
            for c in first.contigs:
                if c not in f:
                    raise DataError(f"contig is not in {f.path}", file=first.path, contig=c)
                if f.n_bins(c) != first.n_bins(c):
                    raise DataError(f"{f.n_bins(c)} bins but {first.path} has {first.n_bins(c)}",
                                    file=f.path, contig=c)

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def __contains__(self, contig: str) -> bool:
        return contig in self.files[0]

    def n_bins(self, contig: str) -> int:
        return self.files[0].n_bins(contig)

    def length_bp(self, contig: str) -> int | None:
        for f in self.files:
            length = f.length_bp(contig)
            if length is not None:
                return length
        return None

    def check_length(self, contig: str, length_bp: int, fasta_path: str | None = None) -> None:
        """The bin count must be ceil or floor of length / bin_size; recorded lengths must agree."""
        check_length(self, contig, length_bp, fasta_path, [(f.path, f.length_bp(contig)) for f in self.files])

    def read(self, contig: str, a: int, b: int) -> np.ndarray:
        """Summed, weighted float64 log scores for bins ``[a, b)``, model label order."""
        total = None
        for f, cols in zip(self.files, self._columns):
            x = f.read(contig, a, b, nan_as_missing=self.nan_as_missing)[:, cols]
            if f.weight != 1.0:
                with np.errstate(invalid="ignore"):
                    # 0 * -inf would be NaN: a zero weight ignores the file entirely.
                    x = np.zeros_like(x) if f.weight == 0.0 else x * f.weight
            if total is None:
                total = x if x.flags.c_contiguous else np.ascontiguousarray(x)
            else:
                total += x
        return total

    def emissions(self, contig: str, *, offset: int = 0, n_bins: int | None = None,
                  gaps: np.ndarray | None = None):
        """A callable ``(a, b) -> (b - a, C)`` float64 for the core.

        ``offset``: bin of the contig that is bin 0 of the decoded range
        (``--region``). ``gaps``: (G, 2) sorted half-open bin ranges of the
        contig whose rows contribute 0 for every label (N-gap masking).
        """
        total = self.n_bins(contig)
        n = total - offset if n_bins is None else n_bins
        if offset < 0 or offset + n > total:
            raise DataError(f"bins [{offset}, {offset + n}) outside [0, {total})", contig=contig)
        gaps = None if gaps is None or len(gaps) == 0 else np.asarray(gaps, dtype=np.int64)

        def emissions(a: int, b: int) -> np.ndarray:
            if a < 0 or b > n or a > b:
                raise ValueError(f"emission range [{a}, {b}) outside [0, {n})")
            x = self.read(contig, offset + a, offset + b)
            if gaps is not None:
                lo, hi = offset + a, offset + b
                first = np.searchsorted(gaps[:, 1], lo, side="right")
                for gs, ge in gaps[first:]:
                    if gs >= hi:
                        break
                    x[max(gs, lo) - lo:min(ge, hi) - lo] = 0.0
            return x

        emissions.n_bins = n
        emissions.contig = contig
        return emissions

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_track_set(specs, labels=None, *, nan_as_missing=False, observations=(), spec=None) -> TrackSet:
    """Open ``path[:weight]`` specs (strings or (path, weight) pairs), and observation
    files scored with ``spec``'s emissions, as one TrackSet whose scores add."""
    from .observations import ObservationScores

    files = []
    try:
        for item in specs:
            path, weight = parse_track_spec(item) if isinstance(item, str) else item
            files.append(open_tracks(path, weight))
        for path in observations:
            files.append(ObservationScores(path, spec))
        return TrackSet(files, labels, nan_as_missing=nan_as_missing)
    except BaseException:
        for f in files:
            f.close()
        raise
