"""Writing output files without ever destroying anything (docs/formats.md,
"Publishing outputs").

* **Nothing the user owns is overwritten by mistake.** Before any work, a
  command names its inputs and outputs (:func:`claim`): an output, or a file
  written beside one (a ``.tbi``), that is the same file as an input or as
  another output (same resolved path, or same device and inode) is a
  :class:`~flashseg.errors.UsageError` (exit 2). Inputs bring their own
  companions (a FASTA's ``.fai``, a BAM's index), which count as inputs.
* **A failed run publishes nothing.** A regular-file output is written under
  a temporary name beside its (symlink-resolved) target. While a
  :func:`publishing` block runs, finished temporaries are only staged; they
  are renamed onto their targets together when the block ends without an
  error, and removed when it raises (also on SIGINT and SIGTERM).
* **Targets that are not regular files are written directly**: a character
  device (``/dev/null``), a FIFO, a socket. Standard output (``-``) streams
  too. Neither is all-or-nothing, and a ``.gz`` written to one gets no index.
* **Temporaries name their host and process**
  (``.<name>~<host>~<pid>~<random>.tmp``): a killed run (SIGKILL) leaves
  them behind, and a later run writing the same target removes those of
  its own host whose process is gone (several hosts may share a cluster
  filesystem, so other hosts' temporaries are left alone).
* **Write errors name the output** (a full disk is one line, not a
  traceback), and HDF5 files are closed so that a failed write cannot crash
  the process on its way out (:func:`abandon_hdf5`).

A target ending in ``.gz`` is written as BGZF and gets a tabix index
(``.gz.tbi``) built with pysam, so workflows need no bgzip or tabix.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import io
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import threading

from ..errors import DataError, FlashsegError, UsageError


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


# -- targets -------------------------------------------------------------------

def is_stdout(path) -> bool:
    return path is None or str(path) == "-"


def resolved(path: str) -> str:
    """The file a path names, symlinks resolved (a new file: where it will be)."""
    return os.path.realpath(os.path.abspath(path))


def is_special(path: str) -> bool:
    """True when ``path`` exists and is not a regular file or directory (a
    device, FIFO or socket): such targets are written directly."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname() or "localhost")


def temp_path_for(target: str, suffix: str = "", extension: str = "") -> str:
    """A unique, registered temporary name beside the (resolved) target.

    ``extension`` follows ``.tmp``, for writers that tell the format by the
    name (pybigtools: ``.bb``, ``.bw``)."""
    directory, base = os.path.split(resolved(target))
    name = f".{base}~{_host()}~{os.getpid()}~{secrets.token_hex(4)}{suffix}.tmp{extension}"
    path = os.path.join(directory, name)
    _register(path)
    return path


