"""Genome-browser files: bigBed segment calls and bigWig per-bin values
(docs/formats.md, "bigBed and bigWig outputs"), written with pybigtools.

A target named ``.bb``/``.bigbed`` is a bigBed, ``.bw``/``.bigwig`` a bigWig
(any case); every other name keeps its text format. A command writes the
text it would write anyway (BED9+4, bedGraph) to a temporary beside the
target, and when the run ends that text is read back line by line into
pybigtools, which builds the binary file under a second temporary. So
memory stays flat however large the genome, the binary file holds exactly
the text's intervals and fields (same merging, same omissions), and both
temporaries are published or discarded with the run's other outputs
(:mod:`flashseg.io.output`). A binary file is written whole at the end: it
cannot go to standard output, a FIFO or a device.

Everything that touches pybigtools is in this module (imported lazily, so
``flashseg --help`` stays fast). What pybigtools 0.3 does that this module
works around, each where it happens:

* a write never raises: bad input (an unknown contig, overlapping or
  unsorted intervals, an end past the contig) and an exception raised by
  the record iterator are printed, on stdout, and leave a file of zeros.
  So every record is checked here first, the iterator never raises into
  pybigtools, and the finished file is opened again and its bases counted;
* input without a single record gives such an unreadable file too: an
  empty file is written here (:func:`_write_empty`);
* a bigBed's ``definedFieldCount`` is set to its field count (13): BED9+4
  must say 9, else browsers read ``seg_post``... as BED12 blocks. The
  header field is corrected after writing (:func:`_set_defined_fields`).

pybigtools lists contigs in the order their records come (FASTA order
here, not sorted by name) in a chromosome tree of a single leaf (its block
size is at least the number of contigs), which UCSC's and IGV's readers
search by scanning; a contig without a record is not listed, as with UCSC's
bedToBigBed.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import struct

from ..errors import DataError, UsageError
from .output import (_Named, check_writable_dir, commit, discard, is_special, is_stdout, resolved, temp_path_for,
                     write_error)

log = logging.getLogger(__name__)

BIGBED = "bigBed"
BIGWIG = "bigWig"
_SUFFIXES = {".bb": BIGBED, ".bigbed": BIGBED, ".bw": BIGWIG, ".bigwig": BIGWIG}

# BED9+4: nine standard BED fields, four of flashseg's own (flashseg.as).
BED_FIELDS = 13
BED_DEFINED_FIELDS = 9

# File signatures (UCSC's bbiFile.h, bPlusTree.h, cirTree.h).
_BIGBED_MAGIC = 0x8789F2EB
_BIGWIG_MAGIC = 0x888FFC26
_CHROM_TREE_MAGIC = 0x78CA8C91
_INDEX_MAGIC = 0x2468ACE0
_HEADER = struct.Struct("<IHHQQQHHQQIQ")   # the 64-byte common header
_FIELD_COUNTS_AT = 32                      # fieldCount, definedFieldCount: two uint16 after three offsets


def browser_format(path) -> str | None:
    """BIGBED or BIGWIG when ``path`` names a genome-browser file, else None (a text output)."""
    if path is None or is_stdout(path):
        return None
    return _SUFFIXES.get(os.path.splitext(str(path))[1].lower())


def check_target(option: str, path, allowed: str | None, hint: str | None = None) -> None:
    """Refuse, before any work, a browser file where ``option`` cannot write one
    (``allowed``: the kind it can write, or None) or where it cannot be written
    (a FIFO, a socket, a device; standard output is never one): a UsageError, exit 2."""
    kind = browser_format(path)
    if kind is None:
        return
    if kind != allowed:
        what = {BIGBED: "segment calls (BED9+4)", BIGWIG: "per-bin values (bedGraph)"}[kind]
        if allowed is not None:
            hint = f"{option} writes a {allowed} (.{'bb' if allowed == BIGBED else 'bw'})"
        raise UsageError(f"{option} {path}: a {kind} holds {what}, not this output" + (f": {hint}" if hint else ""))
    if is_special(resolved(str(path))):
        raise UsageError(f"{option} {path}: a {kind} is written whole when the run ends and cannot go to a "
                         "FIFO, socket or device: give a regular file")


def autosql(provenance=()) -> str:
    """The shipped ``flashseg.as``, with the ``##flashseg`` provenance lines in its table comment
    (the one place a bigBed can hold them): ``<comment>; flashseg version=...; flashseg command=...``.
    ``%``, ``"``, backslash and control characters are written ``%XX`` so the quoted comment stays
    one valid autoSql string."""
    from .bed import autosql_path

    with open(autosql_path(), encoding="utf-8") as handle:
        text = handle.read()
    if not provenance:
        return text
    head, quote, rest = text.partition('"')
    comment, quote2, tail = rest.partition('"')
    parts = [comment] + [_escape(line[2:] if line.startswith("##") else line) for line in provenance]
    return head + quote + "; ".join(parts) + quote2 + tail


def _escape(text: str) -> str:
    return "".join(f"%{ord(ch):02X}" if ch in '%"\\;' or ord(ch) < 0x20 or ord(ch) == 0x7F else ch
                   for ch in text)


def provenance_from_autosql(text: str) -> list[str]:
    """The ``##flashseg`` lines that :func:`autosql` put into a table comment (tests and tools)."""
    from urllib.parse import unquote

    comment = text.split('"', 2)[1]
    return ["##" + unquote(part) for part in comment.split("; ")[1:]]


