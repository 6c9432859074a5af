"""``flashseg tracks``: make emission tracks or observations from other data (docs/formats.md,
"Emission tracks" and "Observations"), and bigWigs from a posteriors file (docs/formats.md,
"bigBed and bigWig outputs")."""
from __future__ import annotations

import logging

import click

from ._common import FiniteFloat, default_threads, read_options, wrote
from ._common import INT32_MAX

log = logging.getLogger(__name__)

# Rows computed and written at once: bounded memory per contig.
_WRITE_ROWS = 65536


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def tracks():
    """Make emission tracks or observations (HDF5) from other data; bigWigs of posteriors."""


@tracks.command("coverage")
@click.option("--bam", "bam_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Coordinate-sorted, indexed BAM or CRAM.")
@click.option("--fasta", type=click.Path(exists=True, dir_okay=False),
              help="Genome FASTA: contig order and lengths (checked against the BAM); the CRAM reference.")
@click.option("-m", "--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Model YAML with a coverage section: labels, bin size, per-label means.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Tracks file to write (.h5).")
@click.option("--bin-size", type=click.IntRange(1, INT32_MAX),
              help="bp per bin [default: the model's]. Decoding needs tracks and model to agree.")
@read_options
@click.option("--raw", is_flag=True, help="Also store the per-bin counts as /depth/<contig> (int32).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Storage type of the log-likelihoods.")
@click.option("--threads", type=click.IntRange(1, INT32_MAX), default=None,
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


@tracks.command("chromhmm")
@click.argument("binary_dir", metavar="BINARY_DIR", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Output directory (created if missing): <cell>.h5 per cell, and model.yaml.")
@click.option("--bin-size", type=click.IntRange(1, INT32_MAX), default=200, show_default=True,
              help="bp per bin of the binarized files (ChromHMM's -b).")
@click.option("--chromsizes", type=click.Path(exists=True, dir_okay=False),
              help="name<TAB>length per line (a UCSC chrom.sizes): contig order and lengths, checked against "
                   "the rows [default: natural order, length = rows x bin size].")
@click.option("--chromhmm-model", "model_path", type=click.Path(exists=True, dir_okay=False),
              help="ChromHMM's model_N.txt: also write OUT_DIR/model.yaml, the same HMM with a bernoulli "
                   "emissions section over the marks (matched by name).")
@click.option("--force", is_flag=True, help="Replace output files that already exist in OUT_DIR.")
def chromhmm(binary_dir, outdir, bin_size, chromsizes, model_path, force):
    """ChromHMM binarized marks as observations files, one per cell.

    Reads every <cell>_<chrom>_binary.txt[.gz] of BINARY_DIR (a line
    cell<TAB>chrom, a line of mark names, then 0/1/2 per mark and bin, 2 =
    missing) and writes OUT_DIR/<cell>.h5 (observations, kind binary; a
    contig per chromosome, in natural order or --chromsizes order). Marks
    are matched by name: the cell's first file in that order sets the
    feature order, and a cell's files must hold the same marks. Decode with `flashseg decode -m OUT_DIR/model.yaml
    --observations OUT_DIR/<cell>.h5`.
    """
    import os

    from ..errors import DataError, UsageError
    from ..io import chromhmm as fmt
    from ..io.output import claim, publishing

    cells = fmt.find_binarized(binary_dir)
    sizes = fmt.read_chromsizes(chromsizes) if chromsizes else None
    model = fmt.read_model(model_path) if model_path else None
    for cell, files in cells.items():
        if sizes is not None:
            absent = [f for f in files if f.chrom not in sizes]
            if absent:
                raise DataError(f"chromosome {absent[0].chrom} is not in --chromsizes {chromsizes}",
                                file=absent[0].path)
            order = list(sizes)
            files.sort(key=lambda f: order.index(f.chrom))
        if model is not None:
            missing = [m for m in model.marks if m not in files[0].marks]
            if missing:
                raise DataError(f"cell {cell} lacks mark {missing[0]} of the model {model_path} (its marks: "
                                f"{', '.join(files[0].marks)})", file=files[0].path)
            extra = [m for m in files[0].marks if m not in model.marks]
            if extra:
                log.warning("cell %s: mark(s) %s are not in the model %s: decoding ignores them", cell,
                            ", ".join(extra), model_path)
    targets = {cell: os.path.join(outdir, f"{cell}.h5") for cell in cells}
    yaml_target = os.path.join(outdir, "model.yaml") if model is not None else None
    outputs = list(targets.values()) + ([yaml_target] if yaml_target else [])
    claim([("-o/--outdir", path, []) for path in outputs],
          [("BINARY_DIR", f.path, []) for files in cells.values() for f in files]
          + [("--chromsizes", chromsizes, []), ("--chromhmm-model", model_path, [])])
    existing = [path for path in outputs if os.path.lexists(path)]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: "
                         "--force replaces them")
    os.makedirs(outdir, exist_ok=True)
    with publishing():
        for cell, files in cells.items():
            _chromhmm_cell(fmt, files, targets[cell], bin_size, sizes, chromsizes)
        if model is not None:
            _chromhmm_model(fmt, model, cells[next(iter(cells))][0].marks, yaml_target, bin_size)
    wrote(f"wrote {', '.join(outputs)}")


def _chromhmm_cell(fmt, files, target, bin_size, sizes, chromsizes_path):
    from .. import bins
    from ..errors import DataError
    from ..io.observations import ObservationsWriter

    features = files[0].marks
    with ObservationsWriter(target, features=features, kind="binary", bin_size=bin_size) as writer:
        for f in files:
            x = fmt.read_binarized(f, features)
            length = sizes[f.chrom] if sizes is not None else None
            if length is not None:
                allowed = sorted({bins.full_bins(length, bin_size), bins.n_bins(length, bin_size)})
                if len(x) not in allowed:
                    raise DataError(f"{len(x)} rows do not fit {f.chrom}'s {length} bp in {chromsizes_path} at "
                                    f"bin size {bin_size} (expected {' or '.join(map(str, allowed))})",
                                    file=f.path)
            writer.add_contig(f.chrom, len(x), length_bp=length)
            for a in range(0, len(x), _WRITE_ROWS):
                writer.write(f.chrom, a, x[a:a + _WRITE_ROWS])
            log.info("%s: %s, %d bins", target, f.chrom, len(x))


def _chromhmm_model(fmt, model, features, target, bin_size):
    import yaml

    from ..errors import DataError
    from ..io.model import parse_model
    from ..io.output import write_text

    text = fmt.model_yaml(model, features, bin_size=bin_size)
    try:
        parse_model(yaml.safe_load(text))
    except DataError as exc:        # the model's numbers are not a valid flashseg model
        raise exc.located(file=model.path) from None
    write_text(target, text)


@tracks.command("counts")
@click.option("--bam", "bam_paths", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Coordinate-sorted, indexed BAM or CRAM (repeatable: one feature each).")
@click.option("--name", "names", multiple=True,
              help="Feature name of each --bam, in order [default: the file names without .bam/.cram].")
@click.option("--fasta", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Genome FASTA: contig order and lengths (checked against every BAM); the CRAM reference.")
@click.option("--bin-size", required=True, type=click.IntRange(1, INT32_MAX), help="bp per bin.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Observations file to write (.h5).")
@read_options(depth=False, blacklist_help="BED of regions to ignore: bins overlapping them are missing (-1).")
@click.option("--threads", type=click.IntRange(1, INT32_MAX), default=None,
              help="Worker processes counting reads [default: the CPUs this process may use].")
def counts(bam_paths, names, fasta, bin_size, output, min_mapq, fragments, max_fragment, blacklist, threads):
    """Reads per bin of each BAM, as a count observations file (int32, -1 = missing).

    The reads that count, and where, are those of `tracks coverage` with the
    same read options: each --bam's column equals the /depth/<contig> that
    `tracks coverage --raw` stores. Contigs follow the FASTA, with their
    lengths. Score them with a poisson or negative_binomial emissions section
    (`decode --observations`).
    """
    import os
    import re

    from ..io.output import claim, index_companions, publishing

    if names and len(names) != len(bam_paths):
        raise click.UsageError(f"give one --name per --bam ({len(bam_paths)}), or none; got {len(names)}")
    features = list(names) if names else [re.sub(r"\.(bam|cram)$", "", os.path.basename(p), flags=re.IGNORECASE)
                                          for p in bam_paths]
    dup = next((n for i, n in enumerate(features) if n in features[:i]), None)
    if dup is not None:
        raise click.UsageError(f"feature name {dup} is given twice" + ("" if names else " (use --name)"))
    claim([("-o/--output", output, [])],
          [("--bam", p, index_companions(p, "alignments")) for p in bam_paths]
          + [("--fasta", fasta, index_companions(fasta, "fasta")), ("--blacklist", blacklist, [])])
    with publishing():
        _count_observations(bam_paths, features, fasta, bin_size, output, min_mapq, fragments, max_fragment,
                            blacklist, threads)


def _count_observations(bam_paths, features, fasta, bin_size, output, min_mapq, fragments, max_fragment,
                        blacklist, threads):
    import numpy as np

    from .. import bins
    from ..errors import DataError
    from ..io.alignments import bam_contigs, check_contigs, count_contigs, fasta_contigs
    from ..io.bed import read_intervals
    from ..io.observations import MISSING_COUNT, ObservationsWriter
    from ..io.reads import ReadFilter

    threads = threads or default_threads()
    read_filter = ReadFilter(min_mapq=min_mapq, fragments=fragments, max_fragment=max_fragment)
    in_fasta = fasta_contigs(fasta)
    for path in bam_paths:
        check_contigs(path, bam_contigs(path, fasta), fasta, in_fasta)
    contigs = [(name, length) for name, length in in_fasta if length > 0]
    if not contigs:
        raise DataError("no contigs to count", file=fasta)
    black = read_intervals(blacklist) if blacklist else {}
    per_bam = []
    for path in bam_paths:
        log.info("counting reads of %s on %d contigs (up to %d processes)", path, len(contigs), threads)
        per_bam.append(count_contigs(path, contigs, bin_size, read_filter, reference=fasta, threads=threads))
    n_masked = 0
    with ObservationsWriter(output, features=features, kind="count", bin_size=bin_size) as writer:
        for name, length in contigs:
            n_bins = bins.n_bins(length, bin_size)
            writer.add_contig(name, n_bins, length_bp=length)
            mask = bins.mask(black.get(name), length, bin_size)
            n_masked += int(mask.sum())
            for a in range(0, n_bins, _WRITE_ROWS):
                b = min(n_bins, a + _WRITE_ROWS)
                rows = np.stack([c[name][a:b] for c in per_bam], axis=1).astype(np.int32, copy=False)
                rows[mask[a:b]] = MISSING_COUNT
                writer.write(name, a, rows)
    if n_masked:
        log.info("%d bins overlap the blacklist: missing (-1) in every feature", n_masked)


@tracks.command("bigwig")
@click.argument("posteriors_path", metavar="POSTERIORS.h5", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Output directory (created if missing): <label>.bw per label.")
@click.option("--label", "labels", multiple=True, help="Only this label (repeatable) [default: every label].")
@click.option("--min-posterior", type=FiniteFloat(0.0, 1.0), default=1e-4, show_default=True,
              help="Bins below this are left out (they mean 0).")
@click.option("--force", is_flag=True, help="Replace .bw files that already exist in OUT_DIR.")
def bigwig(posteriors_path, outdir, labels, min_posterior, force):
    """One bigWig per label of a `decode --posteriors` file: P(bin has the label).

    Writes OUT_DIR/<label>.bw: each bin's posterior as float32, consecutive
    bins of equal value as one interval, bins below --min-posterior (and the
    rows a --region run did not decode) left out. Contigs follow the file's
    order; their sizes are its `length` attributes (else bins x bin size,
    with a warning). The file is read once per label.
    """
    import os

    from ..errors import DataError, UsageError
    from ..io.output import claim, publishing
    from ..io.tracks import open_tracks

    with open_tracks(posteriors_path) as source:
        if source.score != "probability":
            raise DataError(f"score is {source.score!r}: not a posteriors file (decode --posteriors writes "
                            "score 'probability')", file=posteriors_path)
        wanted = list(dict.fromkeys(labels)) or list(source.labels)
        unknown = [name for name in wanted if name not in source.labels]
        if unknown:
            raise DataError(f"no label {unknown[0]} (labels: {', '.join(source.labels)})", file=posteriors_path)
        unnameable = [name for name in wanted if "/" in name or "\0" in name or name in (".", "..")]
        if unnameable:
            raise DataError(f"label {unnameable[0]!r} cannot name a file: pick the others with --label",
                            file=posteriors_path)
        targets = {name: os.path.join(outdir, f"{name}.bw") for name in wanted}
        claim([("-o/--outdir", path, []) for path in targets.values()], [("POSTERIORS.h5", posteriors_path, [])])
        existing = [path for path in targets.values() if os.path.lexists(path)]
        if existing and not force:
            raise UsageError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: "
                             "--force replaces them")
        os.makedirs(outdir, exist_ok=True)
        with publishing():
            _label_bigwigs(source, targets, min_posterior)
    wrote(f"wrote {', '.join(targets.values())}")


def _label_bigwigs(source, targets, min_posterior):
    from ..io.bigfiles import publish_bigwig, value_runs

    bin_size = source.bin_size
    sizes = {}
    guessed = []
    for contig in source.contigs:
        length = source.length_bp(contig)
        if length is None:
            guessed.append(contig)
            length = source.n_bins(contig) * bin_size
        sizes[contig] = length
    if guessed:
        log.warning("%s: %d contig(s) have no `length` attribute: their sizes are taken as bins x bin size (%s)",
                    source.path, len(guessed), ", ".join(guessed[:5]) + (", ..." if len(guessed) > 5 else ""))

    def chunks(contig, column):
        n = source.n_bins(contig)
        for a in range(0, n, _WRITE_ROWS * 16):
            b = min(n, a + _WRITE_ROWS * 16)
            yield a, source.read_raw(contig, a, b)[:, column]

    for label, target in targets.items():
        column = source.labels.index(label)
        records = (record for contig in source.contigs
                   for record in value_runs(contig, chunks(contig, column), bin_size=bin_size,
                                            length=sizes[contig], min_value=min_posterior))
        publish_bigwig(target, records, sizes)
        log.info("%s: label %s", target, label)
