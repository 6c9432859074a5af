"""Raw observations: HDF5 files of M named features per bin (docs/formats.md, "Observations").

Layout::

    /                       attrs: format = "flashseg.observations", format_version = 1,
                                   features = [...] (M names), kind = binary | count | continuous,
                                   bin_size (int >= 1), contigs = [...] (optional contig order)
    /observations/<contig>  shape (T, M), chunked along axis 0:
                              binary      uint8, 0 / 1, 2 = missing (ChromHMM's code)
                              count       int32 >= 0, -1 = missing
                              continuous  float32 | float64, NaN = missing
        attrs: length       contig length in bp (optional; checked against the FASTA)

Contigs, bins, lengths and chunking follow the tracks' conventions
(:mod:`flashseg.io.tracks`). :class:`ObservationsWriter` writes atomically;
:class:`ObservationsFile` reads rows as float64 with NaN for missing values,
checking each value against its kind. :class:`ObservationScores` turns a file
into per-label log-likelihoods with a model's ``emissions:`` section, so it
joins tracks in a :class:`flashseg.io.tracks.TrackSet` as one more score
source.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import DataError
from .binned_hdf5 import DEFAULT_CHUNK_ROWS, BinnedReader, BinnedWriter, check_names, str_list

log = logging.getLogger(__name__)

FORMAT = "flashseg.observations"
FORMAT_VERSION = 1
#: kind -> (storage dtypes, the code for a missing value, description)
KINDS = {
    "binary": (("uint8",), 2, "0/1, 2 = missing"),
    "count": (("int32",), -1, "counts >= 0, -1 = missing"),
    "continuous": (("float32", "float64"), None, "numbers, NaN = missing"),
}
MISSING_BINARY = 2
MISSING_COUNT = -1


def _storage_dtype(kind: str, dtype: str | None) -> str:
    allowed = KINDS[kind][0]
    if dtype is None:
        return allowed[0]
    if str(np.dtype(dtype)) not in allowed:
        raise ValueError(f"{kind} observations are stored as {' or '.join(allowed)}, not {dtype}")
    return str(np.dtype(dtype))


def _first_bad(bad: np.ndarray) -> tuple[int, int]:
    row = int(np.argmax(bad.any(axis=1)))
    return row, int(np.argmax(bad[row]))


def check_values(kind: str, x: np.ndarray, features, *, path: str, contig: str, start: int) -> None:
    """Refuse values a kind cannot hold (names the file, contig, bin and feature)."""
    if kind == "binary":
        bad = x > MISSING_BINARY
        what = "binary observations must be 0, 1 or 2 (missing)"
    elif kind == "count":
        bad = x < MISSING_COUNT
        what = "counts must be >= 0, or -1 (missing)"
    else:
        bad = np.isinf(x)
        what = "continuous observations must be finite (NaN = missing)"
    if bad.any():
        row, col = _first_bad(bad)
        raise DataError(f"{what}; feature {features[col]} is {x[row, col].item()!r}", file=path, contig=contig,
                        bin=start + row)


class ObservationsWriter(BinnedWriter):
    """Write an observations file contig by contig (atomic, like TracksWriter).

    >>> with ObservationsWriter("obs.h5", features=["H3K4me3", "H3K27ac"], kind="binary",
    ...                         bin_size=200) as w:
    ...     w.add_contig("chr1", 1000, length_bp=199_950)
    ...     w.write("chr1", 0, rows)      # (n, 2) uint8, 2 = missing
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    GROUP = "observations"

    def __init__(self, path, features, kind: str, bin_size: int, dtype: str | None = None,
                 compression: str | None = "lzf", chunk_rows: int = DEFAULT_CHUNK_ROWS):
        path = str(path)
        self.features = check_names(features, "feature", path)
        if kind not in KINDS:
            raise DataError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", file=path)
        self.kind = kind
        try:
            dtype = _storage_dtype(kind, dtype)
        except ValueError as exc:
            raise DataError(str(exc), file=path) from None
        super().__init__(path, width=len(self.features), bin_size=bin_size, dtype=dtype,
                         compression=compression, chunk_rows=chunk_rows)

    def root_attrs(self) -> dict:
        return {"features": self.features, "kind": self.kind}

    @property
    def missing(self):
        """This kind's code for a missing value (2, -1 or NaN)."""
        return {"binary": MISSING_BINARY, "count": MISSING_COUNT, "continuous": np.nan}[self.kind]

    def add_contig(self, name: str, n_bins: int, length_bp: int | None = None, fill_value=None) -> None:
        """Every row must be written, as for tracks; with an explicit ``fill_value`` (typically
        ``self.missing``) rows never written are allowed and read as it."""
        if fill_value is not None:
            try:
                self._check_rows(name, 0, np.full((1, self.width), fill_value))
            except DataError as exc:
                raise DataError(f"fill_value {fill_value!r} is not a {self.kind} observation ({exc.message})",
                                file=self.path, contig=str(name)) from None
        super().add_contig(name, n_bins, length_bp, fill_value=fill_value)

    def _check_rows(self, name: str, start_bin: int, array) -> None:
        x = np.asarray(array)
        if self.kind in ("binary", "count"):
            if x.dtype.kind == "f":
                if np.isnan(x).any() or (x != np.round(x)).any():
                    raise DataError(f"{self.kind} observations must be integers", file=self.path, contig=name)
            if self.kind == "binary" and (x < 0).any():
                row, col = _first_bad(x < 0)
                raise DataError(f"binary observations must be 0, 1 or 2 (missing); feature "
                                f"{self.features[col]} is {x[row, col].item()!r}", file=self.path, contig=name,
                                bin=start_bin + row)
            if self.kind == "count" and (x > np.iinfo(np.int32).max).any():
                raise DataError("count too large for int32", file=self.path, contig=name)
        check_values(self.kind, x, self.features, path=self.path, contig=name, start=start_bin)


