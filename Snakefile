"""flashseg scattered over contigs: one decode job per contig, gathered into one BED.

    snakemake --cores 4                                  # settings: configs/workflow.yaml
    snakemake --workflow-profile profiles/slurm          # on a SLURM cluster

Per sample: faidx -> (coverage tracks from a BAM) -> the list of contigs a
whole-genome `flashseg decode` would decode (`flashseg info --contigs`, a
checkpoint, so FASTA contigs absent from the tracks are skipped) -> one
`flashseg decode --contig` per contig -> `flashseg gather` into
<outdir>/<sample>.bed.gz (BGZF + tabix), with `gather: bigbed: true` also into
the bigBed <outdir>/<sample>.bb for genome browsers, and with `decode: samples: N` the
posterior samples into <outdir>/<sample>.samples.bed. Samples are seeded per contig, so
the gathered result equals one whole-genome decode apart from `##` lines.
"""
import shlex


configfile: "configs/workflow.yaml"


if not config.get("model") and not config.get("samples"):
    # Nothing of the user's: the bundled demo. It is never merged into a run
    # that names its own model or samples.
    import yaml

    with open("configs/demo-workflow.yaml") as _handle:
        config.update(yaml.safe_load(_handle))
if not config.get("model"):
    raise ValueError("configs: give `model:` (the model YAML) for your samples")
if not config.get("samples"):
    raise ValueError("configs: give `samples:` (each with `tracks:` and/or `bam:`) for your model")

OUT = config["outdir"]
MODEL = config["model"]
FASTA = config.get("fasta") or None
SAMPLES = config["samples"] or {}
COV = config.get("coverage") or {}
DEC = config.get("decode") or {}
GATHER = config.get("gather") or {}
FAI = f"{FASTA}.fai" if FASTA else None
CONDA_ENV = "configs/envs/flashseg.yaml"
N_SAMPLES = int(DEC.get("samples") or 0)
N_GPU = int(DEC.get("gpu") or 0)
BIGBED = bool(GATHER.get("bigbed"))

for _name, _entry in SAMPLES.items():
    if not any((_entry or {}).get(key) for key in ("bam", "tracks", "observations")):
        raise ValueError(f"configs: sample {_name!r} needs `tracks:`, `observations:` or `bam:` (or several)")


wildcard_constraints:
    sample="[^/]+",
    contig="[^/]+",


def _split_weight(spec):
    """'file.h5:0.5' -> ('file.h5', '0.5'); no weight -> (spec, None)."""
    path, sep, weight = str(spec).rpartition(":")
    if sep:
        try:
            float(weight)
            return path, weight
        except ValueError:
            pass
    return str(spec), None


def track_specs(sample):
    """-t arguments of a sample: its tracks, plus its coverage tracks when it has a BAM."""
    entry = SAMPLES[sample] or {}
    specs = [str(t) for t in entry.get("tracks") or []]
    if entry.get("bam"):
        specs.append(f"{OUT}/{sample}/coverage.h5")
    return specs


def observation_files(sample):
    """--observations files of a sample (scored with the model's emissions section)."""
    return [str(o) for o in (SAMPLES[sample] or {}).get("observations") or []]


def track_files(wildcards):
    return [_split_weight(spec)[0] for spec in track_specs(wildcards.sample)] + observation_files(wildcards.sample)


def track_args(wildcards):
    return " ".join([f"-t {shlex.quote(spec)}" for spec in track_specs(wildcards.sample)]
                    + [f"--observations {shlex.quote(o)}" for o in observation_files(wildcards.sample)])


def coverage_options():
    options = [f"--min-mapq {int(COV.get('min_mapq', 20))}"]
    if COV.get("fragments"):
        options.append("--fragments")
    if COV.get("depth"):
        options.append(f"--depth {float(COV['depth'])}")
    if COV.get("blacklist"):
        options.append(f"--blacklist {shlex.quote(str(COV['blacklist']))}")
    return " ".join(options)


def decode_options():
    options = [f"--method {DEC.get('method', 'viterbi')}", f"--seed {int(DEC.get('seed') or 0)}",
               "--device cuda" if N_GPU else "--device cpu"]
    return " ".join(options + [str(DEC.get("extra") or "")]).strip()


def contigs_of(sample):
    """Contig names from the checkpoint's list (waits for it at DAG time)."""
    listing = checkpoints.contigs.get(sample=sample).output[0]
    with open(listing) as handle:
        return [line.split("\t")[0].strip() for line in handle if line.strip() and not line.startswith("#")]


def per_contig(kind):
    """Per-contig outputs of one kind ("contigs" = calls, "samples") in the checkpoint's order."""
    def inputs(wildcards):
        return [f"{OUT}/{wildcards.sample}/{kind}/{name}.bed" for name in contigs_of(wildcards.sample)]

    return inputs


def genome():
    """The FASTA and its index as named inputs (none without a FASTA)."""
    return {"fasta": FASTA, "fai": FAI} if FASTA else {}


def fasta_option(wildcards, input):
    return f"--fasta {shlex.quote(input.fasta)}" if FASTA else ""


