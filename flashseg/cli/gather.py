"""``flashseg gather``: concatenate per-contig outputs into one file in FASTA order.

Workflows decode each contig in its own job (``decode --contig``) and gather
the pieces: the result equals a whole-genome run's output. Provenance lines
shared by every input are kept (the per-job ``command=`` lines are replaced
by the gather command), the ``#`` column header must be the same in all
inputs, each contig must come from exactly one input, and a ``.gz`` target
is BGZF with a tabix index, so no external bgzip or tabix is needed.
Works for BED9+4, samples BED4+1 and bedGraph alike. A ``.bb`` target is a
bigBed of BED9+4 calls, a ``.bw`` target a bigWig of bedGraph inputs
(docs/formats.md, "bigBed and bigWig outputs"): contig sizes from
``--fasta``, else each contig's last end, with a warning.

Posterior-samples files (header ``#chrom start end name sample``; docs/formats.md, "Posterior samples")
are ordered by contig, then sample, then position: starts go back to 0 at
every new sample, so they are checked for (sample, start) order instead of
start order, and a ``.gz`` target is BGZF without a tabix index (tabix
needs position order; zcat and gzip read it as usual).
"""
from __future__ import annotations

import click

from ._common import command_line, existing_file, output_path


def _scan(path):
    """(provenance lines, column header or None, contigs in order, {contig: largest end}) of one input.

    Lines of one contig must be contiguous and sorted: by start, or for a
    posterior-samples file by (sample, start).
    """
    from ..errors import DataError
    from ..io.bed import SAMPLES_HEADER, open_text

    provenance, header, contigs = [], None, []
    ends: dict[str, int] = {}
    seen = set()
    current, last_key = None, None
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if line.startswith("##"):
                    provenance.append(line.rstrip("\n"))
                    continue
                if line.startswith("#"):
                    if header is not None and line.rstrip("\n") != header:
                        raise DataError(f"line {number}: a second, different header line", file=path)
                    header = line.rstrip("\n")
                    continue
                if not line.strip():
                    continue
                samples = header == SAMPLES_HEADER
                fields = line.rstrip("\n").split("\t", 5 if samples else 3)
                try:
                    chrom, start, end = fields[0], int(fields[1]), int(fields[2])
                except (IndexError, ValueError):
                    raise DataError(f"line {number}: not a BED/bedGraph line", file=path) from None
                if samples:
                    try:
                        sample = int(fields[4])
                    except (IndexError, ValueError):
                        raise DataError(f"line {number}: no integer sample number in column 5",
                                        file=path) from None
                    key = (sample, start)
                else:
                    key = (start,)
                if chrom != current:
                    if chrom in seen:
                        raise DataError(f"line {number}: contig lines are not contiguous", file=path,
                                        contig=chrom)
                    seen.add(chrom)
                    contigs.append(chrom)
                    current, last_key = chrom, None
                if last_key is not None and key < last_key:
                    order = "by sample, then start" if samples else "by start"
                    raise DataError(f"line {number}: not sorted {order}", file=path, contig=chrom)
                last_key = key
                if end > ends.get(chrom, 0):
                    ends[chrom] = end
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", file=path) from None
    return provenance, header, contigs, ends


def _lines_of(path, contig):
    from ..io.bed import open_text

    with open_text(path) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            if line.split("\t", 1)[0] == contig:
                yield line if line.endswith("\n") else line + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=existing_file())
@click.option("-o", "--output", default="-", type=output_path(), show_default=True,
              help="Combined file ('-' = stdout; .gz = BGZF + tabix index; .bb = bigBed of BED9+4 calls, "
                   ".bw = bigWig of bedGraphs). Posterior-samples files (ordered by sample, then position) get "
                   "BGZF without an index: tabix needs position order.")
@click.option("--fasta", "fasta_path", type=existing_file(),
              help="Order contigs as in this FASTA (and take a .bb/.bw's contig sizes from it).")
def gather(inputs, output, fasta_path):
    """Concatenate per-contig BED/bedGraph outputs in FASTA order under one header.

    Takes BED9+4 calls, bedGraph, and posterior-samples BED4+1 files
    (`#chrom start end name sample`); each file's own line order within a
    contig is kept.
    """
    from ..errors import DataError
    from ..io.bed import BED_HEADER, SAMPLES_HEADER
    from ..io.bigfiles import BIGBED, BIGWIG, browser_format, check_target, open_browser_output
    from ..io.fasta import chr_hint, open_genome
    from ..io.output import claim, index_companions, open_text_output, publishing, text_companions

    kind = browser_format(output)
    check_target("-o/--output", output, kind)
    claim([("-o/--output", output, text_companions(output))],
          [("INPUT", path, []) for path in inputs]
          + [("--fasta", fasta_path, index_companions(fasta_path, "fasta") if fasta_path else [])])
    scans = [(path, *_scan(path)) for path in inputs]
    owner = {}
    order = []
    for path, _prov, _header, contigs, _ends in scans:
        for contig in contigs:
            if contig in owner:
                raise DataError(f"contig also in {owner[contig]}", file=path, contig=contig)
            owner[contig] = path
            order.append(contig)
    headers = {header for _p, _pr, header, _c, _e in scans if header is not None}
    if len(headers) > 1:
        first, other = [(p, h) for p, _pr, h, _c, _e in scans if h is not None][:1], None
        for path, _pr, header, _c, _e in scans:
            if header is not None and header != first[0][1]:
                other = path
                break
        raise DataError(f"column header differs from {first[0][0]}'s", file=other)
    header = headers.pop() if headers else None
    if kind == BIGBED and header != BED_HEADER:
        raise DataError("a bigBed holds BED9+4 segment calls (flashseg decode -o); these inputs are "
                        + ("posterior samples" if header == SAMPLES_HEADER else "not (no BED9+4 header line)"),
                        file=output)
    if kind == BIGWIG and header is not None:
        raise DataError("a bigWig holds bedGraph lines (flashseg decode --changes, --boundaries); these inputs "
                        "have a column header", file=output)
    sizes = {}
    if fasta_path:
        with open_genome(fasta_path) as genome:
            for contig in order:
                if contig not in genome:
                    raise DataError("contig is not in the FASTA " + fasta_path + chr_hint(contig, genome.names),
                                    file=owner[contig], contig=contig)
            order = [name for name in genome.names if name in owner]
            sizes = {name: genome.length(name) for name in order}
    elif kind is not None:
        import logging

        for *_, ends in scans:
            sizes.update(ends)
        logging.getLogger(__name__).warning(
            "%s: no --fasta: each contig's size is taken as its last end in the inputs", output)
    shared = [line for line in scans[0][1] if not line.startswith("##flashseg command=")
              and all(line in s[1] for s in scans[1:])]
    if shared or header is not None:
        shared.append(f"##flashseg command={command_line()}")
    # tabix indexes position-sorted files only; samples restart at 0 per sample.
    tabix_preset = None if header == SAMPLES_HEADER else "bed"
    target = open_browser_output(output, sizes) if kind else open_text_output(output, tabix_preset=tabix_preset)
    with publishing(), target as stream:
        for line in shared:
            stream.write(line + "\n")
        if header is not None:
            stream.write(header + "\n")
        for contig in order:
            stream.writelines(_lines_of(owner[contig], contig))
