"""``flashseg tracks``: make emission tracks from other data (docs/formats.md, "Emission tracks")."""
from __future__ import annotations

import logging

import click

from ._common import default_threads, read_options

log = logging.getLogger(__name__)

# Rows computed and written at once: bounded memory per contig.
_WRITE_ROWS = 65536


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def tracks():
    """Make emission tracks (HDF5) from other data."""


@tracks.command("coverage")
@click.option("--bam", "bam_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Coordinate-sorted, indexed BAM or CRAM.")
@click.option("--fasta", type=click.Path(exists=True, dir_okay=False),
              help="Genome FASTA: contig order and lengths (checked against the BAM); the CRAM reference.")
@click.option("-m", "--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Model YAML with a coverage section: labels, bin size, per-label means.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Tracks file to write (.h5).")
@click.option("--bin-size", type=click.IntRange(min=1),
              help="bp per bin [default: the model's]. Decoding needs tracks and model to agree.")
@read_options
@click.option("--raw", is_flag=True, help="Also store the per-bin counts as /depth/<contig> (int32).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Storage type of the log-likelihoods.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Worker processes counting reads [default: the CPUs this process may use].")
def coverage(bam_path, fasta, model_path, output, bin_size, min_mapq, blacklist, fragments, max_fragment,
             depth, raw, dtype, threads):
    """Per-bin read counts from a BAM, as per-label coverage log-likelihoods.

    Reads that are unmapped, secondary, supplementary, QC-failed, duplicates
    or below --min-mapq are dropped. A read counts in the bin of its leftmost
    aligned base. Each bin's count gets a Poisson or negative-binomial
    log-likelihood per label from the model's coverage section, around
    mean[label] * depth.
    """
    from ..errors import DataError
    from ..io.model import load_model
    from ..io.output import claim, index_companions, publishing

    if bam_path.lower().endswith(".cram") and fasta is None:
        raise click.UsageError("a CRAM file needs --fasta (its reference)")
    spec = load_model(model_path)
    for warning in getattr(spec, "warnings", ()) or ():
        log.warning(warning)
    if spec.coverage is None:
        raise DataError('the model has no coverage section (docs/model.md, "Coverage"): add one with a mean '
                        "per label",
                        file=model_path)
    claim([("-o/--output", output, [])],
          [("--bam", bam_path, index_companions(bam_path, "alignments")),
           ("--fasta", fasta, index_companions(fasta, "fasta") if fasta else []),
           ("--blacklist", blacklist, [])] + [("-m/--model", path, []) for path in spec.input_files])
    with publishing():
        _count_and_write(spec, bam_path, fasta, output, bin_size, min_mapq, blacklist, fragments, max_fragment,
                         depth, raw, dtype, threads)


def _count_and_write(spec, bam_path, fasta, output, bin_size, min_mapq, blacklist, fragments, max_fragment,
                     depth, raw, dtype, threads):
    from .. import bins
    from ..errors import DataError
    from ..io.alignments import count_contigs, select_contigs
    from ..io.bed import read_intervals
    from ..io.coverage import estimate_depth, log_likelihood_for
    from ..io.reads import ReadFilter
    from ..io.tracks import TracksWriter

    if bin_size is None:
        bin_size = int(spec.bin_size)
    elif bin_size != spec.bin_size:
        log.warning("--bin-size %d differs from the model's bin_size %d: decoding with this model will "
                    "reject these tracks", bin_size, spec.bin_size)
    threads = threads or default_threads()
    read_filter = ReadFilter(min_mapq=min_mapq, fragments=fragments, max_fragment=max_fragment)

    contigs = select_contigs(bam_path, reference=fasta, fasta=fasta)
    contigs = [(name, length) for name, length in contigs if length > 0]
    if not contigs:
        raise DataError("no contigs to count", file=fasta or bam_path)
    black = read_intervals(blacklist) if blacklist else {}
    log.info("counting reads of %s on %d contigs (up to %d processes)", bam_path, len(contigs), threads)
    counts = count_contigs(bam_path, contigs, bin_size, read_filter, reference=fasta, threads=threads)
    masks = {name: bins.mask(black.get(name), length, bin_size) for name, length in contigs}
    if depth is None:
        depth = estimate_depth(bam_path, contigs, bin_size, read_filter, counts=counts, blacklist=black or None)
        log.info("depth: median %.6g filtered reads per bin (bins with any coverage)", depth)

    with TracksWriter(output, labels=list(spec.label_names), bin_size=bin_size, score="log_likelihood",
                      dtype=dtype) as writer:
        for name, length in contigs:
            n_bins = bins.n_bins(length, bin_size)
            writer.add_contig(name, n_bins, length_bp=length)
            exposure = bins.exposure(length, bin_size)
            for a in range(0, n_bins, _WRITE_ROWS):
                b = min(n_bins, a + _WRITE_ROWS)
                writer.write(name, a, log_likelihood_for(spec, counts[name][a:b], exposure[a:b], depth,
                                                         masks[name][a:b]))
            if raw:
                writer.add_array(f"/depth/{name}", counts[name].astype("int32"), depth=float(depth),
                                 bin_size=bin_size, min_mapq=min_mapq, fragments=bool(fragments))
    n_masked = sum(int(m.sum()) for m in masks.values())
    if n_masked:
        log.info("%d bins overlap the blacklist and carry no coverage evidence", n_masked)