# -- checked records -------------------------------------------------------------------

class _Feed:
    """Records for pybigtools, checked first; what went wrong is kept, never raised
    into pybigtools (which would print it on stdout and carry on)."""

    def __init__(self, records, chrom_sizes, target: str, kind: str):
        self.records = records
        self.sizes = chrom_sizes
        self.target = target
        self.kind = kind
        self.error: BaseException | None = None
        self.finished = False
        self.bases = 0
        self.contigs: list[str] = []

    def __iter__(self):
        try:
            yield from self._checked()
        except BaseException as exc:   # also KeyboardInterrupt and the SystemExit of SIGTERM
            self.error = exc
            return
        self.finished = True

    def _checked(self):
        sizes, target, bigwig = self.sizes, self.target, self.kind == BIGWIG
        current, size, last_end, bases = None, 0, 0, 0
        seen = set()
        for record in self.records:
            chrom, start, end, value = record
            if chrom != current:
                if chrom in seen:
                    raise DataError("contig lines are not contiguous", file=target, contig=chrom)
                if chrom not in sizes:
                    raise DataError("contig has no known size", file=target, contig=chrom)
                seen.add(chrom)
                self.contigs.append(chrom)
                current, size, last_end = chrom, sizes[chrom], 0
            if not last_end <= start < end <= size:
                if start >= end:
                    why = f"interval {start}-{end} is empty or reversed"
                elif start < last_end:
                    why = f"interval {start}-{end} overlaps or precedes the one before (ending at {last_end})"
                else:
                    why = f"interval {start}-{end} ends beyond the contig size {size}"
                raise DataError(why, file=target, contig=chrom)
            if bigwig and not math.isfinite(value):
                raise DataError(f"value {value} at {start}-{end} is not a finite number", file=target,
                                contig=chrom)
            last_end = end
            bases += end - start
            yield record
        self.bases = bases


def write_bigbed(path: str, records, chrom_sizes: dict, *, target: str, provenance=()) -> None:
    """A bigBed of BED9+4 ``records`` (chrom, start, end, the other ten fields tab-joined) at ``path``.

    ``chrom_sizes``: {contig: bp}; records come contig by contig (in the order
    the file lists them), sorted, not overlapping. ``target`` names the file in errors.
    """
    _write(path, BIGBED, records, chrom_sizes, target, autosql(provenance))


def write_bigwig(path: str, records, chrom_sizes: dict, *, target: str) -> None:
    """A bigWig of ``records`` (chrom, start, end, value) at ``path``: as :func:`write_bigbed`,
    values finite (stored as float32)."""
    _write(path, BIGWIG, records, chrom_sizes, target, None)


