"""Which reads count, and where: the filters shared by every way of counting
(pysam in ``alignments.py``, the compiled scanner in ``bam_fast.py``).

* a read counts once, in the bin holding its leftmost aligned base
  (``reference_start``), whatever its strand;
* with ``fragments=True`` only properly paired reads count, once per
  fragment, at the fragment midpoint ``pos + tlen // 2`` taken from the
  leftmost mate (the one with ``tlen > 0``); fragments longer than
  ``max_fragment`` bp are dropped, which also bounds how far before a bin
  range a counted fragment can start, so every range is counted exactly;
* reads that are unmapped, secondary, supplementary, QC-failed or marked
  duplicate, or have MAPQ below ``min_mapq``, are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError


# BAM flag bits (SAM spec 1.4).
FLAG_PAIRED = 0x1
FLAG_PROPER_PAIR = 0x2
FLAG_UNMAPPED = 0x4
FLAG_SECONDARY = 0x100
FLAG_QCFAIL = 0x200
FLAG_DUPLICATE = 0x400
FLAG_SUPPLEMENTARY = 0x800
DROPPED_FLAGS = FLAG_UNMAPPED | FLAG_SECONDARY | FLAG_QCFAIL | FLAG_DUPLICATE | FLAG_SUPPLEMENTARY


@dataclass(frozen=True)
class ReadFilter:
    """Which reads count, and where (see the module docstring)."""

    min_mapq: int = 20
    fragments: bool = False
    max_fragment: int = 1000

    def __post_init__(self):
        if self.min_mapq < 0:
            raise DataError(f"--min-mapq must be >= 0, got {self.min_mapq}")
        if self.max_fragment < 1:
            raise DataError(f"max fragment length must be >= 1 bp, got {self.max_fragment}")
