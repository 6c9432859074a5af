"""``flashseg validate``: check a model, tracks, observations and genome before a long run.

Everything decode would check up front (model, labels, bin size, contig
names and lengths, the model's emission features against the observations,
the working memory a decode with the default --chunk-size and --threads needs),
plus a full scan of every track value (NaN, +inf, probabilities outside
[0, 1]) and every observation (values its kind cannot hold) chunk by chunk, so a bad bin is found in
seconds instead of hours into a run.
"""
from __future__ import annotations

import click

from ._common import TrackSpec, check_memory, default_threads, existing_file, load_model_spec

_SCAN_ROWS = 1 << 16


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "model_path", required=True, type=existing_file(), help="Model YAML.")
@click.option("-t", "--tracks", "track_specs", multiple=True, type=TrackSpec(), help="Tracks HDF5[:W] (repeatable).")
@click.option("--observations", "observations", multiple=True, type=existing_file(),
              help="Observations HDF5 (repeatable), checked against the model's emissions section.")
@click.option("--fasta", "fasta_path", type=existing_file(), help="Genome FASTA.")
@click.option("--nan-as-missing", is_flag=True, help="Accept NaN bins (decode --nan-as-missing).")
def validate(model_path, track_specs, observations, fasta_path, nan_as_missing):
    """Check MODEL [+ TRACKS/OBSERVATIONS + FASTA]; exit 1 with the first problem found."""
    from ..errors import DataError
    from ..io.fasta import open_genome
    from ..plan import plan_contigs
    from ..io.tracks import open_track_set

    spec = load_model_spec(model_path)
    click.echo(f"model {model_path}: ok ({len(spec.label_names)} labels, K = {spec.max_duration}, "
               f"bin_size {spec.bin_size}, tail {spec.tail})")
    genome = open_genome(fasta_path) if fasta_path else None
    try:
        if genome is not None:
            click.echo(f"fasta {fasta_path}: ok ({len(genome.names)} contigs)")
        if not track_specs and not observations:
            return
        with open_track_set(track_specs, spec.label_names, nan_as_missing=nan_as_missing,
                            observations=observations, spec=spec) as tracks:
            if tracks.bin_size != spec.bin_size:
                raise DataError(f"bin_size {tracks.bin_size} differs from the model's bin_size {spec.bin_size}",
                                file=tracks.files[0].path)
            plan = plan_contigs(tracks, genome)
            # what decode would refuse up front (with its default --chunk-size and --threads)
            check_memory(spec.model, 32768, default_threads(), "decoding these tracks",
                         n_bins=max(job.n_bins for job in plan.jobs))
            n_bins = 0
            for job in plan.jobs:
                for a in range(0, job.n_bins, _SCAN_ROWS):
                    tracks.read(job.name, a, min(job.n_bins, a + _SCAN_ROWS))
                n_bins += job.n_bins
            for f in tracks.files:
                if hasattr(f, "emissions"):
                    click.echo(f"observations {f.path}: ok ({len(f.contigs)} contigs, {f.emissions.family} "
                               f"emissions over {len(f.emissions.features)} features)")
                else:
                    click.echo(f"tracks {f.path}: ok ({len(f.contigs)} contigs, score {f.score}, "
                               f"weight {f.weight:g})")
            click.echo(f"decodable: {len(plan.jobs)} contigs, {n_bins} bins; skipped: {len(plan.skipped)}")
    finally:
        if genome is not None:
            genome.close()