_TEMP_TAIL = re.compile(r"^(?P<host>[^~]+)~(?P<pid>\d+)~[0-9a-f]+.*\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(target: str) -> int:
    """Remove temporaries of ``target`` (and of files written beside it) that a
    killed run of this host left behind: their process is gone. Returns how
    many were removed."""
    directory, base = os.path.split(resolved(target))
    host = _host()
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    prefix = f".{base}"
    for name in names:
        stem = name
        for tail in (".tbi", ".bb", ".bw"):  # tabix's index of a temporary; a bigBed/bigWig named for pybigtools
            if name.endswith(".tmp" + tail):
                stem = name[:-len(tail)]
        if not stem.startswith(prefix) or not stem.endswith(".tmp"):
            continue
        rest = stem[len(prefix):]
        # ".<base>~..." or a companion's ".<base>.tbi~..." / ".<base>.fai~..."
        tail = rest.split("~", 1)
        if len(tail) != 2 or (tail[0] and not re.fullmatch(r"\.[A-Za-z0-9]+", tail[0])):
            continue
        match = _TEMP_TAIL.match(tail[1])
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed


def check_writable_dir(target: str) -> None:
    """Fail early, before any work, when the target's directory is unusable."""
    directory = os.path.dirname(resolved(target))
    if not os.path.isdir(directory):
        raise DataError("output directory does not exist", file=directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError("output directory is not writable", file=directory)
    if os.path.isdir(target):
        raise DataError("output path is a directory", file=target)


# -- inputs and outputs of one run ---------------------------------------------

def _identity(path: str):
    """What makes two paths the same file: device and inode where it exists,
    else the resolved path."""
    real = resolved(path)
    try:
        st = os.stat(real)
    except OSError:
        return ("path", real)
    return ("inode", st.st_dev, st.st_ino)


def index_companions(path: str, kind: str) -> list[str]:
    """Files read or written beside an input of ``kind``: "fasta" (``.fai``,
    ``.gzi``), "alignments" (BAM/CRAM indexes), anything else none."""
    if kind == "fasta":
        return [path + ".fai", path + ".gzi"]
    if kind == "alignments":
        stem = re.sub(r"\.(bam|cram)$", "", path, flags=re.IGNORECASE)
        return [path + ".bai", path + ".csi", path + ".crai", stem + ".bai", stem + ".crai"]
    return []


def text_companions(path) -> list[str]:
    """Files a text output writes or removes beside itself (a ``.gz`` target's ``.tbi``)."""
    return [str(path) + ".tbi"] if str(path).endswith(".gz") else []


def claim(outputs, inputs=()) -> None:
    """Refuse, before any work, a run whose outputs would destroy its inputs
    or each other.

    ``outputs`` and ``inputs``: (option, path, companions) triples, path None
    or "-" for none. Inputs and outputs are compared by identity, companions
    included; devices (``/dev/null``) are exempt, and may take several
    outputs. Also removes temporaries that killed runs left beside the
    outputs (:func:`remove_orphans`).
    """
    seen = {}

    def note(option, path, role, of=None):
        if path is None or is_stdout(path):
            return
        try:
            mode = os.stat(resolved(path)).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISCHR(mode):
            return
        key = _identity(path)
        what = f"{option} {path}" if of is None else f"{path} (beside {option} {of})"
        if key in seen:
            other_role, other = seen[key]
            if role == "input" and other_role == "input":
                return
            if other_role == "input" or role == "input":
                out, inp = (what, other) if role == "output" else (other, what)
                raise UsageError(f"{out} would overwrite the input {inp}")
            raise UsageError(f"{other} and {what} are the same file")
        seen[key] = (role, what)

    for option, path, companions in inputs:
        note(option, path, "input")
        for extra in companions:
            note(option, extra, "input", path)
    for option, path, companions in outputs:
        note(option, path, "output")
        for extra in companions:
            note(option, extra, "output", path)
    for option, path, companions in outputs:
        if path is not None and not is_stdout(path) and not is_special(resolved(path)):
            remove_orphans(path)


# -- publishing ------------------------------------------------------------------

class _Publication:
    """Temporaries finished during one run, renamed onto their targets together."""

    def __init__(self):
        self.staged: list[tuple[str, str]] = []
        self.lock = threading.Lock()


_publication: _Publication | None = None
_publication_lock = threading.Lock()


@contextlib.contextmanager
def publishing():
    """Every regular-file output committed inside the block is published when the
    block ends without an error, all together; none is when it raises."""
    global _publication
    with _publication_lock:
        outer = _publication
        if outer is not None:          # nested: the outermost block publishes
            yield
            return
        _publication = current = _Publication()
    try:
        yield
    except BaseException:
        _end_publication()
        for temp, _ in current.staged:
            discard(temp)
        raise
    _end_publication()
    _publish(current.staged)


def _end_publication() -> None:
    global _publication
    with _publication_lock:
        _publication = None


def _publish(staged) -> None:
    if _stop_exit_code is not None:
        for temp, _ in staged:
            discard(temp)
        raise SystemExit(_stop_exit_code)
    for i, (temp, target) in enumerate(staged):
        try:
            os.replace(temp, target)
        except OSError as exc:
            for rest, _ in staged[i:]:
                discard(rest)
            raise DataError(f"cannot write output: {exc.strerror}", file=target) from None
        _unregister(temp)


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
    """A finished temporary for ``target``: staged while a :func:`publishing`
    block runs, else renamed onto the target at once (unless the process must stop)."""
    if _stop_exit_code is not None:
        discard(temp)
        raise SystemExit(_stop_exit_code)
    target = resolved(target)
    publication = _publication
    if publication is not None:
        with publication.lock:
            publication.staged.append((temp, target))
        return
    _publish([(temp, target)])


@contextlib.contextmanager
def atomic_path(target: str, suffix: str = ""):
    """Yield a temporary path beside ``target``; commit it onto ``target`` on success.

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


# -- write errors ------------------------------------------------------------------

_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def write_text(target: str, text: str) -> None:
    """A small text output (a model YAML) published atomically; errors name it."""
    with atomic_path(target) as temp:
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise write_error(exc, target) from None


def write_error(exc: BaseException, target: str) -> DataError:
    """One line naming ``target`` for an error raised while writing it."""
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = os.strerror(exc.errno)
    else:
        text = str(exc)
        match = re.search(r"error message = '([^']*)'", text)
        reason = match.group(1) if match else (text.splitlines()[0] if text else type(exc).__name__)
    return DataError(f"cannot write output: {reason}", file=target)


class _Named:
    """A writable stream whose write errors name its target (a full disk is one line)."""

    def __init__(self, stream, target: str):
        self._stream = stream
        self._target = target

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error(exc, self._target) from None

    def write(self, data):
        return self._call(self._stream.write, data)

    def writelines(self, lines):
        return self._call(self._stream.writelines, lines)

    def flush(self):
        return self._call(self._stream.flush)

    @property
    def buffer(self):
        raw = getattr(self._stream, "buffer", None)
        return None if raw is None else _Named(raw, self._target)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout():
    """sys.stdout, or a one-line error when the process has none (``>&-``)."""
    stream = sys.stdout
    closed = stream is None
    if not closed:
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            fd = None      # an in-memory stream (tests, embedding): writable as it is
        if fd is not None:
            try:
                os.fstat(fd)
            except OSError:
                closed = True
    if closed:
        raise DataError("standard output is not open: give -o FILE or leave stdout open")
    return stream


class _TextTarget:
    """A text output: stdout, a plain file, or BGZF + tabix for ``.gz`` names."""

    def __init__(self, path, tabix_preset: str | None = "bed"):
        self.path = "-" if is_stdout(path) else str(path)
        self.tabix_preset = tabix_preset
        self.stream = None
        self.temp = None
        self.index_temp = None
        self.gz = self.path.endswith(".gz")
        self.direct = self.path != "-" and is_special(resolved(self.path))

    def open(self):
        if self.path == "-":
            self.stream = _stdout()
            return self.stream
        if self.direct:
            # A device, FIFO or socket: written in place (no temporary, no index).
            where = resolved(self.path)
        else:
            check_writable_dir(self.path)
            self.temp = temp_path_for(self.path)
            where = self.temp
        try:
            if self.gz:
                import pysam  # only .gz outputs need pysam

                raw = pysam.BGZFile(where, "wb")
                self.stream = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            else:
                self.stream = open(where, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            if self.temp is not None:
                discard(self.temp)
            raise write_error(exc, self.path) from None
        return _Named(self.stream, self.path)

    def finish(self):
        if self.path == "-":
            self.stream.flush()
            return
        try:
            self.stream.close()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error(exc, self.path) from None
        if self.direct:
            return
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
        if self.path == "-" or self.stream is None:
            return
        with contextlib.suppress(Exception):
            self.stream.close()
        if self.temp is not None:
            discard(self.temp)
        if self.index_temp:
            discard(self.index_temp)


@contextlib.contextmanager
def open_text_output(path, tabix_preset: str | None = "bed"):
    """A text stream for ``path`` (``-`` = stdout), committed on success.

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
    except BaseException:
        target.abort()
        raise


# HDF5 files whose writing failed, kept open until the process ends (see abandon_hdf5).
_abandoned: list = []


def abandon_hdf5(handle, temp: str) -> None:
    """Give up an HDF5 file whose writing failed (a full disk): its temporary is
    removed, and the h5py handle is never closed or freed.

    After a failed write, HDF5 retries the flush on close and in h5py's
    destructors, fails again, prints a traceback from each destructor and can
    crash the process (exit 139). So the handle is kept alive here, and the
    command line leaves with ``os._exit`` (:func:`must_exit_hard`), which runs
    no destructors.
    """
    with contextlib.suppress(OSError):
        os.truncate(temp, 0)
    discard(temp)
    _abandoned.append(handle)


def must_exit_hard() -> bool:
    """True when an HDF5 file was abandoned: the process must end without destructors."""
    return bool(_abandoned)


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


__all__ = ["atomic_path", "open_text_output", "temp_path_for", "discard", "commit", "publishing", "claim",
           "check_writable_dir", "remove_temporaries", "is_stdout", "copy_file_into", "StdoutClosed",
           "FlashsegError", "index_companions", "text_companions", "write_error", "abandon_hdf5",
           "must_exit_hard"]
