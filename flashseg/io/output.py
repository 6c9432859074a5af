"""Writing output files safely.

Every file flashseg writes goes to a unique temporary name beside its target
and is renamed onto the target only when the run succeeds, so a failed,
interrupted (SIGINT) or killed (SIGTERM, e.g. by SLURM) run never leaves a
partial file behind. The temporary name holds the process id and a random
part, so concurrent runs writing into one directory never collide.

``-`` as a path means standard output. A target ending in ``.gz`` is written
as BGZF and gets a tabix index (``.gz.tbi``) built with pysam, so workflows
need no external bgzip or tabix.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import secrets
import sys
import threading

from ..errors import DataError, FlashsegError

class StdoutClosed(Exception):
    """The reader of stdout went away (``| head``): the run ends quietly with 0.

    Deliberately not an OSError: click turns an EPIPE OSError into exit 1.
    """


_live_temporaries: set[str] = set()
_live_lock = threading.Lock()


def _register(path: str) -> None:
    with _live_lock:
        _live_temporaries.add(path)


def _unregister(path: str) -> None:
    with _live_lock:
        _live_temporaries.discard(path)


def remove_temporaries() -> None:
    """Remove every temporary file still alive (called at exit and on signals)."""
    with _live_lock:
        paths = list(_live_temporaries)
        _live_temporaries.clear()
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


# A last line of defence: normal error paths remove their own temporaries,
# this catches the ones an unexpected exit skipped.
atexit.register(remove_temporaries)


def temp_path_for(target: str, suffix: str = "") -> str:
    """A unique, registered temporary name in the target's directory."""
    directory, base = os.path.split(os.path.abspath(target))
    name = f".{base}.{os.getpid()}.{secrets.token_hex(4)}{suffix}.tmp"
    path = os.path.join(directory, name)
    _register(path)
    return path


def check_writable_dir(target: str) -> None:
    """Fail early, before any work, when the target's directory is unusable."""
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise DataError("output directory does not exist", file=directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError("output directory is not writable", file=directory)
    if os.path.isdir(target):
        raise DataError("output path is a directory", file=target)


def discard(path: str) -> None:
    """Remove a temporary (if it exists) and forget it."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    _unregister(path)


# Set once the process is told to stop (SIGTERM): the exit code it must end with.
_stop_exit_code: int | None = None


def stop_requested(exit_code: int) -> None:
    """The process was told to stop: from now on no temporary is committed.

    The signal handler's SystemExit is lost when the signal lands while C code
    runs a Python callback (numba's compiler does, through llvmlite): Python
    prints it as "ignored" and carries on. Remembering the request here makes
    every later :func:`commit` raise it again, so a stopped run never
    publishes an output file.
    """
    global _stop_exit_code
    _stop_exit_code = exit_code


def stop_exit_code() -> int | None:
    """The exit code a requested stop must end the process with (None: no stop)."""
    return _stop_exit_code


def commit(temp: str, target: str) -> None:
    """Rename a finished temporary onto its target (unless the process must stop)."""
    if _stop_exit_code is not None:
        discard(temp)
        raise SystemExit(_stop_exit_code)
    try:
        os.replace(temp, target)
    except OSError as exc:
        discard(temp)
        raise DataError(f"cannot write output: {exc.strerror}", file=target) from None
    _unregister(temp)


@contextlib.contextmanager
def atomic_path(target: str, suffix: str = ""):
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception (including KeyboardInterrupt and the SystemExit raised
    for SIGTERM) the temporary is removed and the exception propagates.
    """
    check_writable_dir(target)
    temp = temp_path_for(target, suffix)
    try:
        yield temp
    except BaseException:
        discard(temp)
        raise
    commit(temp, target)


def is_stdout(path) -> bool:
    return path is None or str(path) == "-"


class _TextTarget:
    """A text output: stdout, a plain file, or BGZF + tabix for ``.gz`` names."""

    def __init__(self, path, tabix_preset: str | None = "bed"):
        self.path = "-" if is_stdout(path) else str(path)
        self.tabix_preset = tabix_preset
        self.stream = None
        self.temp = None
        self.index_temp = None
        self.gz = self.path.endswith(".gz")

    def open(self):
        if self.path == "-":
            self.stream = sys.stdout
            return self.stream
        check_writable_dir(self.path)
        # The temp name keeps the .gz ending out of the way; pysam's tabix
        # needs the BGZF file under a name of its own choosing only for the index.
        self.temp = temp_path_for(self.path)
        if self.gz:
            import pysam  # only .gz outputs need pysam

            raw = pysam.BGZFile(self.temp, "wb")
            self.stream = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        else:
            self.stream = open(self.temp, "w", encoding="utf-8", newline="\n")
        return self.stream

    def finish(self):
        if self.path == "-":
            self.stream.flush()
            return
        self.stream.close()
        if self.gz and self.tabix_preset:
            import pysam

            index_target = self.path + ".tbi"
            self.index_temp = temp_path_for(index_target)
            made = self.temp + ".tbi"
            _register(made)
            try:
                pysam.tabix_index(self.temp, preset=self.tabix_preset, force=True, keep_original=True)
            except (OSError, ValueError) as exc:
                discard(made)
                raise DataError(f"cannot build the tabix index: {exc}", file=self.path) from None
            os.replace(made, self.index_temp)
            _unregister(made)
            commit(self.temp, self.path)
            commit(self.index_temp, index_target)
        else:
            commit(self.temp, self.path)
            if self.gz:
                # An index left by an earlier run indexes the old file, not this one.
                stale = self.path + ".tbi"
                if os.path.isfile(stale):
                    with contextlib.suppress(OSError):
                        os.unlink(stale)
        self.temp = None

    def abort(self):
        if self.path == "-" or self.temp is None:
            return
        with contextlib.suppress(Exception):
            self.stream.close()
        discard(self.temp)
        if self.index_temp:
            discard(self.index_temp)


@contextlib.contextmanager
def open_text_output(path, tabix_preset: str | None = "bed"):
    """A text stream for ``path`` (``-`` = stdout), committed atomically on success.

    ``.gz`` targets are BGZF and, with a ``tabix_preset`` ("bed" covers BED and
    bedGraph: 0-based, ``#`` comment lines), get a ``.tbi`` index. Without a
    preset (files not in position order, such as posterior samples) they get
    none, and a ``.tbi`` left beside the target by an earlier run is removed.
    """
    target = _TextTarget(path, tabix_preset)
    stream = target.open()
    try:
        yield stream
    except BrokenPipeError:
        target.abort()
        if target.path == "-":
            raise StdoutClosed() from None
        raise
    except BaseException:
        target.abort()
        raise
    try:
        target.finish()
    except BrokenPipeError:
        if target.path == "-":
            raise StdoutClosed() from None
        raise


def copy_file_into(src_path: str, stream) -> None:
    """Append a UTF-8 file to an open text stream, in blocks (as bytes when the
    stream has a binary buffer, so nothing is decoded and encoded again)."""
    raw = getattr(stream, "buffer", None)
    if raw is not None:
        stream.flush()
        with open(src_path, "rb") as src:
            shutil.copyfileobj(src, raw, 1 << 22)
        return
    with open(src_path, "r", encoding="utf-8", newline="\n") as src:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            stream.write(block)


__all__ = ["atomic_path", "open_text_output", "temp_path_for", "discard", "commit",
           "check_writable_dir", "remove_temporaries", "is_stdout", "copy_file_into", "StdoutClosed",
           "FlashsegError"]
