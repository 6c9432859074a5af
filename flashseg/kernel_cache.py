"""Where numba keeps flashseg's compiled kernels, decided before numba is imported.

The kernels are ``@njit(cache=True)``: numba writes them beside the source
(``flashseg/core/__pycache__``, ``flashseg/io/__pycache__``), else under
``$XDG_CACHE_HOME/numba`` (``~/.cache/numba``), or in ``NUMBA_CACHE_DIR``
when that is set. When none of these can be written (a read-only install
run by a user whose home is not writable, e.g. ``docker run --user 12345``),
numba refuses to compile at all (``cannot cache function ...: no locator
available``). :func:`ensure_writable_cache` sees that coming and points
``NUMBA_CACHE_DIR`` at a fresh temporary directory, seeded with the kernels
the install already holds (so they are loaded, not compiled again), and
leaves one warning in :data:`NOTICE`. It only looks at directories
(``os.access``): it imports nothing and writes nothing unless it must.
"""
from __future__ import annotations

import os
import sys

#: The warning to show once (the command line logs it after setting up logging), or None.
NOTICE: str | None = None

# The subpackages whose modules hold cache=True kernels.
_KERNEL_PACKAGES = ("core", "io")


def usable_dir(path: str) -> bool:
    """Whether a directory is, or could be created, at ``path`` and written to."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def user_cache_dir(environ) -> str:
    """numba's user-wide cache directory (its appdirs rule on Linux and macOS alike here)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "numba")


def needs_fallback(package_dirs, environ, usable=usable_dir) -> bool:
    """True when numba would find no writable cache directory for some kernel module: not
    NUMBA_CACHE_DIR, not the user-wide directory, not that package's ``__pycache__``."""
    given = environ.get("NUMBA_CACHE_DIR")
    if given and usable(given):
        return False
    if usable(user_cache_dir(environ)):
        return False
    return not all(usable(os.path.join(d, "__pycache__")) for d in package_dirs)


def _seed(target: str, package_dirs) -> None:
    """Copy the install's cached kernels to where numba looks for them under NUMBA_CACHE_DIR
    (``<package>_<sha1 of its directory>``, numba's own naming); best effort."""
    import hashlib
    import shutil

    for d in package_dirs:
        source = os.path.join(d, "__pycache__")
        try:
            names = [n for n in os.listdir(source) if n.endswith((".nbi", ".nbc"))]
        except OSError:
            continue
        d = os.path.abspath(d)
        dest = os.path.join(target, f"{os.path.basename(d)}_{hashlib.sha1(d.encode()).hexdigest()}")
        try:
            os.makedirs(dest, exist_ok=True)
            for name in names:
                shutil.copy2(os.path.join(source, name), os.path.join(dest, name))
        except OSError:
            continue


def ensure_writable_cache(package_dirs=None, environ=None, usable=usable_dir) -> str | None:
    """If numba could not cache flashseg's kernels anywhere, set NUMBA_CACHE_DIR to a fresh
    temporary directory (removed at exit) and return it; set :data:`NOTICE` either way it fails."""
    global NOTICE
    environ = os.environ if environ is None else environ
    if package_dirs is None:
        here = os.path.dirname(os.path.abspath(__file__))
        package_dirs = [os.path.join(here, name) for name in _KERNEL_PACKAGES]
    if not needs_fallback(package_dirs, environ, usable):
        return None
    import atexit
    import shutil
    import tempfile

    given = environ.get("NUMBA_CACHE_DIR")
    where = (f"beside flashseg ({os.path.dirname(os.path.abspath(package_dirs[0]))})"
             + (f", in NUMBA_CACHE_DIR ({given})" if given else "") + f" or in {user_cache_dir(environ)}")
    try:
        temp = tempfile.mkdtemp(prefix="flashseg-numba-")
    except OSError as exc:
        NOTICE = (f"numba cannot write its kernel cache {where}, nor a temporary directory ({exc.strerror}): "
                  "set NUMBA_CACHE_DIR to a writable directory")
        return None
    atexit.register(shutil.rmtree, temp, True)
    _seed(temp, package_dirs)
    environ["NUMBA_CACHE_DIR"] = temp
    config = sys.modules.get("numba.core.config") if environ is os.environ else None
    if config is not None:      # numba already imported: it read the variable already
        config.CACHE_DIR = temp
    NOTICE = (f"numba cannot write its kernel cache {where}: using the temporary directory {temp} for this run "
              "(kernels the install does not hold are compiled again every run; set NUMBA_CACHE_DIR to a "
              "writable directory to keep them)")
    return temp