class ObservationsFile(BinnedReader):
    """One open observations file. Use :func:`open_observations`."""

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    GROUP = "observations"
    WHAT = "a flashseg observations file"
    DTYPES = ("uint8", "int32", "float32", "float64")
    COLUMN_WORD = "features"

    def _columns(self, attrs) -> list[str]:
        if "features" not in attrs:
            raise DataError("missing 'features' attribute", file=self.path)
        try:
            features = str_list(attrs["features"])
        except UnicodeDecodeError:
            raise DataError("'features' are not UTF-8 text", file=self.path) from None
        if not features or len(set(features)) != len(features):
            raise DataError("'features' must be non-empty and unique", file=self.path)
        self.features = features
        kind = self.text_attr(attrs, "kind")
        if kind not in KINDS:
            raise DataError(f"kind attribute is {kind!r}, expected one of {', '.join(KINDS)}", file=self.path)
        self.kind = kind
        self.DTYPES = KINDS[kind][0]
        return features

    def read(self, contig: str, a: int, b: int, columns=None) -> np.ndarray:
        """Rows ``[a, b)`` (of ``columns``, default all) as float64, NaN = missing."""
        raw = self.read_raw(contig, a, b)
        if columns is not None:
            raw = raw[:, columns]
        features = self.features if columns is None else [self.features[j] for j in columns]
        check_values(self.kind, raw, features, path=self.path, contig=contig, start=a)
        x = raw.astype(np.float64)
        if self.kind == "binary":
            x[raw == MISSING_BINARY] = np.nan
        elif self.kind == "count":
            x[raw == MISSING_COUNT] = np.nan
        return x


def open_observations(path) -> ObservationsFile:
    """Open one observations file, checking its attributes (raises DataError naming the file)."""
    return ObservationsFile(path)


class ObservationScores:
    """Per-label log-likelihoods of an observations file under a model's emissions.

    Quacks like a :class:`flashseg.io.tracks.TracksFile` whose labels are the
    model's, so a TrackSet adds it to the tracks (weight 1). Features are
    matched by name: a model feature the file lacks is an error naming it;
    extra features in the file are ignored with one warning.
    """

    weight = 1.0
    score = "log_likelihood"

    def __init__(self, path, spec, *, warn: bool = True):
        emissions = spec.emissions
        if emissions is None:
            raise DataError('the model has no emissions section (docs/model.md, "Emissions"): --observations '
                            "needs one", file=spec.path)
        self.path = str(path)
        self.labels = list(spec.label_names)
        self.emissions = emissions
        self._file = open_observations(path)
        try:
            self._columns = self._match(warn)
        except BaseException:
            self._file.close()
            raise
        self.bin_size = self._file.bin_size
        self.contigs = self._file.contigs

    def _match(self, warn: bool) -> np.ndarray:
        f, em = self._file, self.emissions
        missing = [name for name in em.features if name not in f.features]
        if missing:
            raise DataError(f"feature {missing[0]} of the model's emissions is not in the file"
                            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
                            + f"; the file has {', '.join(f.features)}", file=self.path)
        from ..core.emissions import KIND_FAMILIES

        if em.family not in KIND_FAMILIES[f.kind]:
            raise DataError(f"{f.kind} observations cannot be scored with the model's {em.family} emissions "
                            f"(use {' or '.join(KIND_FAMILIES[f.kind])})", file=self.path)
        extra = [name for name in f.features if name not in em.features]
        if extra and warn:
            log.warning("%s: %d feature(s) not in the model's emissions are ignored: %s", self.path,
                        len(extra), ", ".join(extra))
        return np.array([f.features.index(name) for name in em.features], dtype=np.intp)

    def n_bins(self, contig: str) -> int:
        return self._file.n_bins(contig)

    def length_bp(self, contig: str) -> int | None:
        return self._file.length_bp(contig)

    def __contains__(self, contig: str) -> bool:
        return contig in self._file

    def read(self, contig: str, a: int, b: int, *, nan_as_missing: bool = False) -> np.ndarray:
        """(b - a, C) float64 log-likelihoods in the model's label order."""
        x = self._file.read(contig, a, b, self._columns)
        return self.emissions.log_likelihood(x)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
