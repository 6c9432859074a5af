"""The genome: contig order and lengths from a FASTA + .fai (SPEC §4.3).

The FASTA gives the order outputs follow and the length each track must
fit (``T = ceil(L / bin_size)``, or ``floor`` for tracks that drop the last
partial bin). Duplicate names, also names that become duplicates once cut
at the first whitespace (as pyfaidx and samtools do), are an error.

:func:`plan_contigs` decides which contigs a run decodes: a contig in the
FASTA but not in the tracks, or with 0 bins, is skipped with a warning that
counts and names them; an explicitly requested contig that cannot be
decoded is an error, and so is a run with nothing left to decode.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

log = logging.getLogger("flashseg")

# Bases read per block when scanning for N gaps.
_SCAN_BLOCK = 1 << 22


class Genome:
    """Contig names (FASTA order) and lengths, sequence access for gap scans."""

    def __init__(self, path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DataError("no such file", file=self.path)
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
            first = -(-s // bin_size)
            last = n_bins if e >= length else e // bin_size
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


def _names_hint(names, limit=5) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@dataclass
class Region:
    contig: str
    start: int  # 0-based bp, inclusive
    end: int    # 0-based bp, exclusive

    @classmethod
    def parse(cls, text: str) -> "Region":
        """``chr:start-end``, 1-based inclusive (samtools); the name is everything before the last ':'."""
        name, sep, span = text.rpartition(":")
        if not sep or not name:
            raise ValueError(f"region {text!r}: expected NAME:START-END")
        start_s, dash, end_s = span.replace(",", "").partition("-")
        try:
            start, end = int(start_s), int(end_s)
        except ValueError:
            raise ValueError(f"region {text!r}: START and END must be integers") from None
        if not dash or start < 1 or end < start:
            raise ValueError(f"region {text!r}: need 1 <= START <= END")
        return cls(name, start - 1, end)


@dataclass
class ContigJob:
    """One contig (or region of it) to decode."""

    name: str
    n_bins: int             # bins decoded
    length_bp: int          # contig length (bp); ends are clipped to it
    offset: int = 0         # first decoded bin of the contig (--region)
    total_bins: int = 0     # bins of the whole contig in the tracks


@dataclass
class ContigPlan:
    jobs: list[ContigJob] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (name, bins, why)


def plan_contigs(tracks, genome: Genome | None, *, contigs=(), region: Region | None = None,
                 warn: bool = True) -> ContigPlan:
    """Which contigs a decode covers, in FASTA order (else track order)."""
    bin_size = tracks.bin_size
    track_file = tracks.files[0].path
    plan = ContigPlan()
    if genome is not None:
        for name in tracks.contigs:
            if name not in genome:
                raise DataError("contig is in the tracks but not in the FASTA " + genome.path
                                + chr_hint(name, genome.names), file=track_file, contig=name)
        order = []
        for name in genome.names:
            length = genome.length(name)
            if name not in tracks:
                plan.skipped.append((name, math.ceil(length / bin_size), "not in the tracks"))
                continue
            tracks.check_length(name, length, genome.path)
            order.append((name, length))
    else:
        order = []
        for name in tracks.contigs:
            length = tracks.length_bp(name)
            order.append((name, length if length is not None else tracks.n_bins(name) * bin_size))
    lengths = dict(order)

    def job_for(name, length):
        n = tracks.n_bins(name)
        return ContigJob(name, n, length, 0, n)

    if region is not None:
        name = region.contig
        if name not in lengths:
            known = list(lengths) + [s[0] for s in plan.skipped]
            why = "not in the FASTA" if genome is not None and name not in genome else "not in the tracks"
            raise DataError(f"--region: contig {why}{chr_hint(name, known)}", contig=name,
                            file=(genome.path if genome is not None and name not in genome else track_file))
        length = lengths[name]
        n = tracks.n_bins(name)
        covered = min(length, n * bin_size)  # floor-binned tracks do not cover the tail
        if region.end > length:
            raise DataError(f"--region end {region.end} is beyond the contig length {length} bp",
                            contig=name)
        if region.start >= covered:
            raise DataError(f"--region starts at {region.start + 1}, beyond the {covered} bp the tracks cover",
                            contig=name)
        first = region.start // bin_size
        last = min(n, -(-region.end // bin_size))
        plan.jobs.append(ContigJob(name, last - first, length, first, n))
        return plan

    if contigs:
        seen = set()
        wanted = []
        for name in contigs:
            if name in seen:
                continue
            seen.add(name)
            wanted.append(name)
        for name in wanted:
            if name not in lengths:
                if genome is not None and name not in genome:
                    raise DataError("--contig: not in the FASTA" + chr_hint(name, genome.names),
                                    file=genome.path, contig=name)
                raise DataError("--contig: not in the tracks" + chr_hint(name, tracks.contigs),
                                file=track_file, contig=name)
            if tracks.n_bins(name) == 0:
                raise DataError("--contig: contig has 0 bins", file=track_file, contig=name)
        # outputs follow FASTA (or track) order whatever the order on the command line
        wanted_set = set(wanted)
        plan.skipped = []
        for name, length in order:
            if name in wanted_set:
                plan.jobs.append(job_for(name, length))
        return plan

    for name, length in order:
        if tracks.n_bins(name) == 0:
            plan.skipped.append((name, 0, "0 bins"))
            continue
        plan.jobs.append(job_for(name, length))
    if plan.skipped and warn:
        names = [s[0] for s in plan.skipped]
        hint = ""
        for name in names:
            hint = chr_hint(name, tracks.contigs)
            if hint:
                hint = f"; {name}{hint}"
                break
        log.warning("skipping %d contig(s) that cannot be decoded (not in the tracks or 0 bins): %s%s",
                    len(names), _names_hint(names), hint)
    if not plan.jobs:
        raise DataError("nothing to decode: no contig is in both the tracks and the FASTA"
                        if genome is not None else "nothing to decode: every contig has 0 bins",
                        file=track_file)
    return plan
