"""ChromHMM's files: binarized marks and learned models (``flashseg tracks chromhmm``).

Read from ChromHMM's documented formats (no ChromHMM code is used):

**Binarized files** ``<cell>_<chrom>_binary.txt[.gz]``: a line
``cell<TAB>chrom``, a line of mark names (tab-separated), then one line per
bin (ChromHMM's binarizer writes ``floor(length / bin size)`` of them) of one
value per mark: 1 present, 0 absent, 2 missing. :func:`find_binarized`
reads the two header lines of every such file in a directory and groups the
files by cell; :func:`read_binarized` reads one file's bins as a numpy
array with its columns put in a given mark order, **matched by name**.

**Model files** ``model_N.txt``: a first line whose first two fields are the
numbers of states and of marks (then the state ordering, the log-likelihood
and the iteration count, unused here), then tab-separated lines::

    probinit         state  p                        (states numbered from 1)
    transitionprobs  from   to    p
    emissionprobs    state  mark_index  mark_name  value  p    (value 0 or 1; marks from 0)

:func:`read_model` returns them as arrays; :func:`model_yaml` writes the
model as a flashseg plain HMM (``max_duration: 1``, ``tail: none``,
self-transitions; labels E1..EN in ChromHMM's state order) with a
``bernoulli`` emissions section whose features are the marks by name.
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .binned_hdf5 import natural_key
from .names import name_problem

log = logging.getLogger(__name__)

SUFFIXES = ("_binary.txt", "_binary.txt.gz")
MISSING = 2
#: bytes parsed at once: bounded memory for the text, whatever the file's size
BLOCK_BYTES = 1 << 22
#: itemRgb of E1, E2, ... (ChromHMM's model file has no colours); repeats past 20 states
PALETTE = ("255,0,0", "255,69,0", "50,205,50", "0,128,0", "0,100,0", "194,225,5", "255,255,0",
           "102,205,170", "138,145,208", "205,92,92", "233,150,122", "189,183,107", "128,128,128",
           "192,192,192", "255,255,255", "0,0,255", "148,0,211", "255,105,180", "0,206,209", "139,69,19")


@contextlib.contextmanager
def _open_binary(path: str):
    """The file's bytes, gunzipped when it starts with gzip's magic (whatever its name)."""
    with open(path, "rb") as handle:
        if handle.peek(2)[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                yield unzipped
        else:
            yield handle


def _text(raw: bytes, path: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DataError(f"line {lineno}: not UTF-8 text", file=path) from None


# -----------------------------------------------------------------------------
# Binarized files


@dataclass
class BinarizedFile:
    """One binarized file's header: its cell, chromosome and marks (in file order)."""

    path: str
    cell: str
    chrom: str
    marks: list = field(default_factory=list)


def read_header(path: str) -> BinarizedFile:
    """The two header lines of a binarized file (DataError naming the file otherwise)."""
    path = os.fspath(path)
    try:
        with _open_binary(path) as handle:
            first = handle.readline()
            second = handle.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=path) from None
    first, second = _text(first, path, 1), _text(second, path, 2)
    parts = first.split("\t")
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise DataError(f"line 1: expected cell<TAB>chromosome (ChromHMM's binarized format), got {first!r}",
                        file=path)
    cell, chrom = parts[0].strip(), parts[1].strip()
    if "/" in cell or cell.startswith("."):
        raise DataError(f"line 1: cell {cell!r} cannot name an output file", file=path)
    if "/" in chrom:
        raise DataError(f"line 1: chromosome {chrom!r} may not contain '/'", file=path)
    problem = name_problem(chrom)
    if problem is not None:
        raise DataError(f"line 1: {problem}", file=path)
    marks = second.split("\t") if second else []
    if not marks or any(not m.strip() for m in marks):
        raise DataError("line 2: expected the mark names, tab-separated", file=path)
    marks = [m.strip() for m in marks]
    dup = next((m for i, m in enumerate(marks) if m in marks[:i]), None)
    if dup is not None:
        raise DataError(f"line 2: mark {dup} is listed twice", file=path)
    return BinarizedFile(path, cell, chrom, marks)


