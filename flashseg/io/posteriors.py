"""``--posteriors FILE.h5``: the label marginals gamma per bin.

The file has the tracks layout (docs/formats.md, "Emission tracks") with ``score = "probability"``,
so it can be inspected with ``flashseg info`` and read back with
:func:`flashseg.io.tracks.open_tracks`. Values are float32 by default
(``--posteriors-dtype float16`` halves the size; gamma lies in [0, 1], far
from float16's overflow). With ``--region`` the contig's dataset keeps its
full length; rows outside the region were not decoded and read as NaN, and
the dataset's ``decoded_bins`` attribute gives the decoded range.
"""
from __future__ import annotations

import numpy as np

from .tracks import TracksWriter

POSTERIOR_DTYPES = ("float32", "float16")


class PosteriorsWriter:
    """Context manager around a TracksWriter; hands out one per-contig sink."""

    def __init__(self, path, *, labels, bin_size: int, dtype: str = "float32"):
        if dtype not in POSTERIOR_DTYPES:
            raise ValueError(f"posteriors dtype must be float32 or float16, got {dtype}")
        self._writer = TracksWriter(path, labels=labels, bin_size=bin_size, score="probability",
                                    dtype=dtype, compression="lzf")

    def __enter__(self):
        self._writer.__enter__()
        return self

    def __exit__(self, *exc):
        return self._writer.__exit__(*exc)

    def add_contig(self, name: str, total_bins: int, length_bp: int | None,
                   offset: int = 0, n_bins: int | None = None) -> "PosteriorsSink":
        n_bins = total_bins - offset if n_bins is None else n_bins
        partial = offset != 0 or n_bins != total_bins
        self._writer.add_contig(name, total_bins, length_bp,
                                fill_value=np.nan if partial else None)
        if partial:
            self._writer.set_contig_attr(name, "decoded_bins", np.array([offset, offset + n_bins]))
        return PosteriorsSink(self._writer, name, offset)


class PosteriorsSink:
    def __init__(self, writer: TracksWriter, name: str, offset: int):
        self.writer = writer
        self.name = name
        self.offset = offset

    def add(self, start: int, gamma) -> None:
        self.writer.write(self.name, self.offset + start, gamma)