def _write(path, kind, records, chrom_sizes, target, sql) -> None:
    feed = _Feed(records, chrom_sizes, target, kind)
    items = iter(feed)
    first = next(items, None)
    if feed.error is not None:
        raise feed.error
    try:
        if first is None:
            _write_empty(path, kind, sql)
            return
        import itertools

        import pybigtools

        writer = pybigtools.open(path, "w")
        sizes = {name: int(size) for name, size in chrom_sizes.items()}
        with _stderr_held() as held:
            try:
                if kind == BIGBED:
                    writer.write(sizes, itertools.chain([first], items), autosql=sql)
                else:
                    writer.write(sizes, itertools.chain([first], items))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:   # a Rust panic (pyo3's PanicException is a BaseException)
                held.failed = exc
        if held.failed is not None:
            raise _library_error(held.failed, path, target)
    except (KeyboardInterrupt, SystemExit, DataError):
        raise
    except BaseException as exc:
        raise write_error(exc, target) from None
    if feed.error is not None:
        raise feed.error
    if not feed.finished:
        raise DataError("cannot write output: pybigtools stopped before the last record", file=target)
    if kind == BIGBED:
        _set_defined_fields(path, BED_DEFINED_FIELDS, target)
    _check_written(path, feed, target)


class _Held:
    failed: BaseException | None = None


@contextlib.contextmanager
def _stderr_held():
    """Hold what is written to file descriptor 2 while pybigtools runs: a Rust panic
    (a full disk is one) prints its message and a backtrace there, and the run reports
    one line instead (:func:`_library_error`). What a successful write printed is
    passed on; the panic's text only with ``flashseg -v``."""
    import sys
    import tempfile

    held = _Held()
    try:
        capture = tempfile.TemporaryFile()
    except OSError:     # no room even for that: let the library print
        yield held
        return
    with capture:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
    if text and held.failed is None:
        sys.stderr.write(text)
    elif text:
        log.info("pybigtools: %s", text.rstrip())


def _library_error(exc: BaseException, path: str, target: str) -> DataError:
    """One line for a failed pybigtools write: a full disk says so (the panic's own
    message is about a closed channel)."""
    with contextlib.suppress(OSError):
        room = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if room.f_bavail * room.f_frsize < (1 << 20):
            return DataError(f"cannot write output: {os.strerror(28)}", file=target)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"cannot write output: pybigtools failed: {message}", file=target)


def _check_written(path: str, feed: _Feed, target: str) -> None:
    """Open the finished file and compare what it says it holds with what was fed
    (pybigtools reports its own failures on stdout only)."""
    import pybigtools

    try:
        with pybigtools.open(path) as reader:
            info = reader.info()
            listed = list(reader.chroms())
    except Exception as exc:
        raise DataError(f"cannot write output: the {feed.kind} written cannot be read back ({exc})",
                        file=target) from None
    covered = info.get("summary", {}).get("basesCovered")
    if listed != feed.contigs or covered != feed.bases:
        raise DataError(f"cannot write output: the {feed.kind} written holds {covered} bp on {len(listed)} "
                        f"contig(s), {feed.bases} bp on {len(feed.contigs)} were given", file=target)


def _set_defined_fields(path: str, defined: int, target: str) -> None:
    """Set the header's definedFieldCount (pybigtools writes the field count there)."""
    try:
        with open(path, "r+b") as handle:
            head = handle.read(_HEADER.size)
            order = "<" if struct.unpack("<I", head[:4])[0] == _BIGBED_MAGIC else ">"
            handle.seek(_FIELD_COUNTS_AT + 2)
            handle.write(struct.pack(order + "H", defined))
    except OSError as exc:
        raise write_error(exc, target) from None


