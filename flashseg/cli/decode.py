"""``flashseg decode``: tracks, observations or reads (+ model, + FASTA) -> BED9+4 segment calls and
per-bin posteriors."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass

import click

from ._common import (READ_OPTION_NAMES, FiniteFloat, Progress, RegionParam, TrackSpec, check_memory, compile_notice,
                      default_threads, existing_file, load_model_spec, output_path, progress_enabled, provenance,
                      read_options, resolve_device)
from ._common import INT32_MAX, INT64_MAX

log = logging.getLogger(__name__)

def _decode_contigs():
    """The core's parallel driver (a seam for tests; imported only when decoding)."""
    from ..core import decode_contigs

    return decode_contigs


def _check_outputs(paths: dict) -> None:
    stdout = [opt for opt, p in paths.items() if p == "-"]
    if len(stdout) > 1:
        raise click.UsageError(f"only one output can go to stdout ('-'): {', '.join(stdout)}")


def _merge_adjacent(o: "DecodeOptions", spec) -> bool:
    """--merge-adjacent as given, else on for a plain HMM (one BED line per bin otherwise)."""
    return o.merge_adjacent if o.merge_adjacent is not None else spec.model.is_plain_hmm


def _check_browser_targets(o: "DecodeOptions") -> None:
    """Which outputs may be genome-browser files (by name: .bb, .bw; docs/formats.md,
    "bigBed and bigWig outputs"): the calls a bigBed, the bedGraphs bigWigs."""
    from ..io.bigfiles import BIGBED, BIGWIG, check_target

    check_target("-o/--output", o.output, BIGBED)
    check_target("--boundaries", o.boundaries_path, BIGWIG)
    check_target("--changes", o.changes_path, BIGWIG)
    check_target("--stats", o.stats_path, None)
    check_target("--samples-out", o.samples_path, None,
                 hint="samples restart at the contig start for every sample")
    check_target("--posteriors", o.posteriors_path, None,
                 hint="it stays HDF5; `flashseg tracks bigwig` makes one bigWig per label from it")


def _claim_files(o: "DecodeOptions", spec) -> None:
    """Refuse outputs that are inputs (or each other's), before any work."""
    from ..io.output import claim, index_companions, text_companions

    _check_browser_targets(o)

    inputs = [("-m/--model", path, []) for path in getattr(spec, "input_files", [o.model_path])]
    inputs += [("-t/--tracks", path, []) for path, _ in o.track_specs]
    inputs += [("--observations", path, []) for path in o.observations]
    inputs += [("--bam", o.bam_path, index_companions(o.bam_path, "alignments") if o.bam_path else []),
               ("--fasta", o.fasta_path, index_companions(o.fasta_path, "fasta") if o.fasta_path else []),
               ("--blacklist", o.blacklist_path, [])]
    outputs = [(option, path, text_companions(path) if path else [])
               for option, path in (("-o/--output", o.output), ("--stats", o.stats_path),
                                    ("--boundaries", o.boundaries_path), ("--changes", o.changes_path),
                                    ("--samples-out", o.samples_path))]
    outputs.append(("--posteriors", o.posteriors_path, []))
    claim(outputs, inputs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "model_path", required=True, type=existing_file(),
              help="Model YAML (docs/model.md).")
@click.option("-t", "--tracks", "track_specs", multiple=True, type=TrackSpec(),
              help="Emission tracks HDF5, optionally with a weight: -t file.h5:0.5 (repeatable; scores add).")
@click.option("--observations", "observations", multiple=True, type=existing_file(),
              help="Raw observations HDF5, scored with the model's emissions section chunk by chunk "
                   "(repeatable; scores add to the tracks').")
@click.option("--bam", "bam_path", type=existing_file(),
              help="Reads (BAM/CRAM + index) scored with the model's coverage section, as `tracks coverage` "
                   "does; the read options below apply to them.")
@read_options
@click.option("--fasta", "fasta_path", type=existing_file(), help="Genome FASTA: contig order and lengths.")
@click.option("--contig", "contigs", multiple=True, help="Decode only this contig (repeatable).")
@click.option("--region", type=RegionParam(), help="Decode only chr:start-end (1-based inclusive, as samtools).")
@click.option("-o", "--output", default="-", type=output_path(), show_default=True,
              help="BED9+4 segment calls ('-' = stdout; .gz = BGZF + tabix; .bb = bigBed).")
