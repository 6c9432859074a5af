"""What the two per-bin HDF5 kinds share (docs/formats.md): emission tracks
(:mod:`flashseg.io.tracks`) and raw observations
(:mod:`flashseg.io.observations`) are both one 2-D dataset per contig under a
group, rows = bins, with the same root attributes for format, version, bin
size and contig order, and the same ``length`` attribute per contig.

:class:`BinnedWriter` writes such a file atomically (a temporary beside the
target, renamed when the ``with`` block succeeds, removed when it fails);
:class:`BinnedReader` opens one and checks everything but the columns'
meaning, which its subclass checks. Only those two modules use this one.
"""
from __future__ import annotations

import contextlib
import math
import re
import threading

import numpy as np

from .. import bins
from ..errors import DataError, UsageError
from .names import check_contig_names
from .values import short
from .output import (abandon_hdf5, check_writable_dir, commit, discard, is_special, resolved, temp_path_for,
                     write_error)

COMPRESSIONS = (None, "none", "lzf", "gzip")
# Rows per HDF5 chunk: about 0.3 MB at C = 10 float32, small enough that a
# range read touches little extra data, large enough that lzf compresses well.
DEFAULT_CHUNK_ROWS = 8192
# Chunk cache per open file; chunks straddling the core's range boundaries
# are then decompressed once.
CACHE_BYTES = 32 << 20


