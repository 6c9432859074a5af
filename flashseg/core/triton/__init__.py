"""Triton kernels of the GPU backend, one module per kernel family.

Each module has the ``@triton.jit`` kernel (``*_kernel``), a launcher that
takes torch tensors (batched: one program per sequence of the batch) and a
plain torch reference of the same chunk recursion, used by the tests (the
sampler's reference is the host's compiled walk, run on the same tensors).

Importing this package imports torch and triton: only ``flashseg.core.gpu``
does, and only once a GPU (or the Triton interpreter) is in use.
"""
from .common import FLOOR, LOG_FLOOR, RESCALE_HI, RESCALE_LO, LN2, block_sizes
from .linear import linear_forward, linear_forward_reference
from .logspace import logspace_forward, logspace_forward_reference
from .posterior import posterior_combine, posterior_combine_reference
from .sample import sample_walk, sample_walk_reference
from .viterbi import viterbi_forward, viterbi_forward_reference

__all__ = ["FLOOR", "LOG_FLOOR", "RESCALE_HI", "RESCALE_LO", "LN2", "block_sizes",
           "linear_forward", "linear_forward_reference",
           "logspace_forward", "logspace_forward_reference",
           "posterior_combine", "posterior_combine_reference",
           "sample_walk", "sample_walk_reference",
           "viterbi_forward", "viterbi_forward_reference"]
