"""Per-bin outputs of a decode: the core's per-bin consumer of one contig,
fanning gamma, b and chg out to bedGraph and HDF5 sinks, with each contig's
bedGraph text buffered (in memory, then in an append-only temporary beside
the target) until the contig's turn to be written in genome order.
"""
from __future__ import annotations

import contextlib
import os

# Per-bin text is buffered in memory up to this size per contig, then
# appended to that contig's temporary file (bounded memory, few open files).
_BUFFER_CHARS = 1 << 20


class BufferedText:
    """A write()-able buffer spilling to an append-only temporary file.

    Holds UTF-8 bytes: the bedGraph writers hand it bytes (``write_bytes``),
    and draining copies bytes, so per-bin text is never decoded and encoded
    again on its way to the output.
    """

    def __init__(self, path: str, target: str = "-"):
        self.path = path
        self.target = target     # the output this text belongs to (named in errors)
        self.parts: list[bytes] = []
        self.size = 0
        self.spilled = False

    def write(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_bytes(self, data: bytes) -> None:
        if not data:
            return
        self.parts.append(data)
        self.size += len(data)
        if self.size >= _BUFFER_CHARS:
            self.spill()

    def spill(self) -> None:
        if self.parts:
            from .output import write_error

            try:
                with open(self.path, "ab") as handle:
                    handle.write(b"".join(self.parts))
            except OSError as exc:
                raise write_error(exc, self.target) from None
            self.spilled = True
        self.parts, self.size = [], 0

    def reset(self) -> None:
        self.parts, self.size = [], 0
        if self.spilled:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.spilled = False

    def drain_into(self, stream) -> None:
        """Append everything written so far to ``stream`` and forget it."""
        from .output import copy_file_into, discard

        if self.spilled:
            self.spill()
            copy_file_into(self.path, stream)
            discard(self.path)
            self.spilled = False
        else:
            write_bytes_to(stream, b"".join(self.parts))
            discard(self.path)  # registered but never created
        self.parts, self.size = [], 0


def write_bytes_to(stream, data: bytes) -> None:
    """Write UTF-8 bytes to a text stream (through its binary buffer when it has one)."""
    if not data:
        return
    raw = getattr(stream, "buffer", None)
    if raw is not None:
        stream.flush()
        raw.write(data)
    else:
        stream.write(data.decode())


class PerBinOutputs:
    """The core's per-bin consumer for one contig: fans out to bedGraph and HDF5 sinks."""

    def __init__(self, boundary=None, change=None, posteriors=None, samples=None):
        self.boundary = boundary      # (BedGraphSink, BufferedText) or None
        self.change = change
        self.posteriors = posteriors  # PosteriorsSink or None
        self.sampled = samples        # (write(first, batch, buffer), BufferedText) or None

    @property
    def takes_samples(self) -> bool:
        """Whether the core should stream posterior samples to :meth:`samples`."""
        return self.sampled is not None

    def chunk(self, start, gamma, boundary, change):
        if self.boundary is not None:
            self.boundary[0].add(start, boundary)
        if self.change is not None:
            self.change[0].add(start, change)
        if self.posteriors is not None:
            self.posteriors.add(start, gamma)

    def samples(self, first, batch):
        write, buffer = self.sampled
        write(first, batch, buffer)

    def restart(self):
        for pair in (self.boundary, self.change):
            if pair is not None:
                pair[0].reset()
                pair[1].reset()
        # posteriors rows are simply overwritten when re-sent

    def finish(self, boundary_stream, change_stream, samples_stream=None):
        if self.boundary is not None:
            self.boundary[0].close()
            self.boundary[1].drain_into(boundary_stream)
        if self.change is not None:
            self.change[0].close()
            self.change[1].drain_into(change_stream)
        if self.sampled is not None:
            self.sampled[1].drain_into(samples_stream)
