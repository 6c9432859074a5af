"""Overlap and neighborhood enrichment of a segmentation's labels (docs/report.md).

Pure numpy on sorted intervals, no files and no per-base arrays: a
whole-genome segmentation (half a million segments, 3 Gbp) and tens of
thousands of annotation intervals take well under a second.

Definitions (ChromHMM's OverlapEnrichment and NeighborhoodEnrichment with
their defaults):

- The *segmented genome* is the union of the segments; every base in it has
  one label. Positions outside it are ignored everywhere.
- Overlap fold enrichment of label ``c`` in annotation ``A`` (the union of
  its intervals, so a base is counted once however many intervals hold it)::

      fold = (bases of c in A / bases of c) / (bases of A in the genome / bases of the genome)

- Neighborhood: for each anchor at 0-based position ``p`` and each offset
  ``k = -n..n`` (``n = flank // bin_size``), the base ``p + k * bin_size``
  (``p - k * bin_size`` for an anchor on the ``-`` strand, so upstream is
  always on the left). The enrichment of label ``c`` at offset ``k`` is the
  fraction of anchors whose base at that offset lies in ``c``, among the
  anchors whose base at that offset lies in the segmented genome, divided
  by ``c``'s fraction of the genome.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class ContigSegments(NamedTuple):
    """One contig's segments: sorted, non-overlapping, 0-based half-open bp; label indexes the model's labels."""

    start: np.ndarray   # int64
    end: np.ndarray     # int64
    label: np.ndarray   # int64


#: anchor x offset cells looked up at a time (bounds memory for millions of anchors and wide flanks)
ANCHOR_CELLS = 1 << 22

Segmentation = dict   # contig name -> ContigSegments, in the order of the segments file
Intervals = dict      # contig name -> (start, end) int64 arrays, any order, may overlap
Anchors = dict        # contig name -> (position int64, minus bool)


def merge_intervals(start, end) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals ``[start, end)`` as sorted, disjoint, non-touching intervals."""
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    keep = end > start
    start, end = start[keep], end[keep]
    if start.size == 0:
        return start, end
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    # a new run begins where an interval starts past everything before it
    new = np.ones(start.size, dtype=bool)
    new[1:] = start[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], start.size) - 1
    return start[first], reach[last]


def covered_before(points, u_start: np.ndarray, u_end: np.ndarray) -> np.ndarray:
    """Bases of the disjoint sorted union ``[u_start, u_end)`` that lie before each point."""
    points = np.asarray(points, dtype=np.int64)
    if u_start.size == 0:
        return np.zeros(points.shape, dtype=np.int64)
    lengths = u_end - u_start
    before = np.concatenate(([0], np.cumsum(lengths)))    # bases in intervals 0..i-1
    i = np.searchsorted(u_start, points, side="right") - 1
    inside = np.clip(points - u_start[np.maximum(i, 0)], 0, lengths[np.maximum(i, 0)])
    return np.where(i >= 0, before[np.maximum(i, 0)] + inside, 0)


def label_bases(segmentation: Segmentation, n_labels: int) -> np.ndarray:
    """(C,) bases of each label."""
    total = np.zeros(n_labels, dtype=np.int64)
    for seg in segmentation.values():
        total += np.bincount(seg.label, weights=seg.end - seg.start, minlength=n_labels).astype(np.int64)
    return total


def _ratio(numerator, denominator) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


@dataclass(frozen=True)
class OverlapTable:
    """Bases of every label inside every annotation, and what the fold enrichment is made of."""

    label_bases: np.ndarray       # (C,) bases of each label
    overlap: np.ndarray           # (C, A) bases of label c inside annotation a
    genome_bases: int             # bases of the segmented genome

    @property
    def annotation_bases(self) -> np.ndarray:
        """(A,) bases of each annotation inside the segmented genome."""
        return self.overlap.sum(axis=0)

    @property
    def genome_pct(self) -> np.ndarray:
        """(C,) percent of the segmented genome in each label (0-100)."""
        return 100.0 * _ratio(self.label_bases, self.genome_bases)

    @property
    def annotation_pct(self) -> np.ndarray:
        """(A,) percent of the segmented genome inside each annotation."""
        return 100.0 * _ratio(self.annotation_bases, self.genome_bases)

    @property
    def fold(self) -> np.ndarray:
        """(C, A) fold enrichment; NaN where a label or an annotation has no base in the genome."""
        inside = _ratio(self.overlap, self.label_bases[:, None])
        expected = _ratio(self.annotation_bases, self.genome_bases)
        return _ratio(inside, np.broadcast_to(expected, inside.shape))


def overlap_bases(segmentation: Segmentation, annotation: Intervals, n_labels: int) -> np.ndarray:
    """(C,) bases of each label inside the union of ``annotation``'s intervals."""
    out = np.zeros(n_labels, dtype=np.int64)
    for contig, seg in segmentation.items():
        if contig not in annotation:
            continue
        u_start, u_end = merge_intervals(*annotation[contig])
        inside = covered_before(seg.end, u_start, u_end) - covered_before(seg.start, u_start, u_end)
        out += np.bincount(seg.label, weights=inside, minlength=n_labels).astype(np.int64)
    return out