def decode_resources():
    resources = {"mem_mb": int(DEC.get("mem_mb", 4000)), "runtime": int(DEC.get("runtime", 60))}
    if N_GPU:
        resources["gpu"] = N_GPU
    return resources


DECODE_OUTPUTS = {"bed": f"{OUT}/{{sample}}/contigs/{{contig}}.bed"}
if N_SAMPLES:
    DECODE_OUTPUTS["samples"] = f"{OUT}/{{sample}}/samples/{{contig}}.bed"


rule all:
    input:
        expand(f"{OUT}/{{sample}}.bed.gz", sample=SAMPLES),
        expand(f"{OUT}/{{sample}}.samples.bed", sample=SAMPLES) if N_SAMPLES else [],
        expand(f"{OUT}/{{sample}}.bb", sample=SAMPLES) if BIGBED else [],


if FASTA:

    rule faidx:
        input:
            FASTA,
        output:
            FAI,
        log:
            f"{OUT}/logs/faidx.log",
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        shell:
            "python -c 'import sys, pyfaidx; pyfaidx.Faidx(sys.argv[1]).close()' {input:q} > {log:q} 2>&1"


rule coverage:
    input:
        unpack(lambda wildcards: genome()),
        bam=lambda wildcards: SAMPLES[wildcards.sample]["bam"],
        model=MODEL,
    output:
        f"{OUT}/{{sample}}/coverage.h5",
    log:
        f"{OUT}/logs/{{sample}}/coverage.log",
    params:
        options=coverage_options(),
        fasta=fasta_option,
    conda:
        CONDA_ENV
    threads: int(COV.get("threads", 2))
    resources:
        mem_mb=int(COV.get("mem_mb", 4000)),
        runtime=int(COV.get("runtime", 60)),
    shell:
        "flashseg -v tracks coverage --bam {input.bam:q} {params.fasta} -m {input.model:q}"
        " -o {output:q} --threads {threads} {params.options} > {log:q} 2>&1"


checkpoint contigs:
    input:
        unpack(lambda wildcards: genome()),
        tracks=track_files,
        model=MODEL,
    output:
        f"{OUT}/{{sample}}/contigs.txt",
    log:
        f"{OUT}/logs/{{sample}}/contigs.log",
    params:
        tracks=track_args,
        fasta=fasta_option,
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "flashseg info --contigs -m {input.model:q} {params.tracks} {params.fasta}"
        " > {output:q} 2> {log:q}"


rule decode_contig:
    input:
        unpack(lambda wildcards: genome()),
        tracks=track_files,
        model=MODEL,
        listing=f"{OUT}/{{sample}}/contigs.txt",
    output:
        **DECODE_OUTPUTS,
    log:
        f"{OUT}/logs/{{sample}}/decode/{{contig}}.log",
    params:
        tracks=track_args,
        options=decode_options(),
        fasta=fasta_option,
    conda:
        CONDA_ENV
    threads: int(DEC.get("threads", 1))
    resources:
        **decode_resources(),
    shell:
        "flashseg decode -m {input.model:q} {params.tracks} {params.fasta} --contig {wildcards.contig:q}"
        " -o {output.bed:q} --threads {threads} {params.options} " + (
            f"--samples {N_SAMPLES} --samples-out {{output.samples:q}}" if N_SAMPLES else ""
        ) + " 2> {log:q}"


rule gather:
    input:
        unpack(lambda wildcards: genome()),
        beds=per_contig("contigs"),
    output:
        bed=f"{OUT}/{{sample}}.bed.gz",
        tbi=f"{OUT}/{{sample}}.bed.gz.tbi",
    log:
        f"{OUT}/logs/{{sample}}/gather.log",
    params:
        fasta=fasta_option,
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=int(GATHER.get("mem_mb", 2000)),
        runtime=int(GATHER.get("runtime", 30)),
    shell:
        "flashseg gather {input.beds:q} {params.fasta} -o {output.bed:q} 2> {log:q}"


rule gather_bigbed:
    input:
        unpack(lambda wildcards: genome()),
        beds=per_contig("contigs"),
    output:
        # the same calls as <sample>.bed.gz, for genome browsers (contig sizes from the FASTA)
        bb=f"{OUT}/{{sample}}.bb",
    log:
        f"{OUT}/logs/{{sample}}/gather_bigbed.log",
    params:
        fasta=fasta_option,
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=int(GATHER.get("mem_mb", 2000)),
        runtime=int(GATHER.get("runtime", 30)),
    shell:
        "flashseg gather {input.beds:q} {params.fasta} -o {output.bb:q} 2> {log:q}"


rule gather_samples:
    input:
        unpack(lambda wildcards: genome()),
        beds=per_contig("samples"),
    output:
        # plain text: samples are ordered by sample, then position, which tabix cannot index
        bed=f"{OUT}/{{sample}}.samples.bed",
    log:
        f"{OUT}/logs/{{sample}}/gather_samples.log",
    params:
        fasta=fasta_option,
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=int(GATHER.get("mem_mb", 2000)),
        runtime=int(GATHER.get("runtime", 30)),
    shell:
        "flashseg gather {input.beds:q} {params.fasta} -o {output.bed:q} 2> {log:q}"