@click.option("--stats", "stats_path", type=output_path(), help="Per-contig run summary TSV.")
@click.option("--method", type=click.Choice(["viterbi", "posterior"]), default="viterbi", show_default=True,
              help="MAP segments (viterbi) or per-bin argmax of the posterior, runs merged.")
@click.option("--merge-adjacent/--no-merge-adjacent", default=None,
              help="Merge adjacent MAP segments of one label into runs [default: only for a plain HMM "
                   "(max_duration 1, no tail), whose segments are single bins].")
@click.option("--boundaries", "boundaries_path", type=output_path(), help="bedGraph of the boundary posterior b (.bw = bigWig).")
@click.option("--changes", "changes_path", type=output_path(), help="bedGraph of the label-change posterior chg (.bw = bigWig).")
@click.option("--min-posterior", type=FiniteFloat(0.0, 1.0), default=1e-4, show_default=True,
              help="bedGraph bins below this are left out (they mean 0).")
@click.option("--posteriors", "posteriors_path", type=output_path(), help="HDF5 of gamma (tracks layout).")
@click.option("--posteriors-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--samples", "n_samples", type=click.IntRange(0, INT32_MAX), default=0, show_default=True,
              help="Draw N exact posterior samples per contig.")
@click.option("--samples-out", "samples_path", type=output_path(),
              help="BED4+1 of the samples, ordered by contig, sample, position (.gz = BGZF, no index: "
                   "tabix needs position order).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (per contig: seed + name).")
@click.option("--gap-min", type=click.IntRange(1, INT64_MAX), default=None,
              help="Mask runs of N of at least this many bp (needs --fasta): their bins score 0.")
@click.option("--nan-as-missing", is_flag=True, help="NaN track bins contribute 0 instead of being an error.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1, INT32_MAX), default=None,
              help="Threads [default: CPUs this process may use]: contigs in parallel; with more "
                   "threads than contigs (or on a GPU) each contig's chunks too.")
@click.option("--chunk-size", type=click.IntRange(1, INT32_MAX), default=32768, show_default=True,
              help="Bins per streaming chunk.")
@click.option("--progress/--no-progress", "progress", default=None,
              help="Progress on stderr [default: only on a terminal].")
def decode(model_path, track_specs, observations, bam_path, min_mapq, fragments, max_fragment, blacklist, depth, fasta_path,
           contigs, region, output, stats_path, method, merge_adjacent, boundaries_path, changes_path,
           min_posterior, posteriors_path, posteriors_dtype, n_samples, samples_path, seed, gap_min,
           nan_as_missing, device, threads, chunk_size, progress):
    """Segment contigs: BED9+4 calls with segment and boundary posteriors.

    Scores come from -t tracks, from --observations scored with the model's
    emissions section, and from --bam reads, alone or added together.
    With --bam, reads are counted per bin and scored on the fly exactly as
    `flashseg tracks coverage` with the same read options would (same
    filters, blacklist and depth), alone or added to the -t tracks;
    --gap-min masks their N-gap bins too.
    """
    if not track_specs and not observations and not bam_path:
        raise click.UsageError("give at least one of -t/--tracks, --observations and --bam")
    if not bam_path:
        ctx = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in READ_OPTION_NAMES
                 if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} only work{'s' if len(given) == 1 else ''} with --bam")
    if bam_path and bam_path.lower().endswith(".cram") and not fasta_path:
        raise click.UsageError("a CRAM file needs --fasta (its reference)")
    if contigs and region:
        raise click.UsageError("--contig and --region cannot be combined")
    if n_samples and not samples_path:
        raise click.UsageError("--samples N needs --samples-out FILE")
    if samples_path and not n_samples:
        raise click.UsageError("--samples-out needs --samples N (N >= 1)")
    if gap_min is not None and not fasta_path:
        raise click.UsageError("--gap-min needs --fasta")
    _check_outputs({"-o/--output": output, "--stats": stats_path, "--boundaries": boundaries_path,
                    "--changes": changes_path, "--posteriors": posteriors_path, "--samples-out": samples_path})
    if posteriors_path == "-":
        raise click.BadParameter("HDF5 cannot be written to stdout", param_hint="--posteriors")
    if threads is None:
        threads = default_threads()
    run_decode(DecodeOptions(
        model_path=model_path, track_specs=track_specs, observations=observations, fasta_path=fasta_path, contigs=contigs,
        region=region, gap_min=gap_min, nan_as_missing=nan_as_missing,
        bam_path=bam_path, min_mapq=min_mapq, fragments=fragments, max_fragment=max_fragment,
        blacklist_path=blacklist, depth=depth,
        output=output, stats_path=stats_path, boundaries_path=boundaries_path, changes_path=changes_path,
        min_posterior=min_posterior, posteriors_path=posteriors_path, posteriors_dtype=posteriors_dtype,
        samples_path=samples_path,
        method=method, merge_adjacent=merge_adjacent, n_samples=n_samples, seed=seed, device=device,
        threads=threads, chunk_size=chunk_size, show_progress=progress_enabled(progress)))


