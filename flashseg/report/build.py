"""Assemble a report: read the inputs, compute the tables, draw the figures, write the page
(docs/report.md). Every file goes through :func:`flashseg.io.output.atomic_path`, so inside
the command's ``publishing()`` block a failed run publishes nothing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from . import enrichment as enr
from . import html

log = logging.getLogger(__name__)

FIGURE_FORMATS = ("png", "svg")
MAX_LOCUS_POINTS = 4000        # posteriors of longer regions are averaged in blocks to this many points
MAX_LENGTH_AXIS = 5000         # bins: the durations figure stops here
READ_ROWS = 1 << 20            # rows of an HDF5 file read at a time for the mean signals


@dataclass
class ReportRequest:
    spec: object                              # io.model.ModelSpec
    segments: str
    annotations: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    flank: int = 2000
    tracks: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    posteriors: str | None = None
    boundaries: str | None = None
    region: object = None                     # plan.Region


def anchor_stems(request: ReportRequest) -> list[str]:
    from ..io.annotations import anchor_name

    return [f"neighborhood_{anchor_name(p)}" for p in request.anchors]


def output_names(request: ReportRequest) -> list[str]:
    """Every file the report writes into its directory, known before any work."""
    figures = ["transitions", "durations"]
    names = ["index.html"]
    if request.spec.emissions is not None or request.tracks:
        figures.append("emissions")
    if _signal_files(request):
        figures.append("signals")
        names.append("signals.tsv")
    if request.annotations:
        figures.append("enrichment")
        names.append("enrichment.tsv")
    for stem in anchor_stems(request):
        figures.append(stem)
        names.append(stem + ".tsv")
    if request.region is not None:
        figures.append("locus")
    return names + [f"{stem}.{fmt}" for stem in figures for fmt in FIGURE_FORMATS]


def _signal_files(request: ReportRequest) -> list[tuple[str, str]]:
    """(kind, path) of the files averaged per label into signals.tsv: observations always, tracks
    when the model's own emissions section already fills the emissions figure."""
    files = [("observations", p) for p in request.observations]
    if request.spec.emissions is not None:
        files = [("tracks", p) for p in request.tracks] + files
    return files


def _g(value) -> str:
    return "nan" if not np.isfinite(value) else "%.6g" % value


class _Writer:
    """Writes the report's files into ``outdir`` through temporaries that publishing() commits."""

    def __init__(self, outdir: str):
        self.outdir = outdir

    def text(self, name: str, text: str) -> None:
        from ..io.output import write_text

        write_text(os.path.join(self.outdir, name), text)

    def figure(self, stem: str, fig) -> None:
        from ..io.output import atomic_path, write_error
        from . import figures

        try:
            for fmt in FIGURE_FORMATS:
                target = os.path.join(self.outdir, f"{stem}.{fmt}")
                with atomic_path(target) as temp:
                    try:
                        figures.save(fig, temp, fmt)
                    except OSError as exc:
                        raise write_error(exc, target) from None
        finally:
            figures.close(fig)


def _tsv(header, names, matrix) -> str:
    lines = ["\t".join(header)]
    for name, row in zip(names, matrix):
        lines.append("\t".join([name] + [_g(v) for v in row]))
    return "\n".join(lines) + "\n"


