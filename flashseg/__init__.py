"""flashseg: exact streaming semi-Markov CRF segmentation of genomes.

The library API lives in :mod:`flashseg.core` (inference, no file I/O) and
:mod:`flashseg.io` (file formats). Importing flashseg is cheap: numba, torch
and triton are imported only when a kernel is first needed.
"""
import logging

from ._version import __version__

# Silent when imported; the command line attaches a stderr handler.
logging.getLogger("flashseg").addHandler(logging.NullHandler())

# Before anything imports numba: a temporary kernel cache when no cache directory is writable.
from . import kernel_cache as _kernel_cache  # noqa: E402

_kernel_cache.ensure_writable_cache()
if _kernel_cache.NOTICE:
    logging.getLogger("flashseg").warning(_kernel_cache.NOTICE)

__all__ = ["__version__"]
