"""Segment calls as BED9+4 (docs/formats.md, "Segments BED"), and posterior samples as BED4+1.

BED9+4 layout, one segment per line, tab-separated::

    ##flashseg ...          optional provenance lines (version, model file and sha256, seed, command)
    #chrom	start	end	name	score	strand	thickStart	thickEnd	itemRgb	seg_post	start_post	end_post	label_post

- ``start``/``end``: 0-based half-open bp, ``end`` clipped to the contig length;
- ``name``: the label; ``score`` = ``floor(1000 * seg_post + 0.5)``;
- ``strand`` and ``itemRgb``: from the model's label; ``thickStart/End`` = start/end;
- ``seg_post``: posterior of the exact segment (MAP segments) or of the merged run
  (posterior decoding, ``--merge-adjacent``);
- ``start_post``/``end_post``: boundary posterior ``b`` (MAP segments) or change
  posterior ``chg`` (merged runs) at the segment's ends, 1 at contig ends;
- ``label_post``: mean of ``gamma[., label]`` over the segment's bins.

Floats are written with ``%.6g``. Contigs follow the FASTA (or track) order
and segments are sorted; there are no ``track``/``browser`` lines, so tabix
and ``bedToBigBed -type=bed9+4 -as=flashseg.as`` (the autoSql file ships
inside the package: :func:`autosql_path`) accept the file; ``-o calls.bb``
writes the bigBed directly (:mod:`flashseg.io.bigfiles`).

:class:`BedWriter` checks every line before writing it: ``start < end``,
sorted within the contig, inside the contig length.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .. import bins
from ..errors import DataError

BED_HEADER = ("#chrom\tstart\tend\tname\tscore\tstrand\tthickStart\tthickEnd\titemRgb"
              "\tseg_post\tstart_post\tend_post\tlabel_post")
SAMPLES_HEADER = "#chrom\tstart\tend\tname\tsample"


def autosql_path() -> str:
    """Path of the shipped ``flashseg.as`` autoSql description of BED9+4."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flashseg.as")


def provenance_lines(*, version: str, model_path=None, model_sha256=None, seed=None,
                     command=None) -> list[str]:
    lines = [f"##flashseg version={version}"]
    if model_path is not None:
        lines.append(f"##flashseg model={model_path} sha256={model_sha256}")
    if seed is not None:
        lines.append(f"##flashseg seed={seed}")
    if command is not None:
        lines.append(f"##flashseg command={command}")
    return lines


def fmt(x: float) -> str:
    return "%.6g" % x


def bed_score(seg_post: float) -> int:
    return int(min(1000, max(0, math.floor(1000.0 * seg_post + 0.5))))


class BedWriter:
    """Writes BED9+4 lines to an open text stream, contig by contig."""

    def __init__(self, stream, *, bin_size: int, label_names, label_colors, label_strands,
                 provenance=(), target: str = "-"):
        self.stream = stream
        self.bin_size = int(bin_size)
        self.names = list(label_names)
        self.colors = list(label_colors)
        self.strands = list(label_strands)
        self.provenance = list(provenance)
        self.target = target
        self.n_written = 0
        self._contigs_seen: set[str] = set()

    def write_header(self) -> None:
        for line in self.provenance:
            self.stream.write(line + "\n")
        self.stream.write(BED_HEADER + "\n")

    def bp_intervals(self, calls, offset: int, length: int):
        start = bins.to_bp(np.asarray(calls.start, dtype=np.int64) + offset, self.bin_size, length)
        end = bins.to_bp(np.asarray(calls.end, dtype=np.int64) + offset, self.bin_size, length)
        return start, end

    def write_calls(self, contig: str, calls, *, length: int, offset: int = 0) -> int:
        """Write one contig's SegmentCalls (bins relative to ``offset``); returns the count."""
        if contig in self._contigs_seen:
            raise DataError("contig written twice", file=self.target, contig=contig)
        self._contigs_seen.add(contig)
        n = len(calls)
        if n == 0:
            return 0
        start, end = self.bp_intervals(calls, offset, length)
        label = np.asarray(calls.label, dtype=np.int64)
        beyond = np.flatnonzero(start >= length)
        if beyond.size:
            i = int(beyond[0])
            raise DataError(f"segment starts at {start[i]}, outside the contig length {length}",
                            file=self.target, contig=contig, bin=int(calls.start[i]) + offset)
        bad = np.flatnonzero(start >= end)
        if bad.size:
            i = int(bad[0])
            raise DataError(f"segment [{start[i]}, {end[i]}) is empty or reversed", file=self.target,
                            contig=contig, bin=int(calls.start[i]) + offset)
        if n > 1:
            unsorted = np.flatnonzero(start[1:] < end[:-1])
            if unsorted.size:
                i = int(unsorted[0]) + 1
                raise DataError(f"segment at {start[i]} overlaps or precedes the previous one",
                                file=self.target, contig=contig, bin=int(calls.start[i]) + offset)
        if start[0] < 0 or end[-1] > length:
            raise DataError(f"segments [{start[0]}, {end[-1]}) outside the contig length {length}",
                            file=self.target, contig=contig)
        if label.min() < 0 or label.max() >= len(self.names):
            raise DataError("segment label outside the model's labels", file=self.target, contig=contig)
        from .textformat import g6_digits, render

        seg_post = np.asarray(calls.seg_post, dtype=np.float64)
        score = np.clip(np.floor(1000.0 * seg_post + 0.5), 0, 1000).astype(np.int64)
        C = len(self.names)
        # string columns index one table: names, then strands, then colors
        ints = np.stack([start, end, label, score, C + label, start, end, 2 * C + label], axis=1)
        floats = np.stack([seg_post, np.asarray(calls.start_post, dtype=np.float64),
                           np.asarray(calls.end_post, dtype=np.float64),
                           np.asarray(calls.label_post, dtype=np.float64)], axis=1)
        mants, exps = g6_digits(floats.ravel())
        self.stream.write(render(f"{contig}\t", "iisisiisgggg", ints, mants.reshape(floats.shape),
                                 exps.reshape(floats.shape), self.names + self.strands + self.colors))
        self.n_written += n
        return n


