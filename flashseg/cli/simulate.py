"""``flashseg simulate``: a synthetic genome drawn from a model, with its truth.

For each ``--contig NAME:LENGTH`` (bp): a segmentation is drawn exactly from
the model's prior (``flashseg.core.sample`` with zero emissions). A model
with an ``emissions:`` section gets each bin's features drawn from it
(``observations.h5``). Otherwise each bin gets an observation
``y ~ Normal(level[label], 1)`` with levels ``--signal`` apart
(``level[c] = c * signal``), and the tracks store the Gaussian
log-likelihood of ``y`` under every label. Written to ``-o DIR``:

- ``tracks.h5``  emission tracks (score log_likelihood; docs/formats.md, "Emission tracks"), or
- ``observations.h5`` with an emissions section (docs/formats.md, "Observations");
- ``truth.bed``  the drawn segments, ``#chrom start end name``;
- ``genome.fa``  random ACGT of each length (+ ``.fai``), with an N run of
  ``--n-gap`` bp in the middle of each contig if asked;
- ``model.yaml`` a copy of the model, so the directory decodes on its own;
- ``reads.bam`` (+ ``.bai``) with ``--reads-depth D``: single-end reads whose
  per-bin depth is Poisson around ``mean[label] * D`` from the model's
  coverage section (``flashseg.io.simreads``).

The same ``--seed`` gives the same files. Everything is generated chunk by
chunk, so large genomes need little memory.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import zlib
from typing import TYPE_CHECKING

import click

from ._common import FiniteFloat, compile_notice, existing_file, load_model_spec, wrote
from ._common import BAM_CIGAR_MAX, INT64_MAX

if TYPE_CHECKING:   # annotations only: numpy is imported where it is used
    import numpy as np

_CHUNK_BINS = 1 << 16
_FASTA_LINE = 60


#: The longest contig simulate draws (bp): beyond every known chromosome.
MAX_CONTIG_BP = 1 << 34


def parse_contig(text: str) -> tuple[str, int]:
    name, sep, length = text.rpartition(":")
    try:
        value = int(length.replace(",", "").replace("_", ""))
    except ValueError:
        value = 0
    if not sep or not name or "/" in name or value < 1:
        raise click.BadParameter(f"{text!r}: expected NAME:LENGTH with LENGTH >= 1 bp", param_hint="--contig")
    if value > MAX_CONTIG_BP:
        raise click.BadParameter(f"{name}: at most {MAX_CONTIG_BP} bp (longer than any chromosome), got {value}",
                                 param_hint="--contig")
    from ..io.names import name_problem

    problem = name_problem(name)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--contig")
    return name, value


def contig_rng(seed: int, name: str) -> np.random.Generator:
    import numpy as np

    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def observations_log_likelihood(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """log N(y; level_c, 1) for every label: (n, C)."""
    return -0.5 * (y[:, None] - levels[None, :]) ** 2 - 0.5 * math.log(2 * math.pi)


def labels_of_bins(segments, a: int, b: int) -> np.ndarray:
    """Per-bin labels for bins [a, b) from sorted, tiling segments."""
    import numpy as np

    start, end, label = segments.start, segments.end, segments.label
    i = int(np.searchsorted(end, a, side="right"))
    j = int(np.searchsorted(start, b, side="left"))
    s = np.maximum(start[i:j], a)
    e = np.minimum(end[i:j], b)
    return np.repeat(label[i:j], e - s)


def write_fasta_contig(handle, name: str, length: int, rng: np.random.Generator, gap: tuple[int, int] | None):
    import numpy as np

    handle.write(f">{name}\n")
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    block = _FASTA_LINE * 20000
    for a in range(0, length, block):
        b = min(length, a + block)
        seq = bases[rng.integers(0, 4, b - a)]
        if gap is not None:
            lo, hi = max(a, gap[0]), min(b, gap[1])
            if hi > lo:
                seq[lo - a:hi - a] = ord("N")
        raw = seq.tobytes()
        handle.write("\n".join(raw[i:i + _FASTA_LINE].decode("ascii")
                               for i in range(0, len(raw), _FASTA_LINE)) + "\n")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "model_path", required=True, type=existing_file(), help="Model YAML.")
@click.option("--contig", "contigs", multiple=True, required=True, metavar="NAME:LENGTH",
              help="A contig of LENGTH bp (repeatable).")
@click.option("--signal", type=FiniteFloat(min=0.0), default=2.0, show_default=True,
              help="Distance between adjacent labels' observation levels (in units of the noise sd); "
                   "models without an emissions section only.")
@click.option("--n-gap", type=click.IntRange(0, INT64_MAX), default=0, show_default=True,
              help="Put a run of this many N in the middle of each contig's sequence.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["float16", "float32", "float64"]), default="float32", show_default=True)
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="lzf", show_default=True)
@click.option("--reads-depth", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Also write reads.bam: D reads per bin at copy ratio 1, scaled by each label's coverage mean.")
@click.option("--read-length", type=click.IntRange(1, BAM_CIGAR_MAX), default=100, show_default=True,
              help="Aligned length of the simulated reads (bp).")
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Output directory: new or empty, unless --force.")
@click.option("--force", is_flag=True, help="Write into a directory that holds other files (ours are replaced).")
def simulate(model_path, contigs, signal, n_gap, seed, dtype, compression, reads_depth, read_length, outdir, force):
    """Draw a genome from MODEL: tracks.h5 (or observations.h5), truth.bed, genome.fa (reproducible by --seed)."""
    from ..errors import DataError, UsageError
    from ..io.output import claim, publishing, resolved

    parsed = [parse_contig(c) for c in contigs]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise click.BadParameter("contig names must be distinct", param_hint="--contig")
    spec = load_model_spec(model_path)
    if spec.emissions is not None:
        ctx = click.get_current_context()
        given = [f"--{name}" for name in ("signal", "dtype") if ctx.get_parameter_source(name)
                 is click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{' and '.join(given)} shape tracks.h5; this model has an emissions section, "
                                   "so simulate draws observations.h5 from it")
    if reads_depth is not None and spec.coverage is None:
        raise DataError("--reads-depth needs a model with a coverage section", file=model_path)
    evidence = "observations.h5" if spec.emissions is not None else "tracks.h5"
    files = [evidence, "truth.bed", "genome.fa", "model.yaml"] + (["reads.bam"] if reads_depth else [])
    targets = {name: os.path.join(outdir, name) for name in files}
    if resolved(targets["model.yaml"]) == resolved(spec.path):
        del targets["model.yaml"]      # the model is already there: nothing to copy
    beside = {"genome.fa": ".fai", "reads.bam": ".bai"}     # the indexes written next to them
    claim([("-o/--outdir", path, [path + beside[name]] if name in beside else []) for name, path in targets.items()],
          [("-m/--model", path, []) for path in spec.input_files])
    if os.path.isdir(outdir) and os.listdir(outdir) and not force:
        raise UsageError(f"-o/--outdir {outdir} is not empty: simulate writes only into a new or empty "
                         "directory (--force writes into it, replacing its " + ", ".join(files) + ")")
    os.makedirs(outdir, exist_ok=True)
    from ..core.api import warm_up

    from .. import bins as binning
    from ._common import check_memory

    # the prior is sampled a contig at a time: its chunks' checkpoints count like decode's
    check_memory(spec.model, 32768, 1, "this simulation",
                 n_bins=max(binning.n_bins(length, spec.bin_size) for _, length in parsed))
    with compile_notice():
        warm_up("posterior", n_samples=1)
    with publishing():
        drawn = simulate_genome(spec, parsed, outdir, signal=signal, n_gap=n_gap, seed=seed, dtype=dtype,
                                compression=compression, copy_model="model.yaml" in targets)
        if reads_depth is not None:
            from ..io.simreads import simulate_reads

            simulate_reads(targets["reads.bam"], parsed, drawn, spec, reads_depth,
                           read_length=read_length, seed=seed)
    # index the FASTA now, so the directory also works where it is read-only later
    from ..io.fasta import open_genome

    open_genome(targets["genome.fa"]).close()
    wrote(f"wrote {os.path.join(outdir, evidence)}, truth.bed, genome.fa, model.yaml"
          f"{', reads.bam' if reads_depth is not None else ''} ({len(parsed)} contigs)")


@contextlib.contextmanager
def _named_errors(target):
    """Write errors of a file written by hand (the FASTA) name its target."""
    from ..io.output import write_error

    try:
        yield
    except OSError as exc:
        raise write_error(exc, target) from None


def simulate_genome(spec, contigs, outdir, *, signal=2.0, n_gap=0, seed=0, dtype="float32",
                    compression="lzf", chunk_bins=_CHUNK_BINS, copy_model=True):
    """Write the files; returns {contig: drawn Segments} (for simulated reads)."""
    import numpy as np

    from .. import bins

    from ..core import sample
    from ..errors import DataError
    from ..io.bed import provenance_lines
    from ..io.output import atomic_path, open_text_output
    from ..io.observations import ObservationsWriter
    from ..io.tracks import TracksWriter
    from .._version import __version__

    bin_size = spec.bin_size
    C = len(spec.label_names)
    levels = np.arange(C, dtype=np.float64) * float(signal)
    fasta_target = os.path.join(outdir, "genome.fa")
    drawn = {}
    emissions = spec.emissions
    if emissions is not None:
        evidence = ObservationsWriter(os.path.join(outdir, "observations.h5"), features=emissions.features,
                                      kind=emissions.kind, bin_size=bin_size, compression=compression)
    else:
        evidence = TracksWriter(os.path.join(outdir, "tracks.h5"), labels=spec.label_names, bin_size=bin_size,
                                score="log_likelihood", dtype=dtype, compression=compression)
    with evidence as tracks, \
            open_text_output(os.path.join(outdir, "truth.bed"), tabix_preset=None) as truth, \
            atomic_path(fasta_target) as fasta_temp:
        for line in provenance_lines(version=__version__, model_path=spec.path, model_sha256=spec.sha256,
                                     seed=seed):
            truth.write(line + "\n")
        truth.write("#chrom\tstart\tend\tname\n")
        with _named_errors(fasta_target), open(fasta_temp, "w", encoding="ascii") as fasta:
            for name, length in contigs:
                n_bins = bins.n_bins(length, bin_size)
                zero = lambda a, b: np.zeros((b - a, C))  # noqa: E731 - prior: no evidence
                try:
                    segments = sample(spec.model, zero, n_bins, 1, seed=seed, name=name)[0]
                except DataError as exc:
                    raise exc.located(file=spec.path, contig=name) from None
                drawn[name] = segments
                rng = contig_rng(seed, name)
                tracks.add_contig(name, n_bins, length_bp=length)
                for a in range(0, n_bins, chunk_bins):
                    b = min(n_bins, a + chunk_bins)
                    lab = labels_of_bins(segments, a, b)
                    if emissions is not None:
                        tracks.write(name, a, emissions.sample(lab, rng))
                    else:
                        y = levels[lab] + rng.standard_normal(b - a)
                        tracks.write(name, a, observations_log_likelihood(y, levels))
                starts = bins.to_bp(segments.start, bin_size, length)
                ends = bins.to_bp(segments.end, bin_size, length)
                truth.write("".join(f"{name}\t{s}\t{e}\t{spec.label_names[c]}\n" for s, e, c in
                                    zip(starts.tolist(), ends.tolist(), np.asarray(segments.label).tolist())))
                gap = None
                if n_gap:
                    lo = max(0, (length - n_gap) // 2)
                    gap = (lo, min(length, lo + n_gap))
                write_fasta_contig(fasta, name, length, rng, gap)
    if copy_model:
        with atomic_path(os.path.join(outdir, "model.yaml")) as temp:
            shutil.copyfile(spec.path, temp)
    return drawn