def _open_sources(spec, track_specs, observations, bam_path, fasta_path, nan_as_missing):
    """The emission sources: a TrackSet of tracks and observations, or the BAM's contigs."""
    from ..errors import DataError
    from ..io.tracks import open_track_set

    if not track_specs and not observations:
        # --bam alone: the BAM (or FASTA) gives the contigs; coverage is added by _bam_adder.
        from ..io.coverage import BamContigs

        return BamContigs(bam_path, spec, reference=fasta_path, fasta=fasta_path)
    tracks = open_track_set(track_specs, spec.label_names, nan_as_missing=nan_as_missing,
                            observations=observations, spec=spec)
    if tracks.bin_size != spec.bin_size:
        tracks.close()
        raise DataError(f"bin_size {tracks.bin_size} differs from the model's bin_size {spec.bin_size} "
                        f"({spec.path})", file=tracks.files[0].path)
    return tracks


def _bam_adder(spec, bam_path, fasta_path, threads, *, read_filter, blacklist_path=None, depth=None):
    """Per-contig coverage emissions from --bam, added to the track scores.

    Scores as `tracks coverage` would with the same read filter, blacklist
    and depth; the caller's N-gap bins are masked as well.
    """
    from ..errors import DataError
    from ..io.alignments import select_contigs
    from ..io.bed import read_intervals
    from ..io.coverage import coverage_emissions, estimate_depth

    if spec.coverage is None:  # before a counting pass that would be wasted
        raise DataError('the model has no coverage section (docs/model.md, "Coverage"): --bam needs one '
                        "with a mean per label", file=getattr(spec, "path", None))
    black = read_intervals(blacklist_path) if blacklist_path else None
    if depth is None:
        # Depth from the whole genome, not just the contigs decoded now: a per-contig
        # run (--contig, Snakemake scatter) must score bins as a whole-genome run does.
        contigs = select_contigs(bam_path, reference=fasta_path, fasta=fasta_path)
        depth = estimate_depth(bam_path, contigs, spec.bin_size, read_filter, reference=fasta_path,
                               blacklist=black, threads=threads)
        log.info("%s: depth %.4g reads per bin at copy ratio 1", bam_path, depth)

    def for_job(job, base, gaps=None):
        cov = coverage_emissions(bam_path, job.name, job.total_bins, spec, depth, length=job.length_bp,
                                 reference=fasta_path, read_filter=read_filter, blacklist=black, gaps=gaps)

        def emissions(a, b):
            return base(a, b) + cov(job.offset + a, job.offset + b)

        return emissions

    return for_job


@dataclass
class DecodeOptions:
    """What one ``decode`` run does, once its options are checked (``demo``
    builds one too). Defaults are the command's."""

    # inputs
    model_path: str
    track_specs: tuple = ()
    observations: tuple = ()             # paths of observation files
    fasta_path: str | None = None
    contigs: tuple = ()
    region: object = None                # plan.Region
    gap_min: int | None = None
    nan_as_missing: bool = False
    # reads (--bam) and their filters
    bam_path: str | None = None
    min_mapq: int = 20
    fragments: bool = False
    max_fragment: int = 1000
    blacklist_path: str | None = None
    depth: float | None = None
    # outputs
    output: str = "-"
    stats_path: str | None = None
    boundaries_path: str | None = None
    changes_path: str | None = None
    min_posterior: float = 1e-4
    posteriors_path: str | None = None
    posteriors_dtype: str = "float32"
    samples_path: str | None = None
    # inference
    method: str = "viterbi"
    merge_adjacent: bool | None = None   # None: only for a plain HMM (SemiMarkovModel.is_plain_hmm)
    n_samples: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    chunk_size: int = 32768
    show_progress: bool = False


