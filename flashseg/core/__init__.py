"""Inference core: exact streaming semi-CRF inference (no file I/O, no CLI).

Public API (all functions take a :class:`SemiMarkovModel`, an emission
source and the number of bins T of one contig):

* an emission source is a callable ``emissions(a, b) -> ndarray (b - a, C)``
  of float64 log scores for bins ``[a, b)``; it is called for arbitrary
  ranges, right to left too, so it can stream from disk.
  :class:`ArrayEmissions` wraps an in-memory array.
* :func:`log_partition` -> logZ
* :func:`viterbi` -> :class:`ViterbiResult` (MAP score and segments)
* :func:`posterior` -> per-bin gamma, b, chg streamed to a consumer in
  ascending order, plus posteriors of given segments
* :func:`sample` -> exact posterior samples
* :func:`expected_counts` -> expected first labels, transitions, durations
  and tails (EM's statistics; with gamma, the gradient of log Z)
* :func:`decode_contig` / :func:`decode_contigs` -> everything the CLI needs
  (:class:`ContigResult`), contigs in parallel on worker threads.

Per-bin consumer protocol: an object with ``chunk(start, gamma, boundary,
change)`` receiving, for bins ``[start, start + n)`` in ascending order,
gamma (n, C), the boundary posterior b (n,) and the change posterior chg (n,)
(bin 0 of a contig gets b = chg = 1: the contig start is a boundary). The
arrays are reused for the next chunk: copy what you keep. If it
also has ``restart()``, that is called when a contig has to be recomputed
exactly after the fast path failed its certificate: drop what was received.
If its ``takes_samples`` is true, :func:`decode_contig` streams posterior
samples to its ``samples(first, batch)`` in batches (sample indices
``first ..``) instead of returning them.
"""
from .model import SemiMarkovModel
from .results import ContigResult, SegmentCalls, Segments

__all__ = [
    "SemiMarkovModel", "Segments", "SegmentCalls", "ContigResult",
    "ArrayEmissions", "log_partition", "viterbi", "posterior", "sample", "expected_counts",
    "decode_contig", "decode_contigs", "ViterbiResult", "PosteriorResult",
    "DEFAULT_CHUNK_SIZE",
]

_LAZY = {
    "ArrayEmissions": "flashseg.core.api",
    "log_partition": "flashseg.core.api",
    "viterbi": "flashseg.core.api",
    "posterior": "flashseg.core.api",
    "sample": "flashseg.core.api",
    "expected_counts": "flashseg.core.api",
    "decode_contig": "flashseg.core.api",
    "decode_contigs": "flashseg.core.api",
    "ViterbiResult": "flashseg.core.api",
    "PosteriorResult": "flashseg.core.api",
    "DEFAULT_CHUNK_SIZE": "flashseg.core.api",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
