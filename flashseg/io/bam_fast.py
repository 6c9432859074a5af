"""Fast read counting for BAM files with a .bai index: BGZF blocks inflated with zlib, records scanned by numba.

pysam creates one Python object per read, which caps counting at about
1-2 M reads/s per process. Counting needs only five fixed fields of each
record (refID, pos, MAPQ, FLAG, TLEN), so this module reads them straight
from the decompressed BAM stream (SAM spec section 4.2):

* the .bai linear index gives, for the 16 kb window holding the first
  position of interest, the virtual offset of the first read overlapping
  it; in a sorted file every read starting at or after that window comes
  later, so scanning from there until a read starts at or past the range
  end sees every read of the range;
* blocks are inflated with zlib (raw deflate, 64 KiB each) and scanned in
  batches by a compiled loop that applies exactly the filters of
  :func:`flashseg.io.alignments.count_bins` (tests compare both on the same files).

Anything this path does not handle (CRAM, a .csi index, an index entry it
cannot use) makes :func:`count_range` return None, and the caller falls back
to pysam.

An index is held to the BAM before it is trusted (:func:`check_reference`
per contig, :func:`check_record` at every offset the compiled path seeks to,
and past the last indexed window the BAM is read rather than the index
believed): one made for another file is an error naming the index, where
htslib would silently read the wrong blocks.
"""
from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np

from ..errors import DataError
from .reads import DROPPED_FLAGS

_WINDOW_SHIFT = 14          # .bai linear index: 16 kb windows
_BATCH_BYTES = 1 << 20      # decompressed bytes scanned per compiled call
_READ_BYTES = 1 << 20       # compressed bytes read from disk at once

# Scanner status codes.
_MORE = 0        # buffer exhausted, nothing decided: feed more
_DONE = 1        # passed the range end (or the contig): stop
_UNSORTED = 2    # a position went backwards


def find_index(path: str) -> str | None:
    """The index file htslib (pysam) opens for a BAM: X.bam.csi, X.csi, X.bam.bai, X.bai, the first that exists."""
    stem = path[:-4] if path.lower().endswith(".bam") else None
    for ext in (".csi", ".bai"):
        for candidate in (path + ext, stem + ext if stem else None):
            if candidate and os.path.exists(candidate):
                return candidate
    return None


def find_bai(path: str) -> str | None:
    """The .bai index of a BAM, when it is the index htslib uses too (no .csi beside it)."""
    index = find_index(path)
    return index if index is not None and index.lower().endswith(".bai") else None


#: An index larger than this (decompressed) is refused rather than read into memory.
_MAX_INDEX_BYTES = 1 << 30


def index_mismatch(index_path: str, bam_path: str, problem: str) -> DataError:
    """The one message for an index that does not describe its BAM."""
    return DataError(f"{problem}: this index does not belong to {bam_path} (made for another file, or the BAM "
                     f"changed since): re-create it with `samtools index {bam_path}`", file=index_path)


def _read_index_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(_MAX_INDEX_BYTES + 1)
    if len(data) > _MAX_INDEX_BYTES:
        raise ValueError(f"larger than {_MAX_INDEX_BYTES >> 20} MiB")
    if data[:2] != b"\x1f\x8b":
        return data
    # .csi: BGZF, i.e. concatenated gzip members; inflated with a size cap
    parts, size = [], 0
    while data:
        inflater = zlib.decompressobj(31)
        part = inflater.decompress(data, _MAX_INDEX_BYTES + 1 - size)
        if inflater.unconsumed_tail:
            raise ValueError(f"larger than {_MAX_INDEX_BYTES >> 20} MiB once decompressed")
        if not inflater.eof:
            raise ValueError("compressed data end early")
        parts.append(part)
        size += len(part)
        data = inflater.unused_data
    return b"".join(parts)


