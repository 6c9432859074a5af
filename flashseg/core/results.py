"""What inference returns, as plain arrays (docs/algorithms.md, "Notation")."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segments:
    """Segments (start, end, label) in bins, half-open, sorted by start."""

    start: np.ndarray  # int64
    end: np.ndarray    # int64
    label: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def from_lists(cls, start, end, label) -> "Segments":
        return cls(np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64),
                   np.asarray(label, dtype=np.int32))

    @classmethod
    def empty(cls) -> "Segments":
        return cls.from_lists([], [], [])

    def tuples(self) -> list[tuple[int, int, int]]:
        return list(zip(self.start.tolist(), self.end.tolist(), self.label.tolist()))


@dataclass
class SegmentCalls(Segments):
    """Segments with their posteriors (the BED9+4 columns of docs/formats.md, "Segments BED").

    seg_post    posterior of the exact segment (MAP segments) or of the merged run
    start_post  b (MAP segments) or chg (merged runs) at ``start``; 1 at the contig start
    end_post    the same at ``end``; 1 at the contig end
    label_post  mean of gamma[., label] over the segment's bins
    """

    seg_post: np.ndarray = field(default_factory=lambda: np.zeros(0))
    start_post: np.ndarray = field(default_factory=lambda: np.zeros(0))
    end_post: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_post: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class ContigResult:
    """Everything ``decode_contig`` computed for one contig."""

    name: str
    n_bins: int
    log_partition: float
    viterbi_score: float | None
    calls: SegmentCalls
    samples: list = field(default_factory=list)  # list[Segments], one per sample
    seconds: float = 0.0
    backend: str = "cpu"
    exact_fallback: bool = False  # the certified fast path failed; recomputed exactly


def tiles(segs: Segments, T: int) -> bool:
    """True when the segments are sorted and cover [0, T) exactly once."""
    return (len(segs) > 0 and segs.start[0] == 0 and segs.end[-1] == T
            and bool(np.all(segs.start[1:] == segs.end[:-1])) and bool(np.all(segs.start < segs.end)))


def merge_runs(segs: Segments) -> Segments:
    """Merge adjacent segments of the same label into runs."""
    if len(segs) == 0:
        return segs
    keep = np.ones(len(segs), dtype=bool)
    keep[1:] = segs.label[1:] != segs.label[:-1]
    starts = segs.start[keep]
    labels = segs.label[keep]
    ends = np.append(starts[1:], segs.end[-1])
    return Segments(starts, ends, labels)
