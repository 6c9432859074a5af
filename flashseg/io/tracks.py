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
labels matched by name to the model's order. Reads are always of a bin
range, never a whole contig, so memory stays bounded by the chunk size.
"""
from __future__ import annotations

import contextlib
import math
import re
import threading

import numpy as np

from .. import bins
from ..errors import DataError
from ..errors import UsageError
from .output import (abandon_hdf5, check_writable_dir, commit, discard, is_special, resolved, temp_path_for,
                     write_error)

FORMAT = "flashseg.tracks"
FORMAT_VERSION = 1
SCORE_KINDS = ("log_likelihood", "log_probability", "probability", "logit")
DTYPES = ("float16", "float32", "float64")
COMPRESSIONS = (None, "none", "lzf", "gzip")
# Rows per HDF5 chunk: about 0.3 MB at C = 10 float32, small enough that a
# range read touches little extra data, large enough that lzf compresses well.
DEFAULT_CHUNK_ROWS = 8192
# Chunk cache per open file; chunks straddling the core's range boundaries
# are then decompressed once.
_CACHE_BYTES = 32 << 20


def natural_key(name: str):
    """chr2 before chr10: digits compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part != ""]


def _str_list(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value[()])
    return str(value)


class TracksWriter:
    """Write a tracks file contig by contig, chunk by chunk.

    >>> with TracksWriter("x.h5", labels=["A", "B"], bin_size=200) as w:
    ...     w.add_contig("chr1", 1000, length_bp=199_950)
    ...     w.write("chr1", 0, scores)          # (n, 2) array, any float dtype

    The file is written to a unique temporary name beside ``path`` and
    renamed on successful exit of the ``with`` block; it is removed when the
    block raises.
    """

    def __init__(self, path, labels, bin_size: int, score: str = "log_likelihood",
                 dtype: str = "float32", compression: str | None = "lzf",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.path = str(path)
        self.labels = [str(x) for x in labels]
        if not self.labels:
            raise DataError("tracks need at least one label", file=self.path)
        if len(set(self.labels)) != len(self.labels):
            raise DataError("duplicate label names", file=self.path)
        if int(bin_size) != bin_size or bin_size < 1:
            raise DataError(f"bin_size must be an integer >= 1, got {bin_size}", file=self.path)
        if score not in SCORE_KINDS:
            raise DataError(f"score must be one of {', '.join(SCORE_KINDS)}, got {score!r}", file=self.path)
        if str(np.dtype(dtype)) not in DTYPES:
            raise DataError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}", file=self.path)
        if compression not in COMPRESSIONS:
            raise DataError(f"compression must be none, lzf or gzip, got {compression!r}", file=self.path)
        self.bin_size = int(bin_size)
        self.score = score
        self.dtype = np.dtype(dtype)
        self.compression = None if compression in (None, "none") else compression
        self.chunk_rows = int(chunk_rows)
        self.contigs: list[str] = []
        self._n_bins: dict[str, int] = {}
        self._file = None
        self._temp = None
        self._failed = False
        self._datasets = {}   # open handles, kept until close (see __exit__)
        self._lock = threading.Lock()

    # -- context manager -------------------------------------------------
    def __enter__(self):
        import h5py

        if is_special(resolved(self.path)):
            raise UsageError(f"an HDF5 output must be a regular file, not a device or pipe: {self.path}")
        check_writable_dir(self.path)
        self._temp = temp_path_for(self.path)
        try:
            self._file = h5py.File(self._temp, "w", track_order=True)
        except OSError as exc:
            discard(self._temp)
            raise DataError(f"cannot create file: {exc}", file=self.path) from None
        with self._writing():
            attrs = self._file.attrs
            attrs["format"] = FORMAT
            attrs["format_version"] = FORMAT_VERSION
            attrs["labels"] = self.labels
            attrs["bin_size"] = self.bin_size
            attrs["score"] = self.score
            self._file.create_group("tracks", track_order=True)
        return self

    @contextlib.contextmanager
    def _writing(self):
        """HDF5 writes whose failures (a full disk) name this file in one line."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            self._failed = True
            raise write_error(exc, self.path) from None

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._failed:
            try:
                with self._writing():
                    # Flush each dataset while its errors can still be raised here: a
                    # handle dropped with unwritten chunks would fail in its destructor,
                    # where h5py can only print the error (and later crash).
                    for ds in self._datasets.values():
                        ds.flush()
                    self._file.attrs["contigs"] = self.contigs if self.contigs else np.array([], dtype=object)
                    self._file.close()
            except BaseException:
                abandon_hdf5(self._file, self._temp)
                raise
            commit(self._temp, self.path)
        elif self._failed:
            abandon_hdf5(self._file, self._temp)
        else:
            try:
                self._file.close()
            except (OSError, RuntimeError):
                abandon_hdf5(self._file, self._temp)
            finally:
                discard(self._temp)
        return False

    # -- content ---------------------------------------------------------
    def add_contig(self, name: str, n_bins: int, length_bp: int | None = None,
                   fill_value: float | None = None) -> None:
        """Create ``/tracks/<name>`` with ``n_bins`` rows; contigs keep this order.

        Rows never written read as ``fill_value`` (0 by default) and take no space.
        """
        name = str(name)
        if not name or "/" in name:
            raise DataError("contig names may not be empty or contain '/'", file=self.path, contig=name)
        if name in self._n_bins:
            raise DataError("contig added twice", file=self.path, contig=name)
        n_bins = int(n_bins)
        if n_bins < 0:
            raise DataError("negative number of bins", file=self.path, contig=name)
        if length_bp is not None:
            length_bp = int(length_bp)
            allowed = {bins.n_bins(length_bp, self.bin_size), bins.full_bins(length_bp, self.bin_size)}
            if n_bins not in allowed:
                raise DataError(f"{n_bins} bins do not fit a length of {length_bp} bp at bin size "
                                f"{self.bin_size} (expected {' or '.join(map(str, sorted(allowed)))})",
                                file=self.path, contig=name)
        C = len(self.labels)
        chunks = (max(1, min(self.chunk_rows, n_bins)), C)
        with self._lock, self._writing():
            ds = self._file["tracks"].create_dataset(
                name, shape=(n_bins, C), dtype=self.dtype, chunks=chunks,
                compression=self.compression, fillvalue=fill_value,
                # an empty dataset can only be chunked if it may grow
                maxshape=(None, C) if n_bins == 0 else None)
            if length_bp is not None:
                ds.attrs["length"] = length_bp
            self._datasets[name] = ds
            self.contigs.append(name)
            self._n_bins[name] = n_bins

    def write(self, name: str, start_bin: int, array) -> None:
        """Write rows ``[start_bin, start_bin + len(array))`` of a contig."""
        if name not in self._n_bins:
            raise DataError("write to a contig that was not added", file=self.path, contig=name)
        array = np.asarray(array)
        C = len(self.labels)
        if array.ndim != 2 or array.shape[1] != C:
            raise DataError(f"expected an (n, {C}) array, got shape {array.shape}", file=self.path, contig=name)
        stop = start_bin + array.shape[0]
        if start_bin < 0 or stop > self._n_bins[name]:
            raise DataError(f"rows [{start_bin}, {stop}) outside [0, {self._n_bins[name]})",
                            file=self.path, contig=name)
        with self._lock, self._writing():
            self._datasets[name][start_bin:stop] = array.astype(self.dtype, copy=False)

    def set_contig_attr(self, name: str, key: str, value) -> None:
        with self._lock, self._writing():
            self._datasets[name].attrs[key] = value

    def add_array(self, hdf5_path: str, array, **attrs) -> None:
        """Store an extra dataset (e.g. ``/depth/chr1``) beside the tracks."""
        if hdf5_path.strip("/").split("/")[0] == "tracks":
            raise DataError("extra arrays may not live under /tracks", file=self.path)
        with self._lock, self._writing():
            ds = self._file.create_dataset(hdf5_path, data=np.asarray(array))
            for key, value in attrs.items():
                ds.attrs[key] = value


class TracksFile:
    """One open tracks file. Use :func:`open_tracks`."""

    def __init__(self, path: str, weight: float = 1.0):
        import h5py

        self.path = str(path)
        self.weight = float(weight)
        if not math.isfinite(self.weight):
            raise DataError(f"track weight must be finite, got {weight}", file=self.path)
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_CACHE_BYTES)
        except FileNotFoundError:
            raise DataError("no such file", file=self.path) from None
        except OSError:
            raise DataError("not an HDF5 file (expected a flashseg tracks file)", file=self.path) from None
        self._lock = threading.Lock()
        attrs = self._file.attrs
        fmt = _attr_str(attrs["format"]) if "format" in attrs else None
        if fmt != FORMAT:
            self.close()
            raise DataError(f"format attribute is {fmt!r}, expected {FORMAT!r}", file=self.path)
        version = attrs.get("format_version")
        if version is None or int(np.asarray(version)) != FORMAT_VERSION:
            self.close()
            raise DataError(f"format_version {version} not supported (this flashseg reads {FORMAT_VERSION})",
                            file=self.path)
        if "labels" not in attrs:
            self.close()
            raise DataError("missing 'labels' attribute", file=self.path)
        self.labels = _str_list(attrs["labels"])
        if not self.labels or len(set(self.labels)) != len(self.labels):
            self.close()
            raise DataError("'labels' must be non-empty and unique", file=self.path)
        try:
            bin_size = float(np.asarray(attrs["bin_size"]))
        except (KeyError, TypeError, ValueError):
            self.close()
            raise DataError("missing or non-numeric 'bin_size' attribute", file=self.path) from None
        if bin_size != int(bin_size) or bin_size < 1:
            self.close()
            raise DataError(f"bin_size must be an integer >= 1, got {bin_size:g}", file=self.path)
        self.bin_size = int(bin_size)
        self.score = _attr_str(attrs["score"]) if "score" in attrs else None
        if self.score not in SCORE_KINDS:
            self.close()
            raise DataError(f"score attribute is {self.score!r}, expected one of {', '.join(SCORE_KINDS)}",
                            file=self.path)
        if "tracks" not in self._file:
            self.close()
            raise DataError("no /tracks group", file=self.path)
        self._group = self._file["tracks"]
        self.contigs = self._contig_order()
        self._datasets = {}
        C = len(self.labels)
        for name in self.contigs:
            ds = self._group[name]
            if not isinstance(ds, h5py.Dataset):
                self.close()
                raise DataError("/tracks entry is not a dataset", file=self.path, contig=name)
            if ds.ndim != 2 or ds.shape[1] != C:
                self.close()
                raise DataError(f"shape {ds.shape} does not match ({'T'}, {C}) for {C} labels",
                                file=self.path, contig=name)
            if str(ds.dtype) not in DTYPES:
                self.close()
                raise DataError(f"dtype {ds.dtype} not supported (float16, float32 or float64)",
                                file=self.path, contig=name)
            self._datasets[name] = ds

    def _contig_order(self) -> list[str]:
        import h5py

        present = list(self._group.keys())
        if "contigs" in self._file.attrs:
            listed = _str_list(self._file.attrs["contigs"])
            missing = [c for c in listed if c not in present]
            if missing:
                raise DataError(f"attribute 'contigs' lists {missing[0]!r} but /tracks has no such dataset",
                                file=self.path)
            if len(set(listed)) != len(listed):
                raise DataError("attribute 'contigs' lists a contig twice", file=self.path)
            extra = [c for c in present if c not in set(listed)]
            if extra:
                raise DataError(f"/tracks/{extra[0]} is not listed in the 'contigs' attribute", file=self.path)
            return listed
        gcpl = self._group.id.get_create_plist()
        if gcpl.get_link_creation_order() & h5py.h5p.CRT_ORDER_TRACKED:
            names = []
            self._group.id.links.iterate(
                lambda n: names.append(n.decode("utf-8") if isinstance(n, bytes) else n),
                idx_type=h5py.h5.INDEX_CRT_ORDER)
            return names
        return sorted(present, key=natural_key)

    # -- metadata --------------------------------------------------------
    def n_bins(self, contig: str) -> int:
        return int(self._datasets[contig].shape[0])

    def length_bp(self, contig: str) -> int | None:
        ds = self._datasets[contig]
        return int(np.asarray(ds.attrs["length"])) if "length" in ds.attrs else None

    def dtype(self, contig: str) -> str:
        return str(self._datasets[contig].dtype)

    def compression(self, contig: str) -> str:
        return self._datasets[contig].compression or "none"

    def __contains__(self, contig: str) -> bool:
        return contig in self._datasets

    # -- data ------------------------------------------------------------
    def read_raw(self, contig: str, a: int, b: int) -> np.ndarray:
        with self._lock:  # h5py serialises anyway; the lock keeps the chunk cache coherent
            return self._datasets[contig][a:b]

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

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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
        """The track's bin count must be ceil or floor of length / bin_size."""
        n = self.n_bins(contig)
        allowed = sorted({bins.n_bins(length_bp, self.bin_size), bins.full_bins(length_bp, self.bin_size)})
        if n not in allowed:
            where = f" in {fasta_path}" if fasta_path else ""
            raise DataError(f"{n} bins do not match the length {length_bp} bp{where} at bin size "
                            f"{self.bin_size} (expected {' or '.join(map(str, allowed))} bins)",
                            file=self.files[0].path, contig=contig)
        for f in self.files:
            recorded = f.length_bp(contig)
            if recorded is not None and recorded != length_bp:
                where = f" in {fasta_path}" if fasta_path else ""
                raise DataError(f"length attribute {recorded} bp differs from {length_bp} bp{where}",
                                file=f.path, contig=contig)

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


def open_track_set(specs, labels=None, *, nan_as_missing=False) -> TrackSet:
    """Open ``path[:weight]`` specs (strings or (path, weight) pairs) as one TrackSet."""
    files = []
    try:
        for spec in specs:
            path, weight = parse_track_spec(spec) if isinstance(spec, str) else spec
            files.append(open_tracks(path, weight))
        return TrackSet(files, labels, nan_as_missing=nan_as_missing)
    except BaseException:
        for f in files:
            f.close()
        raise