class SamplesWriter:
    """Posterior samples as BED4+1: ``#chrom start end name sample`` (sample = 0..N-1)."""

    def __init__(self, stream, *, bin_size: int, label_names, provenance=()):
        self.stream = stream
        self.bin_size = int(bin_size)
        self.names = list(label_names)
        self.provenance = list(provenance)

    def write_header(self) -> None:
        for line in self.provenance:
            self.stream.write(line + "\n")
        self.stream.write(SAMPLES_HEADER + "\n")

    def write_samples(self, contig: str, samples, *, length: int, offset: int = 0, first: int = 0,
                      stream=None) -> None:
        """Samples ``first, first + 1, ...`` of a contig (to ``stream``, default the writer's)."""
        names = self.names
        out = self.stream if stream is None else stream
        for k, seg in enumerate(samples, first):
            start = bins.to_bp(np.asarray(seg.start, dtype=np.int64) + offset, self.bin_size, length)
            end = bins.to_bp(np.asarray(seg.end, dtype=np.int64) + offset, self.bin_size, length)
            out.write("".join(f"{contig}\t{s}\t{e}\t{names[c]}\t{k}\n" for s, e, c in
                                      zip(start.tolist(), end.tolist(), np.asarray(seg.label).tolist())))


def open_text(path):
    """A text file for reading, gunzipped when it is gzip or BGZF (told by its
    first bytes, not its name): the one rule for every BED-like input."""
    import gzip

    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "r", encoding="utf-8", newline="\n")


def data_lines(path, min_fields: int, what: str = "as BED"):
    """Yield (line number, fields) of a BED-like text file, plain or gzipped:
    ``#``, ``track`` and ``browser`` lines and blank lines are skipped, columns
    are split on tabs (on any whitespace when a line has fewer than
    ``min_fields`` tab-separated ones); a file that cannot be read is a
    DataError ("cannot read <what>") naming it."""
    path = os.fspath(path)
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) < min_fields:
                    fields = line.split()
                yield number, fields
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what}: {exc}", file=path) from None


def read_bed_records(path):
    """Yield (line number, chrom, start, end, fields) of a BED-like file
    (:func:`data_lines`); a line without chrom, start, end or with a bad
    interval is a DataError naming the file and line."""
    path = os.fspath(path)
    for number, fields in data_lines(path, 3):
        try:
            chrom, start, end = fields[0], int(fields[1]), int(fields[2])
        except (ValueError, IndexError):
            raise DataError(f"line {number}: expected chrom, start, end", file=path) from None
        if start < 0 or end < start:
            raise DataError(f"line {number}: bad interval {start}-{end}", file=path)
        yield number, chrom, start, end, fields


def read_intervals(path) -> dict[str, list[tuple[int, int]]]:
    """The intervals of a BED file (chrom, start, end; more columns ignored) by contig."""
    intervals: dict[str, list[tuple[int, int]]] = {}
    for _, chrom, start, end, _ in read_bed_records(path):
        intervals.setdefault(chrom, []).append((start, end))
    return intervals