def run_decode(opts: DecodeOptions) -> None:
    """Everything ``decode`` does after option parsing: nothing starts before
    its outputs are checked against its inputs, and nothing is published
    unless every output is complete."""
    from ..io.output import publishing

    o = opts
    spec = load_model_spec(o.model_path)
    _claim_files(o, spec)
    with publishing():
        _decode(o, spec)


def _sample_lines(writer, job):
    """Where the core streams a contig's posterior samples: formatted into that
    contig's buffer, which joins the samples file in contig order."""
    def write(first, batch, buffer):
        writer.write_samples(job.name, batch, length=job.length_bp, offset=job.offset, first=first, stream=buffer)

    return write


def _output_opener(o: DecodeOptions, plan, sources, genome):
    """open(path) for the calls and bedGraph outputs: text, or a bigBed/bigWig by name
    whose contig sizes are the FASTA's, else the tracks' ``length`` attributes, else
    bins x bin size (with a warning: a browser shows the contig that long)."""
    from ..io.bigfiles import browser_format, open_browser_output
    from ..io.output import open_text_output

    browser = [path for path in (o.output, o.boundaries_path, o.changes_path) if browser_format(path)]
    chrom_sizes = {job.name: job.length_bp for job in plan.jobs}
    if browser and genome is None:
        guessed = [job.name for job in plan.jobs if sources.length_bp(job.name) is None]
        if guessed:
            shown = ", ".join(guessed[:5]) + (f", ... ({len(guessed) - 5} more)" if len(guessed) > 5 else "")
            log.warning("%s: %d contig(s) have no length (no --fasta, no `length` attribute in the tracks): "
                        "their sizes are taken as bins x bin size: %s", ", ".join(browser), len(guessed), shown)

    def open_output(path):
        return open_browser_output(path, chrom_sizes) if browser_format(path) else open_text_output(path)

    return open_output