def overlap_enrichment(segmentation: Segmentation, annotations, n_labels: int) -> OverlapTable:
    """Overlap of every label with every annotation (a list of :data:`Intervals`)."""
    bases = label_bases(segmentation, n_labels)
    overlap = np.zeros((n_labels, len(annotations)), dtype=np.int64)
    for a, annotation in enumerate(annotations):
        overlap[:, a] = overlap_bases(segmentation, annotation, n_labels)
    return OverlapTable(bases, overlap, int(bases.sum()))


def labels_at(seg: ContigSegments, positions) -> np.ndarray:
    """The label of the segment holding each 0-based position, -1 outside every segment."""
    positions = np.asarray(positions, dtype=np.int64)
    i = np.searchsorted(seg.start, positions, side="right") - 1
    j = np.maximum(i, 0)
    inside = (i >= 0) & (positions < seg.end[j]) if seg.start.size else np.zeros(positions.shape, dtype=bool)
    return np.where(inside, seg.label[j] if seg.start.size else -1, -1)


@dataclass(frozen=True)
class NeighborhoodTable:
    """Labels found at each offset around the anchors."""

    offsets: np.ndarray           # (O,) bp, -n * bin_size .. n * bin_size
    counts: np.ndarray            # (C, O) anchors whose base at the offset lies in the label
    label_fraction: np.ndarray    # (C,) the label's fraction of the segmented genome

    @property
    def anchors(self) -> np.ndarray:
        """(O,) anchors whose base at the offset lies in the segmented genome."""
        return self.counts.sum(axis=0)

    @property
    def fold(self) -> np.ndarray:
        """(C, O) fold enrichment; NaN where no anchor counts or a label has no base."""
        observed = _ratio(self.counts, np.broadcast_to(self.anchors, self.counts.shape))
        return _ratio(observed, np.broadcast_to(self.label_fraction[:, None], observed.shape))


def neighborhood_offsets(bin_size: int, flank: int) -> np.ndarray:
    n = int(flank) // int(bin_size)
    return np.arange(-n, n + 1, dtype=np.int64) * int(bin_size)


def neighborhood_enrichment(segmentation: Segmentation, anchors: Anchors, n_labels: int, *, bin_size: int,
                            flank: int) -> NeighborhoodTable:
    """Enrichment of every label at every bin-sized offset within ``flank`` bp of the anchors (strand-aware)."""
    offsets = neighborhood_offsets(bin_size, flank)
    counts = np.zeros((n_labels, offsets.size), dtype=np.int64)
    for contig, seg in segmentation.items():
        if contig not in anchors:
            continue
        position, minus = anchors[contig]
        position = np.asarray(position, dtype=np.int64)
        sign = np.where(np.asarray(minus, dtype=bool), -1, 1).astype(np.int64)
        block = max(1, ANCHOR_CELLS // offsets.size)
        for a in range(0, position.size, block):             # (anchors, offsets) a block at a time
            where = position[a:a + block, None] + sign[a:a + block, None] * offsets[None, :]
            label = labels_at(seg, where)
            column = np.broadcast_to(np.arange(offsets.size), label.shape)
            hit = label >= 0
            flat = label[hit] * offsets.size + column[hit]
            counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
    bases = label_bases(segmentation, n_labels)
    return NeighborhoodTable(offsets, counts, _ratio(bases, bases.sum()))


def segment_lengths(segmentation: Segmentation, n_labels: int, bin_size: int) -> list[np.ndarray]:
    """Per label, the lengths of its segments in bins (a clipped last bin counts as one)."""
    lengths = [[] for _ in range(n_labels)]
    for seg in segmentation.values():
        bins = -(-(seg.end - seg.start) // int(bin_size))
        order = np.argsort(seg.label, kind="stable")
        split = np.searchsorted(seg.label[order], np.arange(n_labels + 1))
        for c in range(n_labels):
            lengths[c].append(bins[order[split[c]:split[c + 1]]])
    return [np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for parts in lengths]


def calls_are_runs(segmentation: Segmentation) -> bool:
    """True when no segment abuts one of its own label: the calls are maximal runs of a label
    (a plain HMM's output, ``--merge-adjacent``, ChromHMM's segments)."""
    for seg in segmentation.values():
        if seg.start.size > 1:
            abut = (seg.start[1:] == seg.end[:-1]) & (seg.label[1:] == seg.label[:-1])
            if abut.any():
                return False
    return True


class LabelMeans:
    """Mean of every column of per-bin values over the bins of each label (NaN values skipped)."""

    def __init__(self, n_labels: int, n_columns: int):
        self.sums = np.zeros((n_labels, n_columns))
        self.counts = np.zeros((n_labels, n_columns), dtype=np.int64)

    def add(self, labels: np.ndarray, values: np.ndarray) -> None:
        """``labels`` (n,) with -1 for bins outside the calls, ``values`` (n, M)."""
        keep = labels >= 0
        labels, values = labels[keep], np.asarray(values, dtype=np.float64)[keep]
        C = self.sums.shape[0]
        for j in range(values.shape[1]):
            present = ~np.isnan(values[:, j])
            self.sums[:, j] += np.bincount(labels[present], weights=values[present, j], minlength=C)
            self.counts[:, j] += np.bincount(labels[present], minlength=C)

    @property
    def means(self) -> np.ndarray:
        return _ratio(self.sums, self.counts)


def bin_labels(seg: ContigSegments, first_bin: int, end_bin: int, bin_size: int) -> np.ndarray:
    """The label of bins ``[first_bin, end_bin)``: that of the segment holding the bin's first base."""
    return labels_at(seg, np.arange(first_bin, end_bin, dtype=np.int64) * int(bin_size))