def natural_key(name: str):
    """chr2 before chr10: digits compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part != ""]


def str_list(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return attr_str(value[()])
    return str(value)


def check_names(names, what: str, path: str) -> list[str]:
    names = [str(x) for x in names]
    if not names:
        raise DataError(f"need at least one {what}", file=path)
    if len(set(names)) != len(names):
        raise DataError(f"duplicate {what} names", file=path)
    return names


class BinnedWriter:
    """Write a binned HDF5 file contig by contig, chunk by chunk.

    Subclasses set ``FORMAT``, ``FORMAT_VERSION``, ``GROUP`` and the root
    attributes (:meth:`root_attrs`); ``width`` is the number of columns.
    """

    FORMAT = ""
    FORMAT_VERSION = 1
    GROUP = ""

    def __init__(self, path, *, width: int, bin_size: int, dtype, compression: str | None = "lzf",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.path = str(path)
        if int(bin_size) != bin_size or bin_size < 1:
            raise DataError(f"bin_size must be an integer >= 1, got {bin_size}", file=self.path)
        if compression not in COMPRESSIONS:
            raise DataError(f"compression must be none, lzf or gzip, got {compression!r}", file=self.path)
        self.width = int(width)
        self.bin_size = int(bin_size)
        self.dtype = np.dtype(dtype)
        self.compression = None if compression in (None, "none") else compression
        self.chunk_rows = int(chunk_rows)
        self.contigs: list[str] = []
        self._n_bins: dict[str, int] = {}
        self._file = None
        self._temp = None
        self._failed = False
        self._datasets = {}   # open handles, kept until close (see __exit__)
        # rows written so far, as [start, stop) spans, for contigs added without a fill value:
        # their unwritten rows are an error at close (see _check_written)
        self._written: dict[str, list[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def root_attrs(self) -> dict:
        """Root attributes besides format, format_version, bin_size and contigs."""
        return {}

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
            attrs["format"] = self.FORMAT
            attrs["format_version"] = self.FORMAT_VERSION
            for key, value in self.root_attrs().items():
                attrs[key] = value
            attrs["bin_size"] = self.bin_size
            self._file.create_group(self.GROUP, track_order=True)
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
        import h5py

        if exc_type is None and not self._failed:
            try:
                self._check_written()
            except DataError:
                self._discard()
                raise
            try:
                with self._writing():
                    # Flush each dataset while its errors can still be raised here: a
                    # handle dropped with unwritten chunks would fail in its destructor,
                    # where h5py can only print the error (and later crash).
                    for ds in self._datasets.values():
                        ds.flush()
                    self._file.attrs["contigs"] = np.array(self.contigs, dtype=h5py.string_dtype())
                    self._file.close()
            except BaseException:
                abandon_hdf5(self._file, self._temp)
                raise
            commit(self._temp, self.path)
        elif self._failed:
            abandon_hdf5(self._file, self._temp)
        else:
            self._discard()
        return False

    def _discard(self) -> None:
        """Close and remove the temporary of a file that will not be published."""
        try:
            self._file.close()
        except (OSError, RuntimeError):
            abandon_hdf5(self._file, self._temp)
        finally:
            discard(self._temp)

    # -- content ---------------------------------------------------------
    def add_contig(self, name: str, n_bins: int, length_bp: int | None = None,
                   fill_value: float | None = None) -> None:
        """Create ``/<group>/<name>`` with ``n_bins`` rows; contigs keep this order.

        Every row must then be written (a row never written would silently read
        as 0, i.e. no evidence): closing the writer with unwritten rows is a
        DataError naming the contig and the first unwritten bin. With an
        explicit ``fill_value``, rows never written are allowed, read as it and
        take no space (posteriors of a ``--region`` leave the rest NaN).
        """
        name = str(name)
        if not name or "/" in name:
            raise DataError("contig names may not be empty or contain '/'", file=self.path, contig=name)
        check_contig_names([name], file=self.path)
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
        chunks = (max(1, min(self.chunk_rows, n_bins)), self.width)
        with self._lock, self._writing():
            ds = self._file[self.GROUP].create_dataset(
                name, shape=(n_bins, self.width), dtype=self.dtype, chunks=chunks,
                compression=self.compression, fillvalue=fill_value,
                # an empty dataset can only be chunked if it may grow
                maxshape=(None, self.width) if n_bins == 0 else None)
            if length_bp is not None:
                ds.attrs["length"] = length_bp
            self._datasets[name] = ds
            self.contigs.append(name)
            self._n_bins[name] = n_bins
            if fill_value is None:
                self._written[name] = []

    def write(self, name: str, start_bin: int, array) -> None:
        """Write rows ``[start_bin, start_bin + len(array))`` of a contig."""
        if name not in self._n_bins:
            raise DataError("write to a contig that was not added", file=self.path, contig=name)
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != self.width:
            raise DataError(f"expected an (n, {self.width}) array, got shape {array.shape}",
                            file=self.path, contig=name)
        stop = start_bin + array.shape[0]
        if start_bin < 0 or stop > self._n_bins[name]:
            raise DataError(f"rows [{start_bin}, {stop}) outside [0, {self._n_bins[name]})",
                            file=self.path, contig=name)
        self._check_rows(name, start_bin, array)
        with self._lock, self._writing():
            self._datasets[name][start_bin:stop] = array.astype(self.dtype, copy=False)
            spans = self._written.get(name)
            if spans is not None and stop > start_bin:
                if spans and spans[-1][1] == start_bin:
                    spans[-1] = (spans[-1][0], stop)   # the usual case: chunks in order
                else:
                    spans.append((start_bin, stop))
                    if len(spans) > 1024:
                        spans[:] = _merged(spans)

    def _check_written(self) -> None:
        """Every row of a contig added without a fill value was written; else a DataError
        naming the contig and its first unwritten bin."""
        for name, spans in self._written.items():
            n_bins = self._n_bins[name]
            merged = _merged(spans)
            if n_bins == 0 or merged == [(0, n_bins)]:
                continue
            covered = merged[0][1] if merged and merged[0][0] == 0 else 0
            end = next((start for start, _ in merged if start > covered), n_bins)
            raise DataError(f"rows [{covered}, {end}) of {n_bins} were never written: every row must be written "
                            "(an unwritten row would silently read as 0), unless the contig is added with a "
                            "fill_value", file=self.path, contig=name, bin=covered)

    def _check_rows(self, name: str, start_bin: int, array) -> None:
        """Subclasses refuse values their format cannot hold."""

    def set_contig_attr(self, name: str, key: str, value) -> None:
        with self._lock, self._writing():
            self._datasets[name].attrs[key] = value

    def add_array(self, hdf5_path: str, array, **attrs) -> None:
        """Store an extra dataset (e.g. ``/depth/chr1``) beside the per-contig group."""
        if hdf5_path.strip("/").split("/")[0] == self.GROUP:
            raise DataError(f"extra arrays may not live under /{self.GROUP}", file=self.path)
        with self._lock, self._writing():
            ds = self._file.create_dataset(hdf5_path, data=np.asarray(array))
            for key, value in attrs.items():
                ds.attrs[key] = value


def _merged(spans) -> list[tuple[int, int]]:
    """Sorted [start, stop) spans with overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            if stop > out[-1][1]:
                out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