class LinearIndex:
    """What flashseg uses of a .bai (or .csi) index: per reference, the linear index (virtual
    offsets per 16 kb window; .bai only, else None) and the pseudo-bin's first and end offsets
    of the reference's reads (``meta[tid]``: (begin, end) or None for a reference without reads).

    Raises ValueError (with ``struct.error``, OSError) for a file that is not a well-formed index.
    """

    def __init__(self, bai_path: str):
        self.path = str(bai_path)
        data = _read_index_bytes(self.path)
        size = len(data)

        def ints(fmt, at):
            if at + struct.calcsize(fmt) > size:
                raise ValueError("the file ends early")
            return struct.unpack_from(fmt, data, at)

        def count(value, item_bytes, at, what):
            if value < 0 or at + value * item_bytes > size:
                raise ValueError(f"{what} {value} does not fit the file")
            return value

        if data[:4] == b"BAI\x01":
            csi, offset, meta_bin = False, 4, 37450
        elif data[:4] == b"CSI\x01":
            min_shift, depth, l_aux = ints("<iii", 4)
            if not 0 <= depth <= 20 or not 0 <= min_shift <= 60:
                raise ValueError(f"min_shift {min_shift}, depth {depth} out of range")
            offset = 16 + count(l_aux, 1, 16, "aux length")
            csi, meta_bin = True, ((1 << (3 * depth + 3)) - 1) // 7 + 1
        else:
            raise ValueError("not a BAI or CSI index")
        (n_ref,) = ints("<i", offset)
        offset += 4
        self.n_ref = count(n_ref, 4, offset, "reference count")
        self.linear: list[np.ndarray] | None = None if csi else []
        self.meta: list[tuple[int, int] | None] = []
        bin_header = "<IQi" if csi else "<Ii"
        bin_bytes = struct.calcsize(bin_header)
        self.complete_meta = True   # every reference with bins has a pseudo-bin
        for _ in range(n_ref):
            (n_bin,) = ints("<i", offset)
            offset += 4
            count(n_bin, bin_bytes, offset, "bin count")
            meta = None
            for _ in range(n_bin):
                fields = ints(bin_header, offset)
                bin_number, n_chunk = fields[0], fields[-1]
                offset += bin_bytes
                count(n_chunk, 16, offset, "chunk count")
                if bin_number == meta_bin and n_chunk == 2:
                    meta = ints("<QQ", offset)
                offset += 16 * n_chunk
            if n_bin and meta is None:
                self.complete_meta = False
            self.meta.append(meta)
            if not csi:
                (n_intv,) = ints("<i", offset)
                offset += 4
                count(n_intv, 8, offset, "linear index size")
                self.linear.append(np.frombuffer(data, dtype="<u8", count=n_intv, offset=offset).copy())
                offset += 8 * n_intv

    def start_offset(self, tid: int, position: int) -> int | None:
        """Virtual offset to start scanning for reads starting at >= position; -1: no such reads; None: unusable."""
        linear = self.linear[tid]
        if linear.size == 0:
            return -1  # no reads on this reference (check_reference holds the index to that)
        window = max(0, position) >> _WINDOW_SHIFT
        # Past the last window with reads: scan from the last window's first read, so that the
        # claim "no read starts here" is read from the BAM rather than trusted.
        voffset = int(linear[min(window, linear.size - 1)])
        if voffset == 0:
            return None  # an index writer that leaves empty windows at 0: let pysam decide
        return voffset


_index_cache: dict = {}
_index_lock = threading.Lock()


def load_index(path: str) -> LinearIndex:
    """A parsed index, cached per process while the file is unchanged; DataError naming it when malformed."""
    try:
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        with _index_lock:   # coverage emissions of several contigs may open counters in threads
            if key not in _index_cache:
                if len(_index_cache) >= 8:
                    _index_cache.pop(next(iter(_index_cache)))
                _index_cache[key] = LinearIndex(path)
            return _index_cache[key]
    except (ValueError, OSError, struct.error) as exc:
        raise DataError(f"cannot read the BAM index: {exc}", file=path) from None


