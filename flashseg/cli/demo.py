"""``flashseg demo``: decode the example bundled inside the package.

The example (``flashseg/data/demo/``) is a small genome simulated by
``flashseg simulate`` from ``configs/models/demo.yaml`` (see data/README.md
in the repository): two contigs, 200 bp bins, four chromatin-like
labels, with the true segmentation in ``truth.bed`` to compare against.
"""
from __future__ import annotations

import os

import click

from ._common import default_threads, progress_enabled

SEGMENTS = "segments.bed"
CHANGES = "changes.bedgraph"
STATS = "stats.tsv"


def demo_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "demo")


def _agreement(truth_path: str, bed_path: str) -> float:
    """Fraction of bp where the called label equals the true one."""
    from ..io.bed import read_bed_records

    def intervals(path):
        out = {}
        for _, chrom, s, e, fields in read_bed_records(path):
            out.setdefault(chrom, []).append((s, e, fields[3]))
        return out

    truth, called = intervals(truth_path), intervals(bed_path)
    same = total = 0
    for chrom, segs in truth.items():
        other = called.get(chrom, [])
        j = 0
        for s, e, name in segs:
            total += e - s
            while j < len(other) and other[j][1] <= s:
                j += 1
            k = j
            while k < len(other) and other[k][0] < e:
                if other[k][2] == name:
                    same += min(e, other[k][1]) - max(s, other[k][0])
                k += 1
    return same / total if total else float("nan")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--outdir", default="flashseg-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to write the demo's outputs.")
@click.option("--progress/--no-progress", "progress", default=None, help="Progress on stderr.")
def demo(outdir, progress):
    """Decode the bundled example genome; no arguments needed."""
    from .decode import DecodeOptions, run_decode

    data = demo_dir()
    os.makedirs(outdir, exist_ok=True)
    segments = os.path.join(outdir, SEGMENTS)
    changes = os.path.join(outdir, CHANGES)
    stats = os.path.join(outdir, STATS)
    run_decode(DecodeOptions(
        model_path=os.path.join(data, "model.yaml"), track_specs=[(os.path.join(data, "tracks.h5"), 1.0)],
        fasta_path=os.path.join(data, "genome.fa"), output=segments, stats_path=stats, changes_path=changes,
        gap_min=1000, threads=default_threads(), show_progress=progress_enabled(progress)))
    click.echo(f"flashseg demo: decoded the example in {data}")
    click.echo(f"  segments (BED9+4):            {segments}")
    click.echo(f"  change posteriors (bedGraph): {changes}")
    click.echo(f"  per-contig summary (TSV):     {stats}")
    agree = _agreement(os.path.join(data, "truth.bed"), segments)
    click.echo(f"  agreement with the simulated truth: {100 * agree:.1f}% of bp")
    click.echo("first lines of the BED (after its ##flashseg provenance lines):")
    with open(segments, encoding="utf-8") as handle:
        shown = 0
        for line in handle:
            if line.startswith("##"):
                continue
            click.echo("  " + line.rstrip("\n"))
            shown += 1
            if shown > 8:
                break
