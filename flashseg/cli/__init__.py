"""The ``flashseg`` command line: one module per subcommand, loaded lazily.

Commands stay thin: they parse options, call the library, and map
``FlashsegError`` to a one-line ``flashseg: error: ...`` with exit code 1.
Usage errors (click's included) are one ``flashseg: error: ...`` line too, exit code 2.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import sys

import click

from .._version import __version__

# name -> (module, attribute). Modules are imported only when the command runs
# (or when --help lists it), so `flashseg --help` never pulls in numba or torch.
COMMANDS = {
    "decode": ("flashseg.cli.decode", "decode"),
    "tracks": ("flashseg.cli.tracks", "tracks"),
    "fit": ("flashseg.cli.fit", "fit"),
    "simulate": ("flashseg.cli.simulate", "simulate"),
    "gather": ("flashseg.cli.gather", "gather"),
    "validate": ("flashseg.cli.validate", "validate"),
    "info": ("flashseg.cli.info", "info"),
    "report": ("flashseg.cli.report", "report"),
    "demo": ("flashseg.cli.demo", "demo"),
}

log = logging.getLogger("flashseg")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name]
        return _with_verbosity(getattr(importlib.import_module(module), attr))


def _with_verbosity(command):
    """-v and -q after the subcommand too (``flashseg decode ... -q | ...``):
    they add to those given before it."""
    if getattr(command, "_takes_verbosity", False):
        return command
    for key, flags, text in (("verbose", ("-v", "--verbose"), "More messages on stderr (repeatable)."),
                             ("quiet", ("-q", "--quiet"), "Fewer messages on stderr (repeatable).")):
        command.params.append(click.Option(flags, count=True, expose_value=False, is_eager=True,
                                           callback=_more(key), help=text))
    for sub in getattr(command, "commands", {}).values():
        _with_verbosity(sub)
    command._takes_verbosity = True
    return command


def _more(key):
    def callback(ctx, param, value):
        if value:
            counts = ctx.find_root().ensure_object(dict).setdefault("verbosity", {"verbose": 0, "quiet": 0})
            counts[key] += value
            configure_logging(counts["verbose"], counts["quiet"])
    return callback


def configure_logging(verbose: int, quiet: int) -> None:
    level = logging.WARNING + 10 * (quiet - verbose)
    level = max(logging.DEBUG, min(logging.CRITICAL, level))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("flashseg: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="flashseg")
@click.option("-v", "--verbose", count=True, help="More messages on stderr (repeatable).")
@click.option("-q", "--quiet", count=True, help="Fewer messages on stderr (repeatable).")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.pass_context
def cli(ctx, verbose, quiet, debug):
    """Segment genomes with an exact semi-Markov CRF.

    Reads per-bin emission scores (HDF5 tracks) and/or read coverage (BAM),
    writes BED segment calls with the posterior of every segment and of its
    boundaries.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["verbosity"] = {"verbose": verbose, "quiet": quiet}
    configure_logging(verbose, quiet)
    from ..kernel_cache import NOTICE

    if NOTICE:          # no writable cache for numba's kernels (see flashseg/kernel_cache.py)
        log.warning("%s", NOTICE)


def _terminate(signum, frame):
    # Raised inside the main thread so `finally` blocks remove temporary files.
    # Inside a C library's Python callback (numba compiling) the exception is
    # swallowed: the stop request makes every later commit raise it again.
    from ..io.output import stop_requested

    stop_requested(128 + signum)
    raise SystemExit(128 + signum)


def _unraisable(info) -> None:
    """Keep the SystemExit that a C callback swallowed off stderr (the stop goes on)."""
    if isinstance(info.exc_value, SystemExit):
        return
    sys.__unraisablehook__(info)


def main(argv=None) -> None:
    """Entry point: runs the click group and turns errors into exit codes."""
    from ..io.output import must_exit_hard

    try:
        _main(argv)
    except SystemExit as exc:
        if must_exit_hard():
            # An HDF5 file failed to write: leave without the destructors that
            # would retry (and crash on) its flush. Streams are flushed first.
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)
        raise


def _main(argv=None) -> None:
    from ..errors import FlashsegError
    from ..io.output import StdoutClosed, stop_exit_code  # stdlib-only module: keeps --help fast

    from ..resources import keep_freed_chunks

    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _unraisable
    keep_freed_chunks()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="flashseg", standalone_mode=False)
        if stop_exit_code() is not None:   # a stop that was swallowed, and nothing left to commit
            sys.exit(stop_exit_code())
    except click.exceptions.Abort:
        click.echo("flashseg: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:   # `flashseg` alone: the help, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # One line like every other error (not click's Usage/Try/Error block),
        # then where to look for the options.
        message = " ".join(exc.format_message().split())
        click.echo(f"flashseg: error: {message}", err=True)
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            click.echo(f"(see '{ctx.command_path} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FlashsegError as exc:
        if debug:
            raise
        click.echo(f"flashseg: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (StdoutClosed, BrokenPipeError):
        # A closed stdout (e.g. `| head`) ends quietly; keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("flashseg: interrupted", err=True)
        sys.exit(130)
    except MemoryError:
        if debug:
            raise
        click.echo("flashseg: error: out of memory (try a smaller --chunk-size or fewer --threads)", err=True)
        sys.exit(1)
    except OSError as exc:
        if debug:
            raise
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(f"flashseg: error: {name}{exc.strerror or exc}", err=True)
        sys.exit(1)
