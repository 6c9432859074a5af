"""Per-bin posteriors as bedGraph (docs/formats.md, "bedGraph outputs"): ``--boundaries`` and ``--changes``.

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

from .. import bins

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

    def _line(self, run) -> bytes:
        from .textformat import render_bytes

        first, end, mant, exp10 = run
        return render_bytes(f"{self.contig}\t", "iig", bins.to_bp([[first, end]], self.bin_size, self.length),
                            np.array([[mant]]), np.array([[exp10]]))

    def _emit(self, data: bytes) -> None:
        # Streams that take bytes (decode's per-contig buffers) skip a decode/encode round trip.
        if not data:
            return
        write_bytes = getattr(self.stream, "write_bytes", None)
        if write_bytes is not None:
            write_bytes(data)
        else:
            self.stream.write(data.decode())

    def add(self, start: int, values) -> None:
        """Values of local bins ``[start, start + n)`` (local bin 0 is skipped)."""
        from .textformat import g6_digits, render_bytes

        values = np.asarray(values, dtype=np.float64)
        local = np.arange(start, start + values.shape[0])
        idx = np.flatnonzero((values >= self.min_posterior) & (local >= 1))
        if idx.size == 0:
            self.close()
            return
        mant, exp10 = g6_digits(values[idx])
        at = local[idx] + self.offset
        # A run continues while bins are consecutive and the printed value repeats.
        new_run = np.ones(idx.size, dtype=bool)
        new_run[1:] = (at[1:] != at[:-1] + 1) | (mant[1:] != mant[:-1]) | (exp10[1:] != exp10[:-1])
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], idx.size)
        run_first = at[starts]
        run_end = at[ends - 1] + 1
        run_mant, run_exp = mant[starts], exp10[starts]
        prev = self._run
        if prev is not None and prev[1] == run_first[0] and prev[2] == run_mant[0] and prev[3] == run_exp[0]:
            run_first[0] = prev[0]
            prev = None
        text = self._line(prev) if prev is not None else b""
        # The last run may continue into the next chunk unless a left-out bin ends it here.
        self._run = (int(run_first[-1]), int(run_end[-1]), int(run_mant[-1]), int(run_exp[-1]))
        complete = slice(0, len(starts) - 1)
        if len(starts) > 1:
            ints = bins.to_bp(np.stack([run_first[complete], run_end[complete]], axis=1), self.bin_size,
                              self.length)
            text += render_bytes(f"{self.contig}\t", "iig", ints, run_mant[complete], run_exp[complete])
        self._emit(text)
        if idx[-1] != values.shape[0] - 1:
            self.close()

    def close(self) -> None:
        if self._run is not None:
            self._emit(self._line(self._run))
            self._run = None

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
