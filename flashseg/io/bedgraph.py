"""Per-bin posteriors as bedGraph (SPEC §4.5): ``--boundaries`` and ``--changes``.

No header. Each value covers its bin's bp interval
``[i * bin_size, min((i + 1) * bin_size, L))`` and is printed with ``%.6g``;
adjacent bins whose printed values are equal are merged into one line, and
bins below ``--min-posterior`` are left out (they mean 0). The boundary and
change posteriors are defined for bins ``1..T-1``; bin 0 (the contig or
region start, always a boundary) is not written.

:class:`BedGraphSink` receives one contig's values chunk by chunk, in
ascending order, and writes lines to a text stream as it goes; runs are
carried across chunk edges so the output does not depend on the chunk size.
"""
from __future__ import annotations

import numpy as np

DEFAULT_MIN_POSTERIOR = 1e-4


class BedGraphSink:
    def __init__(self, stream, *, contig: str, bin_size: int, length: int, offset: int = 0,
                 min_posterior: float = DEFAULT_MIN_POSTERIOR):
        self.stream = stream
        self.contig = contig
        self.bin_size = int(bin_size)
        self.length = int(length)
        self.offset = int(offset)
        self.min_posterior = float(min_posterior)
        self._run = None  # [first_bin, end_bin, text] (global bins, half-open)

    def _flush_run(self, out: list) -> None:
        if self._run is not None:
            first, end, text = self._run
            bs = self.bin_size
            out.append(f"{self.contig}\t{first * bs}\t{min(end * bs, self.length)}\t{text}\n")
            self._run = None

    def add(self, start: int, values) -> None:
        """Values of local bins ``[start, start + n)`` (local bin 0 is skipped)."""
        values = np.asarray(values, dtype=np.float64)
        local = np.arange(start, start + values.shape[0])
        keep = (values >= self.min_posterior) & (local >= 1)
        idx = np.flatnonzero(keep)
        out: list[str] = []
        if idx.size == 0:
            self._flush_run(out)
            self.stream.write("".join(out))
            return
        texts = np.char.mod("%.6g", values[idx]).tolist()
        bins = (local[idx] + self.offset).tolist()
        run = self._run
        for b, text in zip(bins, texts):
            if run is not None and run[1] == b and run[2] == text:
                run[1] = b + 1
            else:
                if run is not None:
                    self._run = run
                    self._flush_run(out)
                run = [b, b + 1, text]
        self._run = run
        # a kept run cannot extend past a bin left out at the chunk's end
        if idx[-1] != values.shape[0] - 1:
            self._flush_run(out)
        self.stream.write("".join(out))

    def close(self) -> None:
        out: list[str] = []
        self._flush_run(out)
        self.stream.write("".join(out))

    def reset(self) -> None:
        self._run = None


def read_bedgraph(path):
    """(chrom, start, end, value) tuples of a bedGraph file (tests and tools)."""
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            chrom, s, e, v = line.rstrip("\n").split("\t")
            out.append((chrom, int(s), int(e), float(v)))
    return out