def _write_empty(path: str, kind: str, sql: str | None) -> None:
    """A valid file without records: header, autoSql (bigBed), total summary, an empty
    chromosome tree, a record count of 0 and an empty R-tree index, as UCSC's tools
    write one (pybigtools 0.3 cannot: it leaves an unreadable file)."""
    magic = _BIGBED_MAGIC if kind == BIGBED else _BIGWIG_MAGIC
    sql_bytes = sql.encode("utf-8") + b"\0" if kind == BIGBED else b""
    sql_offset = _HEADER.size
    summary_offset = sql_offset + len(sql_bytes)     # libBigWig sizes the autoSql by this gap
    tree_offset = summary_offset + 40
    tree = struct.pack("<IIIIQQ", _CHROM_TREE_MAGIC, 256, 1, 8, 0, 0) + struct.pack("<BBH", 1, 0, 0)
    data_offset = tree_offset + len(tree)
    data = struct.pack("<Q", 0)
    index_offset = data_offset + len(data)
    index = (struct.pack("<IIQIIIIQII", _INDEX_MAGIC, 256, 0, 0, 0, 0, 0, index_offset, 1024, 0)
             + struct.pack("<BBH", 1, 0, 0))
    fields = (BED_FIELDS, BED_DEFINED_FIELDS) if kind == BIGBED else (0, 0)
    header = _HEADER.pack(magic, 4, 0, tree_offset, data_offset, index_offset, *fields,
                          sql_offset if sql_bytes else 0, summary_offset, 0, 0)
    with open(path, "wb") as handle:
        handle.write(header + sql_bytes + bytes(40) + tree + data + index + struct.pack("<I", magic))


def publish_bigwig(target: str, records, chrom_sizes: dict) -> None:
    """Write a bigWig at ``target`` under a temporary and commit it (staged while a
    :func:`~flashseg.io.output.publishing` block runs)."""
    check_writable_dir(target)
    temp = temp_path_for(target, extension=".bw")
    try:
        write_bigwig(temp, records, chrom_sizes, target=target)
    except BaseException:
        discard(temp)
        raise
    commit(temp, target)


