"""``flashseg report``: what the labels of a segmentation mean, as figures, tables and one HTML page
(docs/report.md)."""
from __future__ import annotations

import os

import click

from ._common import INT64_MAX, RegionParam, existing_file, load_model_spec, wrote

INSTALL_HINT = "pip install '.[report]' in a clone of flashseg (or pip install matplotlib)"


def _require_matplotlib() -> None:
    from ..errors import UsageError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"flashseg report needs matplotlib: {INSTALL_HINT}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "model_path", required=True, type=existing_file(), help="Model YAML.")
@click.option("--segments", required=True, type=existing_file(),
              help="The calls: flashseg's BED9+4 or any BED4+ with the label in the name column "
                   "(ChromHMM's _segments.bed); plain or gzipped.")
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Report directory: new or empty, unless --force.")
@click.option("--annotations", multiple=True, type=click.Path(exists=True, readable=True),
              help="BED3+ file, or a directory of them (every .bed and .bed.gz): overlap enrichment "
                   "(repeatable).")
@click.option("--anchors", multiple=True, type=existing_file(),
              help="Anchor positions, ChromHMM's 'chrom position strand' or BED: neighborhood enrichment "
                   "(repeatable).")
@click.option("--flank", type=click.IntRange(0, INT64_MAX), default=2000, show_default=True,
              help="Neighborhood enrichment from -FLANK to +FLANK bp around each anchor, in steps of a bin.")
@click.option("-t", "--tracks", multiple=True, type=existing_file(),
              help="Tracks HDF5: mean score per label over the calls (the emissions figure of a "
                   "score-track model; repeatable).")
@click.option("--observations", multiple=True, type=existing_file(),
              help="Observations HDF5: mean of every feature per label over the calls (repeatable).")
@click.option("--posteriors", type=existing_file(),
              help="decode --posteriors HDF5: per-label posteriors in the locus figure (needs --region).")
@click.option("--boundaries", type=existing_file(),
              help="decode --boundaries (or --changes) bedGraph: boundary posteriors in the locus figure "
                   "(needs --region).")
@click.option("--region", type=RegionParam(), help="Draw the locus chr:start-end (1-based inclusive, as samtools).")
@click.option("--force", is_flag=True, help="Write into a directory that holds other files (ours are replaced).")
def report(model_path, segments, outdir, annotations, anchors, flank, tracks, observations, posteriors,
           boundaries, region, force):
    """Figures, enrichment tables and index.html: what the labels of --segments mean (docs/report.md)."""
    from ..errors import UsageError
    from ..io.output import claim, publishing

    if region is None and (posteriors or boundaries):
        raise click.UsageError("--posteriors and --boundaries draw the locus figure: give --region too")
    _require_matplotlib()
    from ..io.annotations import annotation_paths, anchor_name
    from ..report.build import ReportRequest, build_report, output_names

    names = [anchor_name(p) for p in anchors]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise UsageError(f"--anchors {anchors[names.index(name)]} and {anchors[i]} both give "
                             f"neighborhood_{name}.tsv: rename one")
    spec = load_model_spec(model_path)
    request = ReportRequest(spec=spec, segments=segments, annotations=annotation_paths(annotations),
                            anchors=list(anchors), flank=flank, tracks=list(tracks), observations=list(observations),
                            posteriors=posteriors, boundaries=boundaries, region=region)
    files = output_names(request)
    inputs = [("-m/--model", p, []) for p in spec.input_files] + [("--segments", segments, [])]
    inputs += [("--annotations", p, []) for p in request.annotations] + [("--anchors", p, []) for p in anchors]
    inputs += [("-t/--tracks", p, []) for p in tracks] + [("--observations", p, []) for p in observations]
    inputs += [(option, p, []) for option, p in (("--posteriors", posteriors), ("--boundaries", boundaries)) if p]
    claim([("-o/--outdir", os.path.join(outdir, name), []) for name in files], inputs)
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise UsageError(f"-o/--outdir {outdir} is not empty: report writes only into a new or empty directory "
                         "(--force writes into it, replacing the report's files)")
    os.makedirs(outdir, exist_ok=True)
    with publishing():
        build_report(request, outdir)
    wrote(f"wrote {os.path.join(outdir, 'index.html')} and {len(files) - 1} more files")