def _decode(o: DecodeOptions, spec) -> None:
    """run_decode's work, its outputs published together when it ends."""
    from ..errors import DataError
    from ..io.bed import BedWriter, SamplesWriter
    from ..io.bedgraph import BedGraphSink
    from ..io.fasta import open_genome
    from ..io.output import open_text_output, temp_path_for
    from ..io.perbin import BufferedText, PerBinOutputs
    from ..io.posteriors import PosteriorsWriter
    from ..plan import plan_contigs

    tracks = _open_sources(spec, o.track_specs, o.observations, o.bam_path, o.fasta_path, o.nan_as_missing)
    with contextlib.ExitStack() as stack:
        stack.callback(tracks.close)
        genome = None
        if o.fasta_path:
            genome = stack.enter_context(open_genome(o.fasta_path))
        plan = plan_contigs(tracks, genome, contigs=o.contigs, region=o.region)
        device = resolve_device(o.device)
        add_bam = None
        if o.bam_path:
            from ..io.reads import ReadFilter

            read_filter = ReadFilter(min_mapq=o.min_mapq, fragments=o.fragments, max_fragment=o.max_fragment)
            add_bam = _bam_adder(spec, o.bam_path, o.fasta_path, o.threads, read_filter=read_filter,
                                 blacklist_path=o.blacklist_path, depth=o.depth)

        prov = provenance(spec, o.seed)
        labels = spec.labels
        open_output = _output_opener(o, plan, tracks, genome)
        bed_stream = stack.enter_context(open_output(o.output))
        bed = BedWriter(bed_stream, bin_size=spec.bin_size, label_names=spec.label_names,
                        label_colors=[lab.color for lab in labels],
                        label_strands=[lab.strand for lab in labels], provenance=prov, target=o.output)
        bed.write_header()
        samples_writer = samples_stream = None
        if o.samples_path:
            # Samples restart at position 0 for every sample: a .gz is BGZF without a tabix index.
            samples_stream = stack.enter_context(open_text_output(o.samples_path, tabix_preset=None))
            samples_writer = SamplesWriter(samples_stream, bin_size=spec.bin_size,
                                           label_names=spec.label_names, provenance=prov)
            samples_writer.write_header()
        boundary_stream = stack.enter_context(open_output(o.boundaries_path)) if o.boundaries_path else None
        change_stream = stack.enter_context(open_output(o.changes_path)) if o.changes_path else None
        posteriors = None
        if o.posteriors_path:
            posteriors = stack.enter_context(PosteriorsWriter(o.posteriors_path, labels=spec.label_names,
                                                              bin_size=spec.bin_size, dtype=o.posteriors_dtype))

        progress = stack.enter_context(Progress(o.show_progress, len(plan.jobs)))
        jobs, per_bins = [], []
        for job in plan.jobs:
            gaps = genome.gap_bins(job.name, spec.bin_size, o.gap_min, job.total_bins) if o.gap_min else None
            if gaps is not None and len(gaps):
                masked = int((gaps[:, 1] - gaps[:, 0]).sum())
                log.info("%s: %d bins in N gaps of >= %d bp masked", job.name, masked, o.gap_min)
            emissions = tracks.emissions(job.name, offset=job.offset, n_bins=job.n_bins, gaps=gaps)
            if add_bam is not None:
                emissions = add_bam(job, emissions, gaps)
            emissions = progress.wrap(job.name, job.n_bins, emissions)
            per_bin = None
            if boundary_stream or change_stream or posteriors or samples_writer is not None:
                def buffer_for(target):
                    beside = target if target != "-" else os.path.join(tempfile.gettempdir(), "flashseg-stdout")
                    return BufferedText(temp_path_for(beside, suffix=f".{len(jobs)}"), target)

                def sink(target):
                    buffer = buffer_for(target)
                    return (BedGraphSink(buffer, contig=job.name, bin_size=spec.bin_size, length=job.length_bp,
                                         offset=job.offset, min_posterior=o.min_posterior), buffer)
                per_bin = PerBinOutputs(
                    boundary=sink(o.boundaries_path) if boundary_stream else None,
                    change=sink(o.changes_path) if change_stream else None,
                    posteriors=(posteriors.add_contig(job.name, job.total_bins, job.length_bp,
                                                      job.offset, job.n_bins) if posteriors else None),
                    samples=(_sample_lines(samples_writer, job), buffer_for(o.samples_path))
                    if samples_writer is not None else None)
            per_bins.append(per_bin)
            entry = {"name": job.name, "emissions": emissions, "n_bins": job.n_bins}
            if per_bin is not None:
                entry["per_bin"] = per_bin
            jobs.append(entry)

        if device == "cpu":
            from ..core.api import warm_up

            check_memory(spec.model, o.chunk_size, o.threads, n_bins=max(job.n_bins for job in plan.jobs))

            with compile_notice():
                warm_up(o.method, o.n_samples)
        decode_contigs = _decode_contigs()
        results = decode_contigs(spec.model, jobs, threads=o.threads, method=o.method,
                                 merge_adjacent=_merge_adjacent(o, spec), n_samples=o.n_samples, seed=o.seed,
                                 chunk_size=o.chunk_size, device=device)
        rows = {}
        for job, per_bin in zip(plan.jobs, per_bins):
            try:
                result = next(results)
            except DataError as exc:
                raise exc.located(contig=job.name) from None
            if result.name != job.name:
                raise RuntimeError(f"core returned {result.name!r} where {job.name!r} was expected")
            n_segments = bed.write_calls(job.name, result.calls, length=job.length_bp, offset=job.offset)
            if per_bin is not None:
                per_bin.finish(boundary_stream, change_stream, samples_stream)
            viterbi = "NA" if result.viterbi_score is None else "%.12g" % result.viterbi_score
            rows[job.name] = (f"{job.name}\t{job.n_bins}\t{result.log_partition:.12g}\t{viterbi}\t"
                              f"{n_segments}\t{result.seconds:.3f}\tok\n")
            progress.contig_done(job.name, job.n_bins, result.seconds)
            if result.exact_fallback:
                log.info("%s: recomputed exactly after the fast path failed its check", job.name)
        if o.stats_path:
            with open_text_output(o.stats_path, tabix_preset=None) as stats:
                stats.write("#contig\tbins\tlog_partition\tviterbi_score\tsegments\tseconds\tstatus\n")
                order = genome.names if genome is not None else tracks.contigs
                skipped = {name: (bins, why) for name, bins, why in plan.skipped}
                for name in order:
                    if name in rows:
                        stats.write(rows[name])
                    elif name in skipped:
                        bins, why = skipped[name]
                        stats.write(f"{name}\t{bins}\tNA\tNA\t0\t0.000\tskipped: {why}\n")
        log.info("wrote %d segments on %d contig(s)%s", bed.n_written, len(plan.jobs),
                 "" if o.output == "-" else f" to {o.output}")
