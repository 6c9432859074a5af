"""Exceptions that the command line turns into one-line messages.

The library raises these; only ``flashseg.cli`` decides how they look and
which exit code they map to (1 for bad data or a failed run, 2 for options
that cannot work together).
"""
from __future__ import annotations


class FlashsegError(Exception):
    """A problem the user can fix: bad data, an impossible model, a failed run.

    ``where`` parts (file, contig, bin) are appended to the message so every
    error names the place it comes from.
    """

    exit_code = 1

    def __init__(self, message: str, *, file: str | None = None,
                 contig: str | None = None, bin: int | None = None):
        self.message = message
        self.file = file
        self.contig = contig
        self.bin = bin
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.file is not None:
            where.append(_one_line(str(self.file)))
        if self.contig is not None:
            where.append(f"contig {_one_line(str(self.contig))}")
        if self.bin is not None:
            where.append(f"bin {self.bin}")
        return f"{': '.join(where)}: {self.message}" if where else self.message

    def located(self, *, file=None, contig=None, bin=None) -> "FlashsegError":
        """Fill in location parts that the raiser did not know."""
        if self.file is None and file is not None:
            self.file = file
        if self.contig is None and contig is not None:
            self.contig = contig
        if self.bin is None and bin is not None:
            self.bin = bin
        self.args = (self.format(),)
        return self


def _one_line(text: str) -> str:
    """A file or contig name as given, or escaped (repr) when it holds a tab, newline or other
    unprintable character: the command line prints every error as one line."""
    return text if text.isprintable() else repr(text)


class DataError(FlashsegError):
    """Input data or model content is invalid."""


class NoValidSegmentation(DataError):
    """Every segmentation of the contig has probability zero."""


class DeviceError(FlashsegError):
    """The requested compute device is not usable."""


class UsageError(FlashsegError):
    """The options cannot work together (an output that would overwrite an input, say): exit 2."""

    exit_code = 2
