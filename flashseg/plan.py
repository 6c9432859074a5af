"""Which contigs a run covers and in which order: the plan of a decode (or
of ``validate``/``info``) from its score sources and genome.

:func:`plan_contigs` follows the FASTA's order (else the tracks'): a contig
in the FASTA but not in the tracks, or with 0 bins, is skipped with a
warning that counts and names them; an explicitly requested contig that
cannot be decoded is an error, and so is a run with nothing left to decode.
A ``--region`` is decoded as a slice of its contig's bins.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import bins
from .errors import DataError
from .io.fasta import Genome, chr_hint

log = logging.getLogger(__name__)


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
                plan.skipped.append((name, bins.n_bins(length, bin_size), "not in the tracks"))
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
        first, last = bins.touching(region.start, region.end, bin_size)
        last = min(n, last)
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