def build_report(request: ReportRequest, outdir: str) -> list[str]:
    """Write the report into ``outdir`` (which exists); returns the names written."""
    from ..io.annotations import read_segments
    from . import figures

    spec = request.spec
    names, colors = spec.label_names, [lab.color for lab in spec.labels]
    C = len(names)
    write = _Writer(outdir)
    segmentation = read_segments(request.segments, names)
    bases = enr.label_bases(segmentation, C)
    lengths_bins = enr.segment_lengths(segmentation, C, spec.bin_size)
    n_segments = sum(seg.start.size for seg in segmentation.values())
    genome = int(bases.sum())
    sections = []

    # the labels at a glance
    from .lengths import self_transition

    runs = enr.calls_are_runs(segmentation)
    counts = np.array([x.size for x in lengths_bins])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_bp = np.where(counts > 0, bases / np.maximum(counts, 1), np.nan)
        # a run is 1 / (1 - a) segments on average (a: the self-transition)
        model_mean_bp = np.asarray(spec.model.mean_durations()) * spec.bin_size \
            / ((1.0 - self_transition(spec.model)) if runs else 1.0)
    summary = html.Table(["label", "genome %", "segments", "mean length (bp)",
                          "model's mean " + ("run " if runs else "") + "length (bp)"],
                         [[n, _g(100 * b / genome), f"{k:,}", _g(m), _g(mm)]
                          for n, b, k, m, mm in zip(names, bases, counts, mean_bp, model_mean_bp)])
    sections.append(html.Section("Labels", tables=[summary]))

    # emissions and mean signals
    emission_section = html.Section("Emissions")
    if spec.emissions is not None:
        em = spec.emissions
        parameter = "p" if em.family == "bernoulli" else "mean"
        values = em.params[parameter]
        probability = parameter == "p"
        write.figure("emissions", figures.heatmap(
            values, names, colors, em.features, title=f"emissions: {em.family} {parameter} per label and feature",
            colorbar=parameter, scale_columns=not probability, vmin=0 if probability else None,
            vmax=1 if probability else None, xlabel="feature"))
        emission_section.figures.append(html.Figure(
            "emissions", f"The model's {em.family} emission {parameter} of every feature for every label."))
    elif request.tracks:
        columns, means = _mean_signals([("tracks", p) for p in request.tracks], segmentation, C)
        write.figure("emissions", figures.heatmap(
            means, names, colors, columns, title="mean score per label over the calls", colorbar="mean score",
            scale_columns=True, xlabel="track column"))
        emission_section.figures.append(html.Figure(
            "emissions", "This model scores tracks (it has no emissions section): the mean of every track "
            "column over the bins of each label's calls."))
    else:
        emission_section.text = ("This model scores tracks and has no emissions section: give the tracks "
                                 "(-t) to see the mean score of each label.")
    signal_files = _signal_files(request)
    if signal_files:
        columns, means = _mean_signals(signal_files, segmentation, C)
        write.text("signals.tsv", _tsv(["label"] + columns, names, means))
        write.figure("signals", figures.heatmap(
            means, names, colors, columns, title="mean signal per label over the calls", colorbar="mean",
            scale_columns=True, xlabel="feature"))
        emission_section.figures.append(html.Figure(
            "signals", "The mean of every feature over the bins of each label's calls (numbers: signals.tsv)."))
    sections.append(emission_section)

    # transitions
    transition = spec.transition_probabilities
    write.figure("transitions", figures.heatmap(
        transition, names, colors, names, title="transition probabilities (row: from, column: to)",
        colorbar="probability", vmin=0, vmax=1, xlabel="to", col_colors=colors, fmt="{:.2f}"))
    sections.append(html.Section("Transitions", figures=[html.Figure(
        "transitions", "The model's probability of each label following each other (rows: from).")]))

    # durations
    from .lengths import duration_pmf, run_pmf

    observed = max((int(np.percentile(x, 99.5)) for x in lengths_bins if x.size), default=1)
    axis = int(min(MAX_LENGTH_AXIS, max(observed, 2 * spec.max_duration if spec.max_duration > 1 else 10)))
    law = run_pmf(spec.model, axis) if runs else duration_pmf(spec.model, axis)
    law_name = "model (runs)" if runs else "model"
    has_tail = np.isfinite(spec.model.tail_or_none())
    write.figure("durations", figures.durations(names, colors, lengths_bins, law, max_duration=spec.max_duration,
                                                has_tail=has_tail, bin_size=spec.bin_size, law_name=law_name))
    how = ("The calls are maximal runs of a label, so the curve is the law of runs: segments joined while a "
           "label follows itself (the duration law when self-transitions are 0)." if runs else
           "The curve is each label's duration law.")
    sections.append(html.Section("Segment lengths", text=how + " Dashed: where the table ends and the "
                                 "geometric tail begins.", figures=[html.Figure(
                                     "durations", "Lengths of the calls (bars) against the model (line).")]))

    # overlap enrichment
    if request.annotations:
        from ..io.annotations import read_intervals

        table = enr.overlap_enrichment(segmentation, [read_intervals(p) for p in request.annotations], C)
        columns = [os.path.basename(p) for p in request.annotations]
        matrix = np.column_stack([table.genome_pct, table.fold])
        write.text("enrichment.tsv", _tsv(["label", "genome_pct"] + columns, names, matrix))
        write.figure("enrichment", figures.heatmap(
            matrix, names, colors, ["genome %"] + columns, title="overlap fold enrichment", colorbar="fold",
            scale_columns=True, xlabel="annotation"))
        rows = [[n] + [_g(v) for v in row] for n, row in zip(names, matrix)]
        rows.append(["(annotation % of genome)", "100"] + [_g(v) for v in table.annotation_pct])
        sections.append(html.Section(
            "Overlap enrichment", text="Fold enrichment of each label in each annotation: the label's fraction "
            "of bases inside the annotation over the annotation's fraction of the segmented genome.",
            tables=[html.Table(["label", "genome %"] + columns, rows, "enrichment.tsv")],
            figures=[html.Figure("enrichment", "Overlap fold enrichment (colours scaled per column).")]))

    # neighborhood enrichment
    for path, stem in zip(request.anchors, anchor_stems(request)):
        from ..io.annotations import read_anchors

        table = enr.neighborhood_enrichment(segmentation, read_anchors(path), C, bin_size=spec.bin_size,
                                            flank=request.flank)
        offsets = [str(int(o)) for o in table.offsets]
        write.text(stem + ".tsv", _tsv(["label"] + offsets, names, table.fold))
        write.figure(stem, figures.heatmap(
            table.fold, names, colors, offsets, title=f"neighborhood enrichment around {os.path.basename(path)}",
            colorbar="fold", xlabel="offset from the anchor (bp, upstream < 0)", fmt="{:.2g}"))
        used = int(table.anchors[table.offsets.size // 2]) if table.offsets.size else 0
        sections.append(html.Section(
            f"Neighborhood of {os.path.basename(path)}",
            text=f"{used:,} anchors in the segmented genome. Fold enrichment of each label at each offset "
                 "(strand-aware: upstream on the left); numbers in " + stem + ".tsv.",
            figures=[html.Figure(stem, "Neighborhood fold enrichment.")]))

    # one locus
    if request.region is not None:
        write.figure("locus", _locus_figure(request, segmentation, names, colors))
        sections.append(html.Section("Locus", figures=[html.Figure(
            "locus", "The calls over the region, each label's posterior and the boundary posteriors.")]))

    intro = (f"Model {spec.name} ({spec.path}), {C} labels, bins of {spec.bin_size} bp; segments "
             f"{request.segments}: {n_segments:,} segments on {len(segmentation)} contig(s), {genome:,} bp.")
    write.text("index.html", html.page(f"flashseg report: {spec.name}", intro, sections,
                                       dict(zip(names, colors))))
    return output_names(request)


def _mean_signals(files, segmentation, C):
    """Column names and (C, columns) means of every column of the files over each label's bins."""
    from ..io.observations import open_observations
    from ..io.tracks import open_tracks

    all_columns, all_means = [], []
    for kind, path in files:
        reader = open_observations(path) if kind == "observations" else open_tracks(path)
        with reader:
            columns = list(reader.features if kind == "observations" else reader.labels)
            means = enr.LabelMeans(C, len(columns))
            absent = [c for c in segmentation if c not in reader]
            if len(absent) == len(segmentation):
                raise DataError("none of the contigs of the segments is in this file", file=path)
            if absent:
                log.warning("%s: %d contig(s) of the segments are not in this file: %s", path, len(absent),
                            ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""))
            for contig, seg in segmentation.items():
                if contig not in reader:
                    continue
                n = reader.n_bins(contig)
                for a in range(0, n, READ_ROWS):
                    b = min(n, a + READ_ROWS)
                    labels = enr.bin_labels(seg, a, b, reader.bin_size)
                    if not (labels >= 0).any():
                        continue
                    values = reader.read(contig, a, b) if kind == "observations" else reader.read_raw(contig, a, b)
                    means.add(labels, values)
        prefix = f"{os.path.basename(path)}:" if len(files) > 1 else ""
        all_columns += [prefix + c for c in columns]
        all_means.append(means.means)
    return all_columns, np.hstack(all_means)


def _locus_figure(request: ReportRequest, segmentation, names, colors):
    from . import figures

    region = request.region
    if region.contig not in segmentation:
        raise DataError(f"--region {region.contig}:{region.start + 1}-{region.end}: contig {region.contig} "
                        "has no segments", file=request.segments)
    seg = segmentation[region.contig]
    start, end = region.start, min(region.end, int(seg.end[-1]))
    if start >= end:
        raise DataError(f"--region starts at {region.start + 1}, after the last segment of {region.contig} "
                        f"(which ends at {int(seg.end[-1])})", file=request.segments)
    keep = (seg.end > start) & (seg.start < end)
    calls = (np.maximum(seg.start[keep], start), np.minimum(seg.end[keep], end), seg.label[keep])
    posteriors = _region_posteriors(request.posteriors, region.contig, start, end, names) \
        if request.posteriors else None
    boundaries = None
    if request.boundaries:
        from ..io.annotations import read_bedgraph_region

        boundaries = read_bedgraph_region(request.boundaries, region.contig, start, end)
    return figures.locus(region.contig, start, end, names, colors, calls, posteriors, boundaries,
                         f"boundary posterior\n{os.path.basename(request.boundaries)}" if boundaries else "")


def _region_posteriors(path, contig, start, end, names):
    """(x, P): bin centres (bp) and (n, C) label posteriors of the bins over [start, end), model order."""
    from ..io.tracks import open_tracks

    with open_tracks(path) as post:
        missing = [n for n in names if n not in post.labels]
        if missing:
            raise DataError(f"label {missing[0]} of the model is not in this posteriors file "
                            f"(it has {', '.join(post.labels)})", file=path)
        if contig not in post:
            raise DataError(f"contig {contig} of --region is not in this posteriors file", file=path)
        bs = post.bin_size
        first, last = start // bs, min(post.n_bins(contig), -(-end // bs))
        if last <= first:
            raise DataError(f"--region lies beyond the {post.n_bins(contig)} bins of {contig}", file=path)
        columns = [post.labels.index(n) for n in names]
        P = np.asarray(post.read_raw(contig, first, last), dtype=np.float64)[:, columns]
    x = (np.arange(first, last) + 0.5) * bs
    if len(x) > MAX_LOCUS_POINTS:
        factor = -(-len(x) // MAX_LOCUS_POINTS)
        cut = len(x) // factor * factor
        x = x[:cut].reshape(-1, factor).mean(axis=1)
        P = P[:cut].reshape(-1, factor, P.shape[1]).mean(axis=1)
    return x, P
