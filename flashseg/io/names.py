"""Contig names that every output can hold (docs/formats.md, "Emission tracks": contig names).

BED, bedGraph and the stats table are tab-separated, one record a line: a
contig name with a tab, a newline or any other whitespace or control
character would shift columns or split records. Names are checked where
they are read (tracks, observations, FASTA, BAM header, ChromHMM files) and
where they are written (the HDF5 writers).
"""
from __future__ import annotations

import unicodedata

from ..errors import DataError


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a contig name (None when it can)."""
    if not name:
        return "an empty contig name"
    for i, char in enumerate(name):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cs"):
            what = "whitespace" if char.isspace() else "a control character"
            return (f"contig name {name!r} contains {what} ({char!r} at position {i + 1}): tab-separated outputs "
                    "(BED, bedGraph) cannot hold it")
    return None


def check_contig_names(names, *, file: str | None) -> None:
    """DataError naming the file and the first bad name (shown escaped, so the message stays one line)."""
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            raise DataError(problem, file=file)