def check_record(buf, n_ref: int, tid: int | None = None, length: int | None = None) -> str | None:
    """What is wrong with the BAM record at the start of ``buf`` (None: a plausible record;
    with ``tid``, one of that reference; with ``length``, starting inside it)."""
    if len(buf) < 36:
        return "a record is cut short"
    size, ref, pos, l_name, _mapq, _bin, n_cigar, _flag, l_seq, next_ref = struct.unpack_from("<iiiBBHHHii", buf, 0)
    if size < 32 or ref < -1 or ref >= n_ref or pos < -1 or l_name < 1 or l_seq < 0 \
            or next_ref < -1 or next_ref >= n_ref or 32 + l_name + 4 * n_cigar + (l_seq + 1) // 2 + l_seq > size:
        return "it points at no BAM record"
    if len(buf) < 36 + l_name:
        return "a record is cut short"
    name = bytes(buf[36:36 + l_name])
    if name[-1] != 0 or any(c < 33 or c > 126 for c in name[:-1]):
        return "it points at no BAM record"
    if tid is not None and ref != tid:
        return f"it points at a read of reference {ref}, not of reference {tid}"
    if length is not None and pos >= length:
        return f"it points at a read starting at {pos + 1}, past the contig's {length} bp"
    return None


def record_at(handle, voffset: int, bam_path: str, index_path: str, n_ref: int):
    """(reference id, position) of the record at a virtual offset taken from the index, None at the end
    of the file; an error naming the index when no record starts there."""
    reader = BgzfReader(handle, voffset >> 16, bam_path, index_path=index_path, read_bytes=1 << 17)
    skip = voffset & 0xFFFF
    data = reader.next_block()
    if skip > len(data):
        raise index_mismatch(index_path, bam_path, f"offset {voffset} lies past the end of its BGZF block")
    buf = bytearray(data[skip:])
    while len(buf) < (36 + buf[12] if len(buf) >= 36 else 36):
        block = reader.next_block()
        if block is None:
            break
        buf += block
    if not buf:
        return None
    problem = check_record(buf, n_ref)
    if problem is not None:
        raise index_mismatch(index_path, bam_path, f"at offset {voffset}: {problem}")
    return struct.unpack_from("<ii", buf, 4)


def check_reference(handle, bam_path: str, index: LinearIndex, tid: int, records_start: int,
                    names=None) -> None:
    """Hold the index's pseudo-bins to the BAM for reference ``tid``: its reads begin where the index
    says, and the read after them (or, for a reference the index calls empty, after the previous
    reference's reads) is the next reference's the index names, or unmapped, or the end of the file.

    An index made for another BAM points at other reads, into the middle of records or at no
    BGZF block, and fails here. Indexes without pseudo-bins are not checked.
    """
    meta = index.meta
    if not index.complete_meta or not any(m is not None for m in meta):
        return
    n_ref = index.n_ref

    def name(t):
        return f"contig {names[t]}" if names is not None and 0 <= t < len(names) else f"reference {t}"

    def expect_next(previous: int | None, offset: int) -> None:
        """The read at ``offset`` (after the reads of ``previous``) is of the next contig with reads."""
        following = next((t for t in range((-1 if previous is None else previous) + 1, n_ref)
                          if meta[t] is not None), None)
        record = record_at(handle, offset, bam_path, index.path, n_ref)
        found = None if record is None or record[0] == -1 else record[0]
        if found != following:
            where = "at the first read" if previous is None else f"after the reads of {name(previous)}"
            expected = f"a read of {name(following)}" if following is not None else "no mapped read"
            seen = f"a read of {name(found)}" if found is not None else "no mapped read"
            raise index_mismatch(index.path, bam_path, f"{where} it expects {expected}, the BAM has {seen}")

    if meta[tid] is not None:
        begin, end = meta[tid]
        record = record_at(handle, begin, bam_path, index.path, n_ref)
        if record is None or record[0] != tid:
            seen = "the end of the file" if record is None else f"a read of {name(record[0])}"
            raise index_mismatch(index.path, bam_path, f"where it says the reads of {name(tid)} begin, the BAM "
                                 f"has {seen}")
        expect_next(tid, end)
    else:
        previous = next((t for t in range(tid - 1, -1, -1) if meta[t] is not None), None)
        expect_next(previous, records_start if previous is None else meta[previous][1])


