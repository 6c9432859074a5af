"""Shared helpers for the BAM tests: tiny BAMs written with pysam, and a plain reference counter."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pysam

from flashseg.io.reads import FLAG_PAIRED, FLAG_PROPER_PAIR


def write_bam(path, contigs, reads, *, sort_order="coordinate", index=True, sort=True):
    """reads: iterable of dicts with contig, pos and optional flag, mapq, tlen, length."""
    header = {"HD": {"VN": "1.6", "SO": sort_order} if sort_order else {"VN": "1.6"},
              "SQ": [{"SN": n, "LN": int(l)} for n, l in contigs]}
    tid = {n: i for i, (n, _) in enumerate(contigs)}
    reads = list(reads)
    if sort:
        reads.sort(key=lambda r: (tid[r["contig"]], r["pos"]))
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, r in enumerate(reads):
            a = pysam.AlignedSegment(out.header)
            a.query_name = f"r{i}"
            a.flag = r.get("flag", 0)
            a.reference_id = tid[r["contig"]]
            a.reference_start = int(r["pos"])
            a.mapping_quality = r.get("mapq", 60)
            a.cigartuples = ((0, r.get("length", 50)),)
            if r.get("tlen"):
                a.template_length = r["tlen"]
                a.next_reference_id = a.reference_id
                a.next_reference_start = int(r["pos"]) + max(0, r["tlen"] - 50)
            out.write(a)
    if index:
        pysam.index(str(path))
    return str(path)


def random_reads(rng, contigs, n, *, paired=False):
    """Reads with random positions, flags, MAPQs (and fragment lengths)."""
    flags = [0, 16, 0x4, 0x100, 0x200, 0x400, 0x800]
    reads = []
    for _ in range(n):
        name, length = contigs[rng.integers(len(contigs))]
        flag = int(flags[rng.integers(len(flags))]) if rng.random() < 0.3 else int(rng.choice([0, 16]))
        read = {"contig": name, "pos": int(rng.integers(0, length - 50)), "flag": flag,
                "mapq": int(rng.choice([0, 5, 19, 20, 30, 60]))}
        if paired:
            read["flag"] |= FLAG_PAIRED | (FLAG_PROPER_PAIR if rng.random() < 0.8 else 0)
            tlen = int(rng.integers(-600, 1400))
            read["tlen"] = tlen
        reads.append(read)
    return reads


def reference_counts(path, contigs, bin_size, min_mapq=20, fragments=False, max_fragment=1000):
    """Plain whole-file pysam loop (no fetch, no chunks): the obviously correct counter."""
    counts = {n: np.zeros(-(-l // bin_size), dtype=np.int64) for n, l in contigs}
    lengths = dict(contigs)
    with pysam.AlignmentFile(str(path)) as bam:
        for read in bam.fetch(until_eof=True):
            if read.is_unmapped or read.is_secondary or read.is_supplementary or read.is_qcfail \
                    or read.is_duplicate or read.mapping_quality < min_mapq:
                continue
            name = read.reference_name
            if name not in counts:
                continue
            if fragments:
                if not (read.is_paired and read.is_proper_pair):
                    continue
                if not 0 < read.template_length <= max_fragment:
                    continue
                where = read.reference_start + read.template_length // 2
                if where >= lengths[name]:
                    continue
            else:
                where = read.reference_start
            counts[name][where // bin_size] += 1
    return counts


def fake_spec(means, *, model="poisson", dispersion=0.0, bin_size=100, names=None):
    """A stand-in for flashseg.io.model.ModelSpec with only what the BAM code reads."""
    names = names or [f"L{i}" for i in range(len(means))]
    return SimpleNamespace(bin_size=bin_size, label_names=names, path="fake.yaml",
                           coverage=SimpleNamespace(model=model, dispersion=dispersion,
                                                    mean=np.asarray(means, dtype=float)))