class BinnedReader:
    """One open binned HDF5 file: root attributes, contig order, datasets.

    Subclasses set ``FORMAT``, ``FORMAT_VERSION``, ``GROUP``, ``WHAT`` (a
    phrase for messages), ``DTYPES`` and read their own column attributes in
    :meth:`_columns`, which returns the column names.
    """

    FORMAT = ""
    FORMAT_VERSION = 1
    GROUP = ""
    WHAT = ""
    DTYPES: tuple[str, ...] = ()

    def __init__(self, path: str):
        import h5py

        self.path = str(path)
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=CACHE_BYTES)
        except FileNotFoundError:
            raise DataError("no such file", file=self.path) from None
        except (PermissionError, IsADirectoryError) as exc:
            raise DataError(f"cannot open: {exc.strerror or exc}", file=self.path) from None
        except OSError as exc:
            if "truncated file" in str(exc):
                raise DataError("truncated HDF5 file (an interrupted copy or download?)",
                                file=self.path) from None
            raise DataError(f"not an HDF5 file (expected {self.WHAT})", file=self.path) from None
        self._lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        import h5py

        attrs = self._file.attrs
        fmt = self.text_attr(attrs, "format")
        if fmt != self.FORMAT:
            raise DataError(f"format attribute is {fmt!r}, expected {self.FORMAT!r}", file=self.path)
        version = attrs.get("format_version")
        try:
            version_ok = version is not None and float(np.asarray(version)) == self.FORMAT_VERSION
        except (TypeError, ValueError):
            version_ok = False
        if not version_ok:
            raise DataError(f"format_version {version} not supported (this flashseg reads {self.FORMAT_VERSION})",
                            file=self.path)
        self.columns = self._columns(attrs)
        try:
            bin_size = float(np.asarray(attrs["bin_size"]))
        except (KeyError, TypeError, ValueError):
            raise DataError("missing or non-numeric 'bin_size' attribute", file=self.path) from None
        if not math.isfinite(bin_size) or bin_size != int(bin_size) or not 1 <= bin_size <= bins.MAX_BIN_SIZE:
            raise DataError(f"bin_size must be an integer in [1, {bins.MAX_BIN_SIZE}], got {bin_size:g}",
                            file=self.path)
        self.bin_size = int(bin_size)
        if self.GROUP not in self._file:
            raise DataError(f"no /{self.GROUP} group", file=self.path)
        self._group = self._file[self.GROUP]
        if not isinstance(self._group, h5py.Group):
            raise DataError(f"/{self.GROUP} is not a group", file=self.path)
        try:
            self.contigs = self._contig_order()
        except UnicodeDecodeError:
            raise DataError("contig names are not UTF-8 text", file=self.path) from None
        check_contig_names(self.contigs, file=self.path)
        self._datasets = {}
        width = len(self.columns)
        self._lengths = {}
        for name in self.contigs:
            link = self._group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise DataError(f"/{self.GROUP} entry is an external link (to {link.filename}:{link.path}); "
                                "the data must be in the file itself", file=self.path, contig=name)
            try:
                ds = self._group[name]
            except (KeyError, OSError, RuntimeError):
                raise DataError(f"/{self.GROUP} entry cannot be opened (a dangling link?)", file=self.path,
                                contig=name) from None
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"/{self.GROUP} entry is not a dataset", file=self.path, contig=name)
            if ds.ndim != 2 or ds.shape[1] != width:
                raise DataError(f"shape {ds.shape} does not match (T, {width}) for {width} {self.COLUMN_WORD}",
                                file=self.path, contig=name)
            if str(ds.dtype) not in self.DTYPES:
                raise DataError(f"dtype {ds.dtype} not supported ({', '.join(self.DTYPES)})",
                                file=self.path, contig=name)
            self._lengths[name] = self._length_attr(ds, name)
            self._datasets[name] = ds

    def text_attr(self, attrs, key: str, *, many: bool = False):
        """A text attribute (a list of them with ``many``); None when absent. Text that is
        not UTF-8 is a DataError naming the file and the attribute."""
        if key not in attrs:
            return None
        try:
            return str_list(attrs[key]) if many else attr_str(attrs[key])
        except UnicodeDecodeError:
            raise DataError(f"attribute '{key}' is not UTF-8 text", file=self.path) from None

    def _length_attr(self, ds, name: str) -> int | None:
        """A contig's ``length`` attribute: a whole number of bp >= 0 whose ceil or floor
        bins are the dataset's rows (as the writers make it); None when absent."""
        if "length" not in ds.attrs:
            return None
        raw = ds.attrs["length"]
        value = np.asarray(raw)
        try:
            ok = (value.shape == () and value.dtype.kind in "iuf" and math.isfinite(float(value))
                  and float(value) == int(value) and int(value) >= 0)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            shown = raw.item() if isinstance(raw, np.generic) else raw
            raise DataError(f"'length' attribute must be a whole number of bp >= 0, got {short(shown)}",
                            file=self.path, contig=name)
        length = int(value)
        rows = int(ds.shape[0])
        allowed = sorted({bins.n_bins(length, self.bin_size), bins.full_bins(length, self.bin_size)})
        if rows not in allowed:
            raise DataError(f"{rows} rows do not fit the 'length' attribute {length} bp at bin size {self.bin_size} "
                            f"(expected {' or '.join(map(str, allowed))})", file=self.path, contig=name)
        return length

    COLUMN_WORD = "columns"

    def _columns(self, attrs) -> list[str]:
        raise NotImplementedError

    def _contig_order(self) -> list[str]:
        import h5py

        present = list(self._group.keys())
        undecodable = [n for n in present if isinstance(n, bytes)]   # h5py's names that are not UTF-8
        if undecodable:
            raise DataError(f"/{self.GROUP} holds a name that is not UTF-8 text: {short(undecodable[0])}",
                            file=self.path)
        if "contigs" in self._file.attrs:
            listed = str_list(self._file.attrs["contigs"])
            missing = [c for c in listed if c not in present]
            if missing:
                raise DataError(f"attribute 'contigs' lists {missing[0]!r} but /{self.GROUP} has no such "
                                "dataset", file=self.path)
            if len(set(listed)) != len(listed):
                raise DataError("attribute 'contigs' lists a contig twice", file=self.path)
            extra = [c for c in present if c not in set(listed)]
            if extra:
                raise DataError(f"/{self.GROUP}/{extra[0]} is not listed in the 'contigs' attribute",
                                file=self.path)
            return listed
        gcpl = self._group.id.get_create_plist()
        if gcpl.get_link_creation_order() & h5py.h5p.CRT_ORDER_TRACKED:
            raw = []
            # (decoded afterwards: an exception inside h5py's callback would surface as a SystemError)
            self._group.id.links.iterate(raw.append, idx_type=h5py.h5.INDEX_CRT_ORDER)
            return [n.decode("utf-8") if isinstance(n, bytes) else n for n in raw]
        return sorted(present, key=natural_key)

    # -- metadata --------------------------------------------------------
    def n_bins(self, contig: str) -> int:
        return int(self._datasets[contig].shape[0])

    def length_bp(self, contig: str) -> int | None:
        return self._lengths[contig]

    def dtype(self, contig: str) -> str:
        return str(self._datasets[contig].dtype)

    def compression(self, contig: str) -> str:
        return self._datasets[contig].compression or "none"

    def __contains__(self, contig: str) -> bool:
        return contig in self._datasets

    def read_raw(self, contig: str, a: int, b: int) -> np.ndarray:
        with self._lock:  # h5py serialises anyway; the lock keeps the chunk cache coherent
            try:
                return self._datasets[contig][a:b]
            except (OSError, RuntimeError) as exc:   # a damaged chunk, a failing disk
                why = " ".join(str(exc).split()) or type(exc).__name__
                raise DataError(f"cannot read bins [{a}, {b}): {why}", file=self.path, contig=contig) from None

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


def check_length(source, contig: str, length_bp: int, fasta_path: str | None, lengths) -> None:
    """The source's bin count must be ceil or floor of length / bin_size, and every
    recorded ``length`` attribute (``lengths``: (file, length or None)) must agree."""
    n = source.n_bins(contig)
    allowed = sorted({bins.n_bins(length_bp, source.bin_size), bins.full_bins(length_bp, source.bin_size)})
    where = f" in {fasta_path}" if fasta_path else ""
    if n not in allowed:
        raise DataError(f"{n} bins do not match the length {length_bp} bp{where} at bin size "
                        f"{source.bin_size} (expected {' or '.join(map(str, allowed))} bins)",
                        file=source.files[0].path, contig=contig)
    for path, recorded in lengths:
        if recorded is not None and recorded != length_bp:
            raise DataError(f"length attribute {recorded} bp differs from {length_bp} bp{where}",
                            file=path, contig=contig)