def _scanner():
    from numba import njit

    @njit(cache=True, nogil=True)
    def scan(buf, n, tid, start_bp, end_bp, dropped_flags, min_mapq, fragments, max_fragment,
             previous, out, n_out):
        """Scan complete records in buf[:n]; returns (consumed, status, previous, n_out)."""
        i = 0
        status = 0
        while i + 4 <= n:
            size = buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (np.int64(buf[i + 3]) << 24)
            if size >= 2147483648:
                size -= 4294967296
            if size < 32:
                status = 3  # corrupt record
                break
            if i + 4 + size > n:
                break
            r = i + 4
            ref = buf[r] | (buf[r + 1] << 8) | (buf[r + 2] << 16) | (np.int64(buf[r + 3]) << 24)
            if ref >= 2147483648:
                ref -= 4294967296
            if ref != tid:
                if ref < tid and ref >= 0:
                    i += 4 + size
                    continue
                status = 1
                break
            pos = buf[r + 4] | (buf[r + 5] << 8) | (buf[r + 6] << 16) | (np.int64(buf[r + 7]) << 24)
            if pos >= 2147483648:
                pos -= 4294967296
            if pos < previous:
                status = 2
                break
            previous = pos
            if pos >= end_bp:
                status = 1
                break
            mapq = buf[r + 9]
            flag = buf[r + 14] | (buf[r + 15] << 8)
            if (flag & dropped_flags) == 0 and mapq >= min_mapq:
                if fragments:
                    if (flag & 3) == 3:
                        tlen = buf[r + 28] | (buf[r + 29] << 8) | (buf[r + 30] << 16) | (np.int64(buf[r + 31]) << 24)
                        if tlen >= 2147483648:
                            tlen -= 4294967296
                        if tlen > 0 and tlen <= max_fragment:
                            mid = pos + tlen // 2
                            if mid >= start_bp and mid < end_bp:
                                out[n_out] = mid
                                n_out += 1
                elif pos >= start_bp:
                    out[n_out] = pos
                    n_out += 1
            i += 4 + size
        return i, status, previous, n_out

    return scan


_scan = None


def _get_scan():
    global _scan
    if _scan is None:
        _scan = _scanner()
    return _scan


class BgzfReader:
    """Sequential BGZF block reader from a compressed offset."""

    def __init__(self, handle, coffset: int, path: str, *, index_path: str | None = None,
                 read_bytes: int = _READ_BYTES):
        self.handle = handle
        self.path = path
        self.coffset = coffset
        # coffset came from this index: when no BGZF block starts there, the index is wrong
        self.index_path = index_path
        self.read_bytes = read_bytes
        handle.seek(coffset)
        self.data = b""
        self.at = 0

    def _fill(self, need: int) -> bool:
        if len(self.data) - self.at >= need:
            return True
        parts = [self.data[self.at:]]
        have = len(parts[0])
        while have < need:
            more = self.handle.read(self.read_bytes)
            if not more:
                break
            parts.append(more)
            have += len(more)
        self.data = b"".join(parts)
        self.at = 0
        return have >= need

    def next_block(self) -> bytes | None:
        """The next block's data (b"" for the EOF block), None at the end of the file."""
        index_path, self.index_path = self.index_path, None   # only the first block was sought
        if not self._fill(18):
            if index_path is not None:
                raise index_mismatch(index_path, self.path, f"it points at byte {self.coffset}, past the last "
                                     "BGZF block")
            if len(self.data) > self.at:
                raise DataError("truncated BAM: a BGZF block is cut short", file=self.path)
            return None
        at, data = self.at, self.data
        if data[at] != 31 or data[at + 1] != 139 or data[at + 2] != 8 or not data[at + 3] & 4 \
                or data[at + 12:at + 14] != b"BC":
            if index_path is not None:
                raise index_mismatch(index_path, self.path, f"it points at byte {self.coffset}, where no BGZF "
                                     "block starts")
            raise DataError("corrupt BAM: bad BGZF block header", file=self.path)
        (block_size,) = struct.unpack_from("<H", data, at + 16)
        total = block_size + 1
        if not self._fill(total):
            raise DataError("truncated BAM: a BGZF block is cut short", file=self.path)
        at, data = self.at, self.data
        self.at = at + total
        try:
            block = zlib.decompress(memoryview(data)[at + 18:at + total - 8], -15)
        except zlib.error as exc:
            raise DataError(f"corrupt BAM: cannot inflate a BGZF block ({exc})", file=self.path) from None
        crc, size = struct.unpack_from("<II", data, at + total - 8)
        if size != len(block) or crc != zlib.crc32(block):
            # damaged compressed bytes can still inflate, to garbage
            raise DataError("corrupt BAM: a BGZF block fails its CRC32 check", file=self.path)
        return block


