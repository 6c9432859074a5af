"""The genome: contig order and lengths from a FASTA + .fai (docs/formats.md, "Emission tracks").

The FASTA gives the order outputs follow and the length each track must
fit (``T = ceil(L / bin_size)``, or ``floor`` for tracks that drop the last
partial bin). Duplicate names, also names that become duplicates once cut
at the first whitespace (as pyfaidx and samtools do), are an error.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

import numpy as np

from .. import bins
from ..errors import DataError
from .names import check_contig_names

log = logging.getLogger(__name__)

# Bases read per block when scanning for N gaps.
_SCAN_BLOCK = 1 << 22


_PLAIN_OR_BGZIP = "a FASTA must be plain text or bgzip-compressed"
_BGZF_NEEDS_BIOPYTHON = ("a bgzip-compressed FASTA needs Biopython >= 1.73 (pip install biopython); "
                         "or give the FASTA uncompressed")
_MAGIC = ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"))


def _check_compression(path: str) -> None:
    """Refuse, in one line, a FASTA that pyfaidx cannot index: gzip that is not
    BGZF (a plain ``gzip genome.fa``), other compressions, and BGZF without
    Biopython or without a .gz/.bgz name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(18)
    except OSError as exc:
        raise DataError(f"cannot read FASTA: {exc.strerror or exc}", file=path) from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            raise DataError(f"{kind}-compressed: {_PLAIN_OR_BGZIP}", file=path)
    gz_name = path.lower().endswith((".gz", ".bgz"))
    if not head.startswith(b"\x1f\x8b"):
        if gz_name:
            raise DataError("the name ends in .gz or .bgz but the file is not gzip-compressed (rename it)",
                            file=path)
        return
    # BGZF: a gzip member with an extra field (FLG.FEXTRA) holding the 'BC' subfield
    bgzf = len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC"
    if not bgzf:
        raise DataError(f"gzip-compressed, not bgzip-compressed: {_PLAIN_OR_BGZIP} (gunzip it, or "
                        "recompress it with bgzip)", file=path)
    if not gz_name:
        raise DataError("bgzip-compressed, but the name does not end in .gz or .bgz (rename it)", file=path)
    import importlib.util

    if importlib.util.find_spec("Bio") is None:
        raise DataError(_BGZF_NEEDS_BIOPYTHON, file=path)


class Genome:
    """Contig names (FASTA order) and lengths, sequence access for gap scans."""

    def __init__(self, path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DataError("no such file", file=self.path)
        _check_compression(self.path)
        self._tempdir = None
        fai = self.path + ".fai"
        index_name = fai
        directory = os.path.dirname(os.path.abspath(self.path))
        stale = (not os.path.exists(fai)
                 or os.path.getmtime(fai) < os.path.getmtime(self.path))
        if stale and not os.access(directory, os.W_OK):
            # Read-only directory (a shared reference, a package install):
            # build the index in a private temporary directory instead.
            self._tempdir = tempfile.mkdtemp(prefix="flashseg-fai-")
            index_name = os.path.join(self._tempdir, os.path.basename(fai))
        import pyfaidx

        try:
            try:
                self._faidx = pyfaidx.Faidx(self.path, indexname=index_name, as_raw=True,
                                            rebuild=stale)
            except PermissionError:
                if self._tempdir is not None:
                    raise
                self._tempdir = tempfile.mkdtemp(prefix="flashseg-fai-")
                index_name = os.path.join(self._tempdir, os.path.basename(fai))
                self._faidx = pyfaidx.Faidx(self.path, indexname=index_name, as_raw=True,
                                            rebuild=True)
        except ValueError as exc:
            self.close()
            text = str(exc)
            if "Duplicate key" in text:
                name = text.split("Duplicate key", 1)[1].strip().strip('"')
                raise DataError(f"duplicate contig name {name!r} (names are compared up to the "
                                "first whitespace)", file=self.path) from None
            raise DataError(f"not a valid FASTA file: {text}", file=self.path) from None
        except pyfaidx.FastaIndexingError as exc:
            self.close()
            raise DataError(f"not a valid FASTA file: {exc}", file=self.path) from None
        except ImportError:   # pyfaidx reads BGZF through Biopython, an optional package
            self.close()
            raise DataError(_BGZF_NEEDS_BIOPYTHON, file=self.path) from None
        except (OSError, UnicodeDecodeError) as exc:
            self.close()
            raise DataError(f"cannot read or index FASTA: {exc}", file=self.path) from None
        self.names: list[str] = []
        self.lengths: dict[str, int] = {}
        for name, record in self._faidx.index.items():
            self.names.append(name)
            self.lengths[name] = int(record.rlen)
        if not self.names:
            self.close()
            raise DataError("no sequences in FASTA", file=self.path)
        try:
            # names end at the first whitespace; a control character (or a stale .fai) remains
            check_contig_names(self.names, file=self.path)
        except DataError:
            self.close()
            raise

    def __contains__(self, name: str) -> bool:
        return name in self.lengths

    def length(self, name: str) -> int:
        return self.lengths[name]

    def gaps(self, name: str, gap_min: int) -> list[tuple[int, int]]:
        """Runs of N/n of at least ``gap_min`` bp, as half-open bp intervals."""
        length = self.lengths[name]
        runs = []
        open_start = None  # start of an N run reaching the end of the previous block
        for block_start in range(0, length, _SCAN_BLOCK):
            block_end = min(length, block_start + _SCAN_BLOCK)
            seq = self._faidx.fetch(name, block_start + 1, block_end)
            raw = np.frombuffer(str(seq).encode("ascii", "replace"), dtype=np.uint8)
            is_n = ((raw == ord("N")) | (raw == ord("n"))).astype(np.int8)
            if open_start is not None and not is_n[0]:
                runs.append((open_start, block_start))
                open_start = None
            edges = np.diff(np.concatenate(([0], is_n, [0])))
            for s, e in zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()):
                run_start = block_start + s
                if s == 0 and open_start is not None:
                    run_start, open_start = open_start, None
                if e == len(is_n):
                    open_start = run_start
                else:
                    runs.append((run_start, block_start + e))
        if open_start is not None:
            runs.append((open_start, length))
        return [(s, e) for s, e in runs if e - s >= gap_min]

    def gap_bins(self, name: str, bin_size: int, gap_min: int, n_bins: int) -> np.ndarray:
        """(G, 2) half-open bin ranges whose bins lie entirely inside an N gap.

        A bin only partly covered by N still carries signal and is kept; the
        last, partial bin counts as covered when the gap reaches the contig end.
        """
        length = self.lengths[name]
        out = []
        for s, e in self.gaps(name, gap_min):
            first, last = bins.inside(s, e, bin_size, length)
            last = min(last, n_bins)
            if last > first:
                out.append((first, last))
        return np.array(out, dtype=np.int64).reshape(-1, 2)

    def close(self) -> None:
        faidx = getattr(self, "_faidx", None)
        if faidx is not None:
            try:
                faidx.close()
            except Exception:
                pass
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_genome(path) -> Genome:
    return Genome(path)


def chr_hint(name: str, candidates) -> str:
    """A hint when ``name`` differs from a known name only by a ``chr`` prefix."""
    candidates = set(candidates)
    other = name[3:] if name.lower().startswith("chr") else "chr" + name
    for cand in (other, other.lower(), "chr" + name[3:] if name.lower().startswith("chr") else None):
        if cand and cand in candidates and cand != name:
            return f" (did you mean {cand!r}? the names differ by a 'chr' prefix)"
    return ""
