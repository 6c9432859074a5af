"""``flashseg gather``: concatenate per-contig outputs into one file in FASTA order.

Workflows decode each contig in its own job (``decode --contig``) and gather
the pieces: the result equals a whole-genome run's output. Provenance lines
shared by every input are kept (the per-job ``command=`` lines are replaced
by the gather command), the ``#`` column header must be the same in all
inputs, each contig must come from exactly one input, and a ``.gz`` target
is BGZF with a tabix index, so no external bgzip or tabix is needed.
Works for BED9+4, samples BED4+1 and bedGraph alike.

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
    """(provenance lines, column header or None, contigs in order) of one input.

    Lines of one contig must be contiguous and sorted: by start, or for a
    posterior-samples file by (sample, start).
    """
    from ..errors import DataError
    from ..io.bed import SAMPLES_HEADER, open_text

    provenance, header, contigs = [], None, []
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
                    chrom, start = fields[0], int(fields[1])
                    int(fields[2])
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
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", file=path) from None
    return provenance, header, contigs


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
              help="Combined file ('-' = stdout; .gz = BGZF + tabix index). Posterior-samples "
                   "files (ordered by sample, then position) get BGZF without an index: tabix needs "
                   "position order.")
@click.option("--fasta", "fasta_path", type=existing_file(), help="Order contigs as in this FASTA.")
def gather(inputs, output, fasta_path):
    """Concatenate per-contig BED/bedGraph outputs in FASTA order under one header.

    Takes BED9+4 calls, bedGraph, and posterior-samples BED4+1 files
    (`#chrom start end name sample`); each file's own line order within a
    contig is kept.
    """
    from ..errors import DataError
    from ..io.bed import SAMPLES_HEADER
    from ..io.fasta import chr_hint, open_genome
    from ..io.output import claim, index_companions, open_text_output, publishing, text_companions

    claim([("-o/--output", output, text_companions(output))],
          [("INPUT", path, []) for path in inputs]
          + [("--fasta", fasta_path, index_companions(fasta_path, "fasta") if fasta_path else [])])
    scans = [(path, *_scan(path)) for path in inputs]
    owner = {}
    order = []
    for path, _prov, _header, contigs in scans:
        for contig in contigs:
            if contig in owner:
                raise DataError(f"contig also in {owner[contig]}", file=path, contig=contig)
            owner[contig] = path
            order.append(contig)
    headers = {header for _p, _pr, header, _c in scans if header is not None}
    if len(headers) > 1:
        first, other = [(p, h) for p, _pr, h, _c in scans if h is not None][:1], None
        for path, _pr, header, _c in scans:
            if header is not None and header != first[0][1]:
                other = path
                break
        raise DataError(f"column header differs from {first[0][0]}'s", file=other)
    header = headers.pop() if headers else None
    if fasta_path:
        with open_genome(fasta_path) as genome:
            for contig in order:
                if contig not in genome:
                    raise DataError("contig is not in the FASTA " + fasta_path + chr_hint(contig, genome.names),
                                    file=owner[contig], contig=contig)
            order = [name for name in genome.names if name in owner]
    shared = [line for line in scans[0][1] if not line.startswith("##flashseg command=")
              and all(line in s[1] for s in scans[1:])]
    if shared or header is not None:
        shared.append(f"##flashseg command={command_line()}")
    # tabix indexes position-sorted files only; samples restart at 0 per sample.
    tabix_preset = None if header == SAMPLES_HEADER else "bed"
    with publishing(), open_text_output(output, tabix_preset=tabix_preset) as stream:
        for line in shared:
            stream.write(line + "\n")
        if header is not None:
            stream.write(header + "\n")
        for contig in order:
            stream.writelines(_lines_of(owner[contig], contig))