def find_binarized(directory: str) -> dict[str, list[BinarizedFile]]:
    """{cell: its files} for every ``*_binary.txt[.gz]`` in ``directory``.

    Cells are sorted by name; a cell's files by chromosome (natural order).
    Every file of a cell must hold the same SET of marks (an error naming
    both files otherwise); two files of one cell and chromosome are an error.
    """
    directory = os.fspath(directory)
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise DataError(f"cannot list directory: {exc.strerror}", file=directory) from None
    paths = [os.path.join(directory, n) for n in names
             if n.endswith(SUFFIXES) and os.path.isfile(os.path.join(directory, n))]
    if not paths:
        raise DataError("no ChromHMM binarized files (<cell>_<chrom>_binary.txt or .txt.gz) here", file=directory)
    cells: dict[str, list[BinarizedFile]] = {}
    for path in paths:
        bf = read_header(path)
        base = os.path.basename(path)
        stem = base[: -len(SUFFIXES[1])] if base.endswith(SUFFIXES[1]) else base[: -len(SUFFIXES[0])]
        if stem != f"{bf.cell}_{bf.chrom}":
            log.warning("%s: its header says cell %s, chromosome %s (the header is used)", path, bf.cell, bf.chrom)
        cells.setdefault(bf.cell, []).append(bf)
    out = {}
    for cell in sorted(cells):
        files = cells[cell]
        first = files[0]
        seen: dict[str, BinarizedFile] = {}
        for bf in files:
            if bf.chrom in seen:
                raise DataError(f"cell {cell}, chromosome {bf.chrom} is also in {seen[bf.chrom].path}",
                                file=bf.path)
            seen[bf.chrom] = bf
            if set(bf.marks) != set(first.marks):
                missing = [m for m in first.marks if m not in bf.marks]
                extra = [m for m in bf.marks if m not in first.marks]
                what = "; ".join(part for part in (
                    f"lacks {', '.join(missing)}" if missing else "",
                    f"has {', '.join(extra)} in addition" if extra else "") if part)
                raise DataError(f"the marks of cell {cell} differ from those of {first.path}: this file {what}",
                                file=bf.path)
        out[cell] = sorted(files, key=lambda f: natural_key(f.chrom))
    return out


def _fast_block(block: bytes, width: int):
    """Rows of a well-formed block (M one-digit values, tabs, '\\n'), or None."""
    if len(block) % (2 * width):
        return None
    raw = np.frombuffer(block, dtype=np.uint8).reshape(-1, 2 * width)
    seps = raw[:, 1::2]
    if width > 1 and not (seps[:, :-1] == 9).all():
        return None
    if not (seps[:, -1] == 10).all():
        return None
    values = raw[:, 0::2] - np.uint8(48)      # below '0' wraps to > 2
    if (values > MISSING).any():
        return None
    return values


class _Rows:
    """Line-by-line parsing of a block the fast path refused (names the first bad line)."""

    def __init__(self, bf: BinarizedFile):
        self.bf = bf
        self.width = len(bf.marks)
        self.blank: int | None = None     # first blank line, an error if data follow it

    def check_no_blank(self) -> None:
        if self.blank is not None:
            raise DataError(f"line {self.blank}: empty line between data lines", file=self.bf.path)

    def parse(self, block: bytes, first_line: int) -> np.ndarray:
        lines = block.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        out = np.empty((len(lines), self.width), dtype=np.uint8)
        n = 0
        for i, line in enumerate(lines):
            fields = line.split()
            lineno = first_line + i
            if not fields:
                if self.blank is None:
                    self.blank = lineno
                continue
            self.check_no_blank()
            if len(fields) != self.width:
                raise DataError(f"line {lineno}: {len(fields)} values, expected {self.width} (one per mark: "
                                f"{', '.join(self.bf.marks)})", file=self.bf.path)
            for j, value in enumerate(fields):
                if value not in (b"0", b"1", b"2"):
                    shown = value.decode("utf-8", "replace")
                    raise DataError(f"line {lineno}: mark {self.bf.marks[j]} is {shown!r}, expected 0, 1 or "
                                    "2 (missing)", file=self.bf.path)
                out[n, j] = value[0] - 48
            n += 1
        return out[:n]


