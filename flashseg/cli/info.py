"""``flashseg info``: what is in a tracks or observations file or a model (``--json`` for programs);
``--contigs`` lists what decode would decode."""
from __future__ import annotations

import click

from ._common import TrackSpec, existing_file, load_model_spec

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == HDF5_SIGNATURE


def _hdf5_format(path: str) -> str | None:
    import h5py

    from ..io.binned_hdf5 import attr_str

    try:
        with h5py.File(path, "r") as f:
            return attr_str(f.attrs["format"]) if "format" in f.attrs else None
    except (OSError, UnicodeDecodeError):
        return None


def describe_observations(path: str) -> str:
    from ..io.observations import open_observations

    with open_observations(path) as obs:
        lines = [f"file\t{path}", "kind\tflashseg observations", f"observations\t{obs.kind}",
                 f"features\t{len(obs.features)}\t{', '.join(obs.features)}",
                 f"bin_size\t{obs.bin_size}", f"contigs\t{len(obs.contigs)}",
                 f"bins\t{sum(obs.n_bins(c) for c in obs.contigs)}",
                 "#contig\tbins\tlength_bp\tdtype\tcompression"]
        for name in obs.contigs:
            length = obs.length_bp(name)
            lines.append(f"{name}\t{obs.n_bins(name)}\t{'NA' if length is None else length}\t"
                         f"{obs.dtype(name)}\t{obs.compression(name)}")
    return "\n".join(lines)


def describe_tracks(path: str) -> str:
    from ..io.observations import FORMAT as OBSERVATIONS
    from ..io.tracks import open_tracks

    if _hdf5_format(path) == OBSERVATIONS:
        return describe_observations(path)
    with open_tracks(path) as tracks:
        lines = [f"file\t{path}", "kind\tflashseg tracks", f"labels\t{len(tracks.labels)}\t{', '.join(tracks.labels)}",
                 f"bin_size\t{tracks.bin_size}", f"score\t{tracks.score}", f"contigs\t{len(tracks.contigs)}"]
        total = sum(tracks.n_bins(c) for c in tracks.contigs)
        lines.append(f"bins\t{total}")
        lines.append("#contig\tbins\tlength_bp\tdtype\tcompression")
        for name in tracks.contigs:
            length = tracks.length_bp(name)
            lines.append(f"{name}\t{tracks.n_bins(name)}\t{'NA' if length is None else length}\t"
                         f"{tracks.dtype(name)}\t{tracks.compression(name)}")
    return "\n".join(lines)


def describe_model(path: str) -> str:
    import numpy as np

    spec = load_model_spec(path)
    names = spec.label_names
    lines = [f"file\t{spec.path}", "kind\tflashseg model", f"name\t{spec.name}", f"sha256\t{spec.sha256}",
             f"bin_size\t{spec.bin_size}", f"max_duration\t{spec.max_duration}", f"tail\t{spec.tail}",
             f"labels\t{len(names)}", "#label\tcolor\tstrand\tmean_duration_bins\ttail_rho"]
    means = spec.model.mean_durations()   # of the law as the model uses it, tail included
    for i, lab in enumerate(spec.labels):
        rho = spec.tail_rho[i]
        lines.append(f"{lab.name}\t{lab.color}\t{lab.strand}\t{means[i]:.6g}\t"
                     f"{'none' if not np.isfinite(rho) else format(rho, '.6g')}")
    probs = spec.transition_probabilities
    lines.append("#transitions (row = from, column = to)\t" + "\t".join(names))
    for i, name in enumerate(names):
        lines.append(name + "\t" + "\t".join("%.4g" % p for p in probs[i]))
    if spec.coverage is not None:
        cov = spec.coverage
        lines.append(f"coverage\t{cov.model}\tdispersion={cov.dispersion:g}\tmean="
                     + ",".join(f"{n}:{m:g}" for n, m in zip(names, cov.mean)))
    if spec.emissions is not None:
        em = spec.emissions
        lines.append(f"emissions\t{em.family}\t{len(em.features)} features\t{', '.join(em.features)}")
        for pname, table in em.params.items():
            lines.append(f"#{pname} (row = label, column = feature)\t" + "\t".join(em.features))
            for name, row in zip(names, table):
                lines.append(name + "\t" + "\t".join("%.4g" % v for v in row))
    return "\n".join(lines)


def model_json(path: str) -> str:
    """The model for programs (docs/formats.md, "flashseg info --json")."""
    import json
    import math

    spec = load_model_spec(path)
    names = spec.label_names
    probs = spec.transition_probabilities
    means = spec.model.mean_durations()
    labels = [{"name": lab.name, "color": lab.color,
               "mean_duration": None if not math.isfinite(means[i]) else float(means[i]),
               "tail_rho": None if not math.isfinite(spec.tail_rho[i]) else float(spec.tail_rho[i])}
              for i, lab in enumerate(spec.labels)]
    out = {"labels": labels,
           "transitions": {a: {b: float(probs[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)},
           "emissions": None if spec.emissions is None else spec.emissions.as_yaml(names)}
    return json.dumps(out, indent=1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", required=False, type=existing_file())
@click.option("--contigs", "list_contigs", is_flag=True,
              help="Print the contigs a whole-genome decode of -m/-t/--fasta would decode, one per line.")
@click.option("-m", "--model", "model_path", type=existing_file(), help="Model (with --contigs).")
@click.option("-t", "--tracks", "track_specs", multiple=True, type=TrackSpec(), help="Tracks (with --contigs).")
@click.option("--observations", multiple=True, type=existing_file(),
              help="Observations scored with the model's emissions (with --contigs), as decode takes them.")
@click.option("--fasta", "fasta_path", type=existing_file(), help="Genome FASTA (with --contigs).")
@click.option("--json", "as_json", is_flag=True, help="MODEL.yaml as JSON: labels, transitions, emissions.")
def info(path, list_contigs, model_path, track_specs, observations, fasta_path, as_json):
    """Describe TRACKS.h5, OBSERVATIONS.h5 or MODEL.yaml (labels, bins, durations, transitions)."""
    if list_contigs:
        if path or not model_path or not (track_specs or observations):
            raise click.UsageError("info --contigs needs -m MODEL, -t TRACKS and/or --observations OBS "
                                   "[--fasta G] and no PATH")
        from ..errors import DataError
        from ..io.fasta import open_genome
        from ..io.tracks import open_track_set
        from ..plan import plan_contigs

        spec = load_model_spec(model_path)
        with open_track_set(track_specs, spec.label_names, observations=observations, spec=spec) as tracks:
            if tracks.bin_size != spec.bin_size:
                raise DataError(f"bin_size {tracks.bin_size} differs from the model's bin_size {spec.bin_size}",
                                file=tracks.files[0].path)
            genome = open_genome(fasta_path) if fasta_path else None
            try:
                plan = plan_contigs(tracks, genome)
            finally:
                if genome is not None:
                    genome.close()
        click.echo("\n".join(job.name for job in plan.jobs))
        return
    if not path:
        raise click.UsageError("give TRACKS.h5 or MODEL.yaml (or --contigs -m MODEL -t TRACKS)")
    if model_path or track_specs or observations or fasta_path:
        raise click.UsageError("-m/-t/--observations/--fasta go with --contigs")
    if as_json:
        if _is_hdf5(path):
            raise click.UsageError("--json describes a MODEL.yaml")
        click.echo(model_json(path))
        return
    click.echo(describe_tracks(path) if _is_hdf5(path) else describe_model(path))
