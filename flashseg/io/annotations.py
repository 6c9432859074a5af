"""What ``flashseg report`` reads besides the model (docs/report.md, "Inputs"):

- segments: flashseg's BED9+4 or any BED4+ with the label in the name column
  (ChromHMM's ``_segments.bed``), plain or gzipped;
- annotations: BED3+ files (``--annotations DIR`` takes every ``.bed`` and
  ``.bed.gz`` in DIR);
- anchors: ChromHMM's ``chrom position [strand]`` files or BED (the start of
  a ``+`` or unstranded interval, the last base of a ``-`` one);
- the bedGraph of ``decode --boundaries`` over one region.

Every problem is a DataError naming the file and the line.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError, UsageError
from ..report.enrichment import ContigSegments
from .bed import data_lines, read_bed_records
from .bed import read_intervals as bed_intervals

ANNOTATION_SUFFIXES = (".bed", ".bed.gz")
ANCHOR_STRIP = (".gz", ".txt", ".bed")


def read_segments(path, label_names) -> dict:
    """``{contig: ContigSegments}`` in the file's contig order; segments sorted by start.

    A label not in the model, or segments of one contig that overlap, is an
    error naming the line.
    """
    path = os.fspath(path)
    index = {name: i for i, name in enumerate(label_names)}
    columns: dict[str, tuple[list, list, list, list]] = {}
    for number, chrom, start, end, fields in read_bed_records(path):
        if len(fields) < 4 or not fields[3].strip():
            raise DataError(f"line {number}: expected chrom, start, end and a label in the name column", file=path)
        name = fields[3].strip()
        label = index.get(name)
        if label is None:
            shown = ", ".join(label_names[:8]) + (", ..." if len(label_names) > 8 else "")
            raise DataError(f"line {number}: label {name!r} is not one of the model's labels ({shown})", file=path)
        if end == start:
            continue
        lists = columns.setdefault(chrom, ([], [], [], []))
        lists[0].append(start)
        lists[1].append(end)
        lists[2].append(label)
        lists[3].append(number)
    if not columns:
        raise DataError("no segments", file=path)
    out = {}
    for chrom, (starts, ends, labels, lines) in columns.items():
        start = np.array(starts, dtype=np.int64)
        end = np.array(ends, dtype=np.int64)
        label = np.array(labels, dtype=np.int64)
        order = np.argsort(start, kind="stable")
        start, end, label = start[order], end[order], label[order]
        overlap = np.flatnonzero(start[1:] < end[:-1])
        if overlap.size:
            i = int(overlap[0])
            first, second = sorted((lines[order[i]], lines[order[i + 1]]))
            raise DataError(f"line {second}: segment {chrom}:{start[i + 1]}-{end[i + 1]} overlaps the segment "
                            f"of line {first}", file=path)
        out[chrom] = ContigSegments(start, end, label)
    return out


def annotation_paths(specs) -> list[str]:
    """The annotation files of ``--annotations`` values: files as given, directories'
    BED files (``.bed``, ``.bed.gz``) by name. Two files with one name are a usage error
    (their columns would share it)."""
    paths = []
    for spec in specs:
        spec = os.fspath(spec)
        if os.path.isdir(spec):
            found = sorted(name for name in os.listdir(spec) if name.endswith(ANNOTATION_SUFFIXES)
                           and os.path.isfile(os.path.join(spec, name)))
            if not found:
                raise UsageError(f"--annotations {spec}: no .bed or .bed.gz file in the directory")
            paths.extend(os.path.join(spec, name) for name in found)
        else:
            paths.append(spec)
    seen = {}
    for path in paths:
        name = os.path.basename(path)
        if name in seen:
            raise UsageError(f"--annotations: {seen[name]} and {path} have the same name {name!r}, "
                             "which names their column")
        seen[name] = path
    return paths


def read_intervals(path) -> dict:
    """``{contig: (start, end)}`` int64 arrays of a BED3+ file, plain or gzipped (bed.read_intervals)."""
    out = {}
    for chrom, pairs in bed_intervals(path).items():
        pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        out[chrom] = (pairs[:, 0].copy(), pairs[:, 1].copy())
    return out


def anchor_name(path) -> str:
    """The name of an anchor file in output names: its file name without ``.gz``, ``.txt`` and ``.bed``."""
    name = os.path.basename(os.fspath(path))
    stripped = True
    while stripped:
        stripped = False
        for suffix in ANCHOR_STRIP:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                stripped = True
    return name


def read_anchors(path) -> dict:
    """``{contig: (position, minus)}`` of an anchor file: int64 0-based positions, bool ``-`` strand.

    A line ``chrom position`` or ``chrom position strand`` (strand ``+``,
    ``-`` or ``.``) is ChromHMM's format; a line with a numeric third column
    is BED: the anchor is ``start``, or ``end - 1`` when column 6 is ``-``.
    """
    path = os.fspath(path)
    lists: dict[str, tuple[list, list]] = {}
    for number, fields in data_lines(path, 2, "anchors"):
        try:
            chrom = fields[0]
            first = int(fields[1])
            third = fields[2].strip() if len(fields) > 2 else ""
            if third in ("", "+", "-", "."):
                position, minus = first, third == "-"
            else:
                end = int(third)
                strand = fields[5].strip() if len(fields) > 5 else "."
                if strand not in ("+", "-", "."):
                    raise DataError(f"line {number}: strand must be +, - or ., got {strand!r}", file=path)
                if end <= first:
                    raise DataError(f"line {number}: bad interval {first}-{end}", file=path)
                position, minus = (end - 1, True) if strand == "-" else (first, False)
        except (ValueError, IndexError):
            raise DataError(f"line {number}: expected chrom, position[, strand] or a BED line",
                            file=path) from None
        if position < 0:
            raise DataError(f"line {number}: negative position {position}", file=path)
        pair = lists.setdefault(chrom, ([], []))
        pair[0].append(position)
        pair[1].append(minus)
    return {chrom: (np.array(p, dtype=np.int64), np.array(m, dtype=bool)) for chrom, (p, m) in lists.items()}


def read_bedgraph_region(path, contig: str, start: int, end: int):
    """(start, end, value) arrays of the bedGraph lines of ``contig`` that overlap ``[start, end)``."""
    path = os.fspath(path)
    rows = []
    for number, fields in data_lines(path, 4, "as bedGraph"):
        if fields[0] != contig:
            continue
        try:
            a, b, value = int(fields[1]), int(fields[2]), float(fields[3])
        except (ValueError, IndexError):
            raise DataError(f"line {number}: expected chrom, start, end, value", file=path) from None
        if b > start and a < end:
            rows.append((a, b, value))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    a, b, v = zip(*rows)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), np.array(v, dtype=np.float64)