def read_binarized(bf: BinarizedFile, marks) -> np.ndarray:
    """A file's bins as (rows, len(marks)) uint8 (0/1, 2 = missing), columns in ``marks`` order.

    ``marks`` must be the file's marks in any order: columns are matched by
    name. The text is parsed a block at a time (a few MB), so only the
    compact array grows with the chromosome. A line with another number of
    values, or a value other than 0, 1 or 2, is a DataError naming the file
    and the line.
    """
    order = [bf.marks.index(m) for m in marks]
    width = len(bf.marks)
    parts = []
    rows = _Rows(bf)
    lineno = 3                       # of the block's first line
    try:
        with _open_binary(bf.path) as handle:
            handle.readline()
            handle.readline()
            rest = b""
            while True:
                chunk = handle.read(BLOCK_BYTES)
                data = rest + chunk
                if not chunk:
                    if not data:
                        break
                    block, rest = (data if data.endswith(b"\n") else data + b"\n"), b""
                else:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:
                        rest = data
                        continue
                    block, rest = data[:cut], data[cut:]
                values = _fast_block(block, width)
                if values is not None:
                    if len(values):
                        rows.check_no_blank()
                else:
                    values = rows.parse(block, lineno)
                lineno += block.count(b"\n")
                if len(values):
                    parts.append(values[:, order] if order != list(range(width)) else values)
                if not chunk:
                    break
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=bf.path) from None
    if not parts:
        return np.zeros((0, len(order)), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])


def read_chromsizes(path: str) -> dict[str, int]:
    """A chrom.sizes file (name<TAB>length per line; more columns ignored), in file order."""
    path = os.fspath(path)
    sizes: dict[str, int] = {}
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                try:
                    length = int(fields[1]) if len(fields) >= 2 else -1
                except ValueError:
                    length = -1
                if length < 0:
                    raise DataError(f"line {lineno}: expected a name and a length >= 0 in bp", file=path)
                if fields[0] in sizes:
                    raise DataError(f"line {lineno}: {fields[0]} is listed twice", file=path)
                sizes[fields[0]] = length
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=path) from None
    return sizes


# -----------------------------------------------------------------------------
# Model files


@dataclass
class ChromHMMModel:
    """A ChromHMM model: states in the file's order, marks in the model's order."""

    path: str
    marks: list
    initial: np.ndarray        # (N,)
    transitions: np.ndarray    # (N, N), row = from
    present: np.ndarray        # (N, M): P(mark present | state)

    @property
    def n_states(self) -> int:
        return len(self.initial)

    def p_for(self, marks) -> np.ndarray:
        """(N, len(marks)) P(present) for ``marks`` given by name, in that order."""
        missing = [m for m in marks if m not in self.marks]
        if missing:
            raise DataError(f"mark {missing[0]} is not in the model (its marks: {', '.join(self.marks)})",
                            file=self.path)
        return self.present[:, [self.marks.index(m) for m in marks]]


def _probability(text: str, path: str, lineno: int) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not 0.0 <= x <= 1.0:
        raise DataError(f"line {lineno}: {text!r} is not a probability", file=path)
    return x


def _index(text: str, lo: int, hi: int, what: str, path: str, lineno: int) -> int:
    try:
        i = int(text)
    except ValueError:
        i = lo - 1
    if not lo <= i <= hi:
        raise DataError(f"line {lineno}: {what} {text!r} is not in {lo}..{hi}", file=path)
    return i


def read_model(path: str) -> ChromHMMModel:
    """Parse ChromHMM's ``model_N.txt`` (see the module doc); every problem names file and line."""
    path = os.fspath(path)
    try:
        with _open_binary(path) as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=path) from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=path) from None
    head = lines[0].split() if lines else []
    try:
        n, m = int(head[0]), int(head[1])
    except (IndexError, ValueError):
        n = m = 0
    if n < 1 or m < 1:
        raise DataError("line 1: expected the numbers of states and of marks (ChromHMM's model_N.txt)", file=path)
    init = np.full(n, np.nan)
    trans = np.full((n, n), np.nan)
    p = {0: np.full((n, m), np.nan), 1: np.full((n, m), np.nan)}
    names: list = [None] * m
    for lineno, line in enumerate(lines[1:], 2):
        f = line.split("\t") if "\t" in line else line.split()
        f = [x.strip() for x in f]
        if not f or not f[0]:
            continue
        kind = f[0]
        sizes = {"probinit": 3, "transitionprobs": 4, "emissionprobs": 6}
        if kind not in sizes:
            raise DataError(f"line {lineno}: unknown entry {kind!r} (expected probinit, transitionprobs or "
                            "emissionprobs)", file=path)
        if len(f) != sizes[kind]:
            raise DataError(f"line {lineno}: {kind} takes {sizes[kind] - 1} values, got {len(f) - 1}", file=path)
        if kind == "probinit":
            i = _index(f[1], 1, n, "state", path, lineno) - 1
            target, key = init, (i,)
        elif kind == "transitionprobs":
            i = _index(f[1], 1, n, "state", path, lineno) - 1
            j = _index(f[2], 1, n, "state", path, lineno) - 1
            target, key = trans, (i, j)
        else:
            i = _index(f[1], 1, n, "state", path, lineno) - 1
            j = _index(f[2], 0, m - 1, "mark index", path, lineno)
            if names[j] is None:
                if f[3] in names:
                    raise DataError(f"line {lineno}: mark {f[3]} has two indexes", file=path)
                names[j] = f[3]
            elif names[j] != f[3]:
                raise DataError(f"line {lineno}: mark index {j} is {names[j]} elsewhere, not {f[3]}", file=path)
            value = _index(f[4], 0, 1, "value", path, lineno)
            target, key = p[value], (i, j)
        if not np.isnan(target[key]):
            raise DataError(f"line {lineno}: {kind} {' '.join(f[1:-1])} is given twice", file=path)
        target[key] = _probability(f[-1], path, lineno)
    if np.isnan(init).any():
        raise DataError(f"no probinit for state {int(np.flatnonzero(np.isnan(init))[0]) + 1}", file=path)
    if np.isnan(trans).any():
        i, j = np.argwhere(np.isnan(trans))[0]
        raise DataError(f"no transitionprobs from state {i + 1} to state {j + 1}", file=path)
    present = np.where(np.isnan(p[1]), 1.0 - p[0], p[1])
    if np.isnan(present).any():
        i, j = np.argwhere(np.isnan(present))[0]
        raise DataError(f"no emissionprobs for state {i + 1}, mark index {j}", file=path)
    if not init.sum() > 0:
        raise DataError("every probinit is 0", file=path)
    bad = np.flatnonzero(~(trans.sum(axis=1) > 0))
    if bad.size:
        raise DataError(f"every transitionprobs from state {bad[0] + 1} is 0", file=path)
    return ChromHMMModel(path, list(names), init, trans, present)