def count_range(path: str, index: LinearIndex, tid: int, contig: str, start_bin: int, end_bin: int,
                bin_size: int, length: int, read_filter, handle=None):
    """Counts for bins [start_bin, end_bin) like alignments.count_bins, or None when this path cannot be used."""

    start_bp = start_bin * bin_size
    end_bp = min(end_bin * bin_size, length)
    n = end_bin - start_bin
    first = start_bp - read_filter.max_fragment if read_filter.fragments else start_bp
    voffset = index.start_offset(tid, first)
    if voffset is None:
        return None
    counts = np.zeros(n, dtype=np.int64)
    if voffset == -1 or n <= 0:
        return counts.astype(np.int32)
    scan = _get_scan()
    own = handle is None
    if own:
        handle = open(path, "rb", buffering=0)
    try:
        reader = BgzfReader(handle, voffset >> 16, path, index_path=index.path)
        skip = voffset & 0xFFFF
        buf = bytearray()
        out = np.empty(_BATCH_BYTES // 36 + 16, dtype=np.int64)  # a record has >= 36 bytes
        previous = -1
        done = False
        at_end = False
        unchecked = True   # the record the index points at: one of this contig, or the index is wrong
        while not done:
            while len(buf) < _BATCH_BYTES:
                data = reader.next_block()
                if data is None:
                    at_end = True
                    break
                if skip is not None:
                    if skip > len(data):
                        raise index_mismatch(index.path, path, f"offset {voffset} (for {contig}:{max(0, first) + 1}) "
                                             "lies past the end of its BGZF block")
                    data = data[skip:]
                    skip = None
                buf += data
            if unchecked:
                problem = check_record(buf, len(index.linear), tid, length) if buf else "it points at the file's end"
                if problem is not None:
                    raise index_mismatch(index.path, path, f"at offset {voffset} (for {contig}:{max(0, first) + 1}): "
                                         f"{problem}")
                unchecked = False
            view = np.frombuffer(buf, dtype=np.uint8)
            consumed, status, previous, n_out = scan(view, view.size, tid, start_bp, end_bp, DROPPED_FLAGS,
                                                     read_filter.min_mapq, read_filter.fragments,
                                                     read_filter.max_fragment, previous, out, 0)
            del view
            if n_out:
                counts += np.bincount((out[:n_out] - start_bp) // bin_size, minlength=n)
            if status == 2:
                raise DataError(f"reads out of order at {contig}:{previous + 1}: the file is not coordinate-sorted "
                                "(run `samtools sort` and `samtools index`)", file=path)
            if status == 3:
                raise DataError(f"corrupt BAM record while reading {contig}:{start_bp + 1}-{end_bp}", file=path)
            del buf[:consumed]
            if status == 1:
                done = True
            elif at_end:
                if buf:
                    raise DataError(f"truncated BAM: the last record is cut short (reading {contig})", file=path)
                done = True
    finally:
        if own:
            handle.close()
    return counts.astype(np.int32)
