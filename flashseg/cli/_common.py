"""Option types and helpers shared by the subcommands (no heavy imports here)."""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading
import time

import click

from .._version import __version__

# Upper bounds of the integer options (a larger value is a usage error, exit 2,
# never an overflow inside a compiled kernel; --help shows each range).
INT32_MAX = 2**31 - 1      # --chunk-size, --threads, --samples, --bin-size (= bins.MAX_BIN_SIZE), ...
INT64_MAX = 2**63 - 1      # --gap-min (bp)
MAPQ_MAX = 255             # MAPQ is one byte in BAM
BAM_CIGAR_MAX = 2**28 - 1  # simulate --read-length: a BAM CIGAR operation's length has 28 bits
MAX_LABELS = 4096          # fit --states
MAX_DURATION = 1_000_000   # fit --max-duration: io.model.MAX_DURATION, so the fitted model loads


class TrackSpec(click.ParamType):
    """``TRACKS.h5`` or ``TRACKS.h5:WEIGHT``; the file must exist (else a usage error, exit 2)."""

    name = "TRACKS.h5[:W]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from ..io.tracks import parse_track_spec

        path, weight = parse_track_spec(value)
        if not os.path.exists(path):
            self.fail(f"file {path!r} does not exist.", param, ctx)
        if os.path.isdir(path):
            self.fail(f"{path!r} is a directory.", param, ctx)
        if not os.access(path, os.R_OK):
            self.fail(f"file {path!r} is not readable.", param, ctx)
        if weight != weight or weight in (float("inf"), float("-inf")):
            self.fail(f"weight of {path!r} must be finite.", param, ctx)
        return (path, weight)


class FiniteFloat(click.FloatRange):
    """A float option: click's FloatRange, but NaN and infinities are usage errors (exit 2).

    click's own range check lets NaN through (every comparison with NaN is
    false), and an infinite depth, tolerance or signal makes no sense either.
    Every float option of every command uses this type.
    """

    def convert(self, value, param, ctx):
        import math

        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class RegionParam(click.ParamType):
    """``chr:start-end`` (1-based inclusive, as samtools) as a :class:`flashseg.plan.Region`;
    a malformed one is a usage error (exit 2)."""

    name = "chr:start-end"

    def convert(self, value, param, ctx):
        from ..plan import Region

        if value is None or not isinstance(value, str):
            return value
        try:
            return Region.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def wrote(message: str) -> None:
    """The line a command prints on stderr when its outputs are published, unless -q."""
    import logging

    if logging.getLogger("flashseg").isEnabledFor(logging.WARNING):
        click.echo(message, err=True)


def existing_file(**kwargs):
    return click.Path(exists=True, dir_okay=False, readable=True, **kwargs)


def output_path():
    """An output path; '-' is stdout. Directory problems are found when writing (exit 1)."""
    return click.Path(dir_okay=False, writable=False, allow_dash=True)


def read_options(command=None, *, depth: bool = True, blacklist_help: str | None = None):
    """Which reads count and how depth is set (docs/model.md, "Coverage"): shared by ``tracks coverage``,
    ``decode --bam`` and (``depth=False``: no --depth) ``tracks counts``.

    One definition, so the commands filter reads alike and a ``decode --bam``
    equals ``tracks coverage`` with the same options followed by ``decode -t``.
    Use as ``@read_options`` or ``@read_options(depth=False, blacklist_help=...)``.
    """
    if command is None:
        return lambda cmd: read_options(cmd, depth=depth, blacklist_help=blacklist_help)
    options = [
        click.option("--min-mapq", default=20, show_default=True, type=click.IntRange(0, MAPQ_MAX),
                     help="Drop reads with a lower mapping quality."),
        click.option("--fragments", is_flag=True,
                     help="Count properly paired fragments at their midpoints instead of reads at their starts."),
        click.option("--max-fragment", default=1000, show_default=True, type=click.IntRange(1, INT32_MAX),
                     help="With --fragments: drop fragments longer than this (bp)."),
        click.option("--blacklist", type=existing_file(),
                     help=blacklist_help or "BED of regions to ignore: bins overlapping them get log-likelihood 0 "
                                            "for every label and stay out of the depth estimate."),
    ]
    if depth:
        options.append(click.option(
            "--depth", type=FiniteFloat(min=0, min_open=True),
            help="Filtered reads per bin at copy ratio 1 [default: median over bins with any coverage]."))
    for option in reversed(options):  # decorators apply bottom-up: keep the listed order in --help
        command = option(command)
    return command