def _num(x: float) -> str:
    """Shortest round-trip text that YAML 1.1 (PyYAML) also reads as a float."""
    s = repr(float(x))
    if "e" in s:
        mantissa, exponent = s.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[0] not in "+-":
            exponent = "+" + exponent
        s = f"{mantissa}e{exponent}"
    return s


def _row(values) -> str:
    return "[" + ", ".join(_num(v) for v in values) + "]"


def model_yaml(model: ChromHMMModel, features, *, bin_size: int = 200, name: str | None = None,
               source: str | None = None) -> str:
    """The model as a flashseg plain HMM, emissions over ``features`` (mark names, matched by name)."""
    n = model.n_states
    labels = [f"E{i + 1}" for i in range(n)]
    width = max(len(s) for s in labels)
    p = model.p_for(features)
    source = source or os.path.basename(model.path)
    name = name or f"chromhmm-{n}"
    out = [
        f"# Imported by `flashseg tracks chromhmm` from ChromHMM's {source}: a plain HMM",
        "# (every segment one bin, runs from self-transitions), states E1..E" + str(n) + " in ChromHMM's order.",
        "# Colours are flashseg's default palette (ChromHMM's model file has none).",
        f"name: {name}",
        f"description: ChromHMM model {source} ({n} states, {len(features)} marks)",
        f"bin_size: {int(bin_size)}",
        "max_duration: 1",
        "tail: none",
        "labels:",
    ]
    for i, label in enumerate(labels):
        out.append(f"  - {{name: {label + ',':<{width + 1}} color: \"{PALETTE[i % len(PALETTE)]}\", "
                   "duration: {family: table, log: [0]}}")
    out.append("initial: {" + ", ".join(f"{s}: {_num(v)}" for s, v in zip(labels, model.initial)) + "}")
    out.append("final: free")
    out.append("# Row = from, ChromHMM's transitionprobs (the diagonal is the probability of staying).")
    out.append("transitions:")
    for i, s in enumerate(labels):
        out.append(f"  {s + ':':<{width + 1}} {{" + ", ".join(f"{t}: {_num(v)}" for t, v in
                                                             zip(labels, model.transitions[i])) + "}")
    out.append("# P(mark present | state), ChromHMM's emissionprobs matched to the marks by name.")
    out.append("emissions:")
    out.append("  family: bernoulli")
    out.append("  features: [" + ", ".join(_yaml_name(f) for f in features) + "]")
    out.append("  p:")
    for i, s in enumerate(labels):
        out.append(f"    {s + ':':<{width + 1}} {_row(p[i])}")
    return "\n".join(out) + "\n"


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none"}


def _yaml_name(name: str) -> str:
    """A mark name as a YAML scalar that reads back as the same string."""
    if _PLAIN.match(name) and name.lower() not in _YAML_WORDS:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