def value_runs(contig: str, chunks, *, bin_size: int, length: int, min_value: float):
    """bigWig records of one contig's per-bin values: ``chunks`` yields (first bin, values)
    in ascending order; bins below ``min_value`` or NaN are left out, and consecutive bins
    of equal value (as float32, what a bigWig stores) make one interval."""
    import numpy as np

    from .. import bins

    def record(first, end, value):
        start_bp, end_bp = bins.to_bp(np.array([first, end]), bin_size, length).tolist()
        return (contig, start_bp, end_bp, value)

    run = None    # [first bin, end bin, value]: the run that may go on into the next chunk
    for first, values in chunks:
        values = np.asarray(values, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            kept = np.flatnonzero(values >= min_value)     # NaN compares False: left out
        if kept.size == 0:
            if run is not None:
                yield record(*run)
                run = None
            continue
        at = kept + first
        vals = values[kept]
        new = np.ones(kept.size, dtype=bool)
        new[1:] = (at[1:] != at[:-1] + 1) | (vals[1:] != vals[:-1])
        starts = np.flatnonzero(new)
        run_first = at[starts]
        run_end = at[np.append(starts[1:], kept.size) - 1] + 1
        run_value = vals[starts].astype(np.float64).tolist()
        if run is not None and run[1] == run_first[0] and run[2] == run_value[0]:
            run_first[0] = run[0]
        elif run is not None:
            yield record(*run)
        bp = bins.to_bp(np.stack([run_first, run_end], axis=1), bin_size, length)
        for start_bp, end_bp, value in zip(bp[:-1, 0].tolist(), bp[:-1, 1].tolist(), run_value[:-1]):
            yield (contig, start_bp, end_bp, value)
        run = [int(run_first[-1]), int(run_end[-1]), run_value[-1]]
        if kept[-1] != values.shape[0] - 1:     # a left-out bin at the chunk's end closes it
            yield record(*run)
            run = None
    if run is not None:
        yield record(*run)


# -- from the text outputs ---------------------------------------------------------------

def _text_records(path: str, kind: str, target: str):
    """Records of a BED9+4 (bigBed) or bedGraph (bigWig) text file; ``#`` lines are skipped
    and the column header checked. Lines are split as bytes and each contig name decoded
    once, a sixth less time on a bedGraph of millions of lines."""
    from .bed import BED_HEADER

    bigbed = kind == BIGBED
    names: dict[bytes, str] = {}
    with open(path, "rb") as handle:
        header = None
        checked = False
        for number, line in enumerate(handle, 1):
            if line[:1] == b"#":
                if line[:2] != b"##":
                    header = line.rstrip(b"\n").decode("utf-8", "replace")
                continue
            if not checked:
                if bigbed and header != BED_HEADER:
                    raise DataError("a bigBed holds flashseg's BED9+4 segment calls (their header line "
                                    f"{BED_HEADER.split(chr(9))[0]}...), not these lines", file=target)
                if not bigbed and header is not None:
                    raise DataError("a bigWig holds bedGraph lines (chrom, start, end, value), not lines "
                                    f"under the header {header.split(chr(9))[0]}...", file=target)
                checked = True
            try:
                raw, start, end, rest = line.rstrip(b"\n").split(b"\t", 3)
                chrom = names.get(raw)
                if chrom is None:
                    chrom = names[raw] = raw.decode("utf-8")
                record = (chrom, int(start), int(end), rest.decode("utf-8") if bigbed else float(rest))
            except ValueError:      # also a UnicodeDecodeError
                record = None
            if record is None or (bigbed and rest.count(b"\t") != BED_FIELDS - 4):
                what = "a BED9+4 line" if bigbed else "a bedGraph line (chrom, start, end, value)"
                raise DataError(f"line {number}: not {what}", file=target)
            yield record


def _first_provenance(path: str) -> list[str]:
    """The ``##flashseg`` lines at the head of a text output."""
    lines = []
    with open(path, encoding="utf-8", newline="\n") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            if line.startswith("##flashseg "):
                lines.append(line.rstrip("\n"))
    return lines


def convert_text(text_path: str, path: str, kind: str, chrom_sizes: dict, *, target: str) -> None:
    """Write the bigBed or bigWig of a BED9+4 or bedGraph text file."""
    if kind == BIGBED:
        provenance = _first_provenance(text_path)
        write_bigbed(path, _text_records(text_path, kind, target), chrom_sizes, target=target,
                     provenance=provenance)
    else:
        write_bigwig(path, _text_records(text_path, kind, target), chrom_sizes, target=target)


@contextlib.contextmanager
def open_browser_output(path: str, chrom_sizes: dict):
    """A text stream for the BED9+4 or bedGraph lines of ``path`` (a ``.bb``/``.bw`` name),
    written to a temporary; when the block ends without an error they become the
    bigBed/bigWig, committed like every output (staged until the run succeeds).

    ``chrom_sizes`` ({contig: bp}) may be filled in until the block ends.
    """
    kind = browser_format(path)
    if kind is None:
        raise ValueError(f"{path} is not a bigBed or bigWig name")
    check_target("output", path, kind)
    check_writable_dir(path)
    text_temp = temp_path_for(path, suffix=".txt")
    big_temp = None
    try:
        try:
            stream = open(text_temp, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise write_error(exc, path) from None
        try:
            yield _Named(stream, path)
        except BaseException:
            with contextlib.suppress(OSError):
                stream.close()
            raise
        try:
            stream.close()
        except OSError as exc:
            raise write_error(exc, path) from None
        # pybigtools tells bigBed from bigWig by the name's extension (lower case only)
        big_temp = temp_path_for(path, extension=".bb" if kind == BIGBED else ".bw")
        log.info("%s: writing the %s", path, kind)
        convert_text(text_temp, big_temp, kind, chrom_sizes, target=path)
    except BaseException:
        discard(text_temp)
        if big_temp is not None:
            discard(big_temp)
        raise
    discard(text_temp)
    commit(big_temp, path)