READ_OPTION_NAMES = ("min_mapq", "fragments", "max_fragment", "blacklist", "depth")


def default_threads() -> int:
    """--threads default: the CPUs this process may use (SLURM and taskset limits hold)."""
    from ..resources import usable_cpus

    return usable_cpus()


def command_line() -> str:
    argv = sys.argv[:]
    if argv:
        argv[0] = "flashseg"
    return " ".join(shlex.quote(a) for a in argv)


def provenance(model_spec=None, seed=None) -> list[str]:
    from ..io.bed import provenance_lines

    return provenance_lines(version=__version__,
                            model_path=getattr(model_spec, "path", None) if model_spec else None,
                            model_sha256=getattr(model_spec, "sha256", None) if model_spec else None,
                            seed=seed, command=command_line())


def load_model_spec(path):
    """Load a model YAML and log its warnings."""
    import logging

    from ..io.model import load_model

    spec = load_model(path)
    for warning in getattr(spec, "warnings", ()) or ():
        logging.getLogger(__name__).warning("%s: %s", path, warning)
    return spec


def resolve_device(device: str) -> str:
    """auto -> cuda only when a usable GPU is visible (no torch import otherwise); else cpu.

    ``cuda`` without one raises DeviceError naming what is missing.
    """
    from ..core.gpu import resolve_device as core_resolve

    return core_resolve(device)


class Progress:
    """One line per running contig on stderr, redrawn in place; silent when disabled.

    Progress is measured by the bins the core has asked emissions for (the
    forward pass reads each bin once; later passes re-read), shown as a bar
    of the contig's first pass, and each contig prints a final line when done.
    """

    def __init__(self, enabled: bool, total_contigs: int, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.total = total_contigs
        self.done = 0
        self._lock = threading.Lock()
        self._active: dict[str, list] = {}  # name -> [seen_max, n_bins, t0]
        self._stop = threading.Event()
        self._thread = None
        self._last_len = 0

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self._clear()
        return False

    def wrap(self, name: str, n_bins: int, emissions):
        if not self.enabled:
            return emissions
        state = [0, max(1, n_bins), time.monotonic()]
        with self._lock:
            self._active[name] = state

        def tracked(a, b):
            if b > state[0]:
                state[0] = b
            return emissions(a, b)

        return tracked

    def contig_done(self, name: str, n_bins: int, seconds: float) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._active.pop(name, None)
            self.done += 1
            self._clear()
            self.stream.write(f"flashseg: {name}: {n_bins} bins in {seconds:.1f} s "
                              f"[{self.done}/{self.total}]\n")
            self.stream.flush()

    def _clear(self):
        if self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self._last_len = 0

    def _loop(self):
        while not self._stop.wait(0.25):
            with self._lock:
                parts = []
                for name, (seen, n, _t0) in list(self._active.items())[:4]:
                    frac = min(1.0, seen / n)
                    filled = int(frac * 20)
                    parts.append(f"{name} [{'#' * filled}{'.' * (20 - filled)}] {frac * 100:3.0f}%")
                if not parts:
                    continue
                line = f"{self.done}/{self.total} done | " + " | ".join(parts)
                self._clear()
                self.stream.write(line)
                self._last_len = len(line)
                self.stream.flush()


def progress_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def compile_notice(after: float = 3.0):
    """A one-line note on stderr if the block runs longer than ``after`` seconds:
    the first run on a machine compiles the kernels, later runs load them."""
    import logging

    def note():
        logging.getLogger(__name__).warning(
            "compiling the inference kernels for this machine (first run only: later runs load them "
            "from the cache)")

    timer = threading.Timer(after, note)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def check_memory(model, chunk_size: int, threads: int, what: str = "this run", n_bins: int = 0) -> None:
    """Refuse, with the numbers, a run whose working memory (the core's estimate
    from K, C, --chunk-size and --threads) exceeds what this process may still
    allocate, before anything is allocated."""
    from ..core.api import working_memory
    from ..errors import DataError
    from ..resources import available_memory

    need = working_memory(model, chunk_size, threads, n_bins)
    have = available_memory()
    if have is not None and need > have:
        raise DataError(f"{what} needs about {need / 2**30:.3g} GiB of memory (max_duration {model.max_duration}, "
                        f"{model.n_labels} labels, --chunk-size {chunk_size}, --threads {threads}"
                        + (f", {n_bins} bins in the longest contig" if n_bins else "") + ") but "
                        f"{have / 2**30:.3g} GiB are available: change --chunk-size (rows per chunk against "
                        "checkpoints per contig), use fewer --threads or a smaller max_duration")
