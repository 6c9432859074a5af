"""Bins and base pairs, one rule for every module.

Bin ``i`` of a contig of ``L`` bp covers ``[i * bin_size, min((i + 1) *
bin_size, L))`` (0-based, half-open): a contig has ``ceil(L / bin_size)``
bins, the last one possibly short. Tracks may drop that partial last bin
(``floor``); see docs/formats.md, "Emission tracks".
"""
from __future__ import annotations

import numpy as np

#: Largest bin size (bp) of a model, a tracks or observations file or a --bin-size:
#: bin boundaries (bins x bin size) then stay far inside int64.
MAX_BIN_SIZE = 2**31 - 1


def n_bins(length: int, bin_size: int) -> int:
    """Bins of a contig of ``length`` bp, the partial last one included."""
    return -(-int(length) // int(bin_size))


def full_bins(length: int, bin_size: int) -> int:
    """Bins of full length (the partial last one left out)."""
    return int(length) // int(bin_size)


def to_bp(bins, bin_size: int, length: int):
    """Base-pair positions of bin boundaries, clipped to the contig end."""
    return np.minimum(np.asarray(bins, dtype=np.int64) * int(bin_size), int(length))


def touching(start_bp: int, end_bp: int, bin_size: int) -> tuple[int, int]:
    """[first, last) bins that overlap [start_bp, end_bp) by at least 1 bp."""
    return int(start_bp) // int(bin_size), -(-int(end_bp) // int(bin_size))


def inside(start_bp: int, end_bp: int, bin_size: int, length: int) -> tuple[int, int]:
    """[first, last) bins lying wholly inside [start_bp, end_bp) (the short
    last bin counts as inside when the interval reaches the contig end)."""
    last = n_bins(length, bin_size) if end_bp >= length else int(end_bp) // int(bin_size)
    return -(-int(start_bp) // int(bin_size)), last


def exposure(length: int, bin_size: int, start_bin: int = 0, end_bin: int | None = None) -> np.ndarray:
    """Fraction of a full bin that each bin of [start_bin, end_bin) covers (1,
    except a short last bin)."""
    n = n_bins(length, bin_size)
    end_bin = n if end_bin is None else end_bin
    out = np.ones(end_bin - start_bin, dtype=np.float64)
    if end_bin == n and n > start_bin:
        out[-1] = (length - (n - 1) * bin_size) / bin_size
    return out


def mask(intervals, length: int, bin_size: int) -> np.ndarray:
    """bool (n_bins,): True for bins overlapping any (start, end) bp interval by >= 1 bp."""
    n = n_bins(length, bin_size)
    marks = np.zeros(n + 1, dtype=np.int32)
    for start, end in intervals or ():
        end = min(end, length)
        if end <= start:
            continue
        first, last = touching(start, end, bin_size)
        marks[first] += 1
        marks[last] -= 1
    return np.cumsum(marks[:n]) > 0
