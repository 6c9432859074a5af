"""Check data/README.md's binarized-marks recipe on ChromHMM's own data.

    python benchmarks/check_chromhmm_recipe.py            # needs Debian's chromhmm and chromhmm-example

Learns a small ChromHMM model on the example's GM12878 chr11 marks
(`ChromHMM LearnModel -printposterior`), shuffles the mark columns of the
K562 chr11 binarized file (a model and its data may list marks in different
orders), turns it into tracks with the recipe's code block exactly as
data/README.md prints it, decodes them with the ChromHMM model written as a
plain flashseg HMM, and compares the per-bin posteriors with ChromHMM's.
Prints the largest difference; exits 1 above --tolerance.
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = "/usr/share/doc/chromhmm/examples/SAMPLEDATA_HG18"


def recipe_code() -> str:
    """The recipe's code block of data/README.md, without its example call."""
    text = open(os.path.join(ROOT, "data", "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = next(b for b in blocks if "def binarized_to_tracks" in b)
    return "\n".join(line for line in code.splitlines() if not line.startswith("binarized_to_tracks("))


def shuffled_copy(src, dst, seed=1):
    """The binarized file with its mark columns (header and values) permuted."""
    with gzip.open(src, "rt") as handle:
        first = handle.readline()
        marks = handle.readline().rstrip("\n").split("\t")
        x = np.loadtxt(handle, dtype=np.int8, ndmin=2)
    order = np.random.default_rng(seed).permutation(len(marks))
    with gzip.open(dst, "wt") as out:
        out.write(first)
        out.write("\t".join(marks[i] for i in order) + "\n")
        np.savetxt(out, x[:, order], fmt="%d", delimiter="\t")
    return [marks[i] for i in order]


def model_yaml(model_path, out_path):
    """A ChromHMM model_N.txt as a plain flashseg HMM (K = 1, tail none, self-transitions)."""
    with open(model_path) as handle:
        n = int(handle.readline().split("\t")[0])
        init = np.zeros(n)
        trans = np.zeros((n, n))
        for line in handle:
            f = line.rstrip("\n").split("\t")
            if f[0] == "probinit":
                init[int(f[1]) - 1] = float(f[2])
            elif f[0] == "transitionprobs":
                trans[int(f[1]) - 1, int(f[2]) - 1] = float(f[3])
    names = [f"E{i + 1}" for i in range(n)]
    lines = ["name: chromhmm", "bin_size: 200", "max_duration: 1", "tail: none", "labels:"]
    lines += [f"  - {{name: {s}, duration: {{family: table, log: [0]}}}}" for s in names]
    lines.append("initial: {" + ", ".join(f"{s}: {float(p)!r}" for s, p in zip(names, init)) + "}")
    lines.append("final: free")
    lines.append("transitions:")
    for i, s in enumerate(names):
        lines.append(f"  {s}: {{" + ", ".join(f"{t}: {float(trans[i, j])!r}" for j, t in enumerate(names)) + "}")
    with open(out_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    if shutil.which("ChromHMM") is None or not os.path.isdir(EXAMPLES):
        print("needs Debian's chromhmm and chromhmm-example (apt-get install chromhmm chromhmm-example)")
        return 2
    work = tempfile.mkdtemp(prefix="flashseg-chromhmm-")
    learn = os.path.join(work, "learn")
    subprocess.run(["ChromHMM", "LearnModel", "-r", str(args.iterations), "-nobrowser", "-noenrich", "-noimage",
                    "-printposterior", EXAMPLES, learn, str(args.states), "hg18"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model = os.path.join(learn, f"model_{args.states}.txt")
    marks = shuffled_copy(os.path.join(EXAMPLES, "K562_chr11_binary.txt.gz"),
                          os.path.join(work, "K562_chr11_binary.txt.gz"))
    print(f"K562 marks in the shuffled file: {' '.join(marks)}")
    namespace = {}
    exec(recipe_code(), namespace)                     # noqa: S102 - the README's own code
    tracks = os.path.join(work, "K562.h5")
    namespace["binarized_to_tracks"](model, [os.path.join(work, "K562_chr11_binary.txt.gz")], tracks)
    yaml_path = os.path.join(work, "chromhmm.yaml")
    model_yaml(model, yaml_path)
    posteriors = os.path.join(work, "post.h5")
    subprocess.run([sys.executable, "-m", "flashseg", "decode", "-q", "-m", yaml_path, "-t", tracks,
                    "--method", "posterior", "--posteriors", posteriors, "--posteriors-dtype", "float32",
                    "-o", os.path.join(work, "calls.bed")], check=True)
    import h5py

    with h5py.File(posteriors) as f:
        ours = f["tracks"]["chr11"][:].astype(np.float64)
    theirs_path = os.path.join(learn, "POSTERIOR", f"K562_{args.states}_chr11_posterior.txt")
    theirs = np.loadtxt(theirs_path, skiprows=2, ndmin=2)
    n = min(len(ours), len(theirs))
    diff = float(np.abs(ours[:n] - theirs[:n]).max())
    agree = float(np.mean(ours[:n].argmax(1) == theirs[:n].argmax(1)))
    print(f"bins: flashseg {len(ours):,}, ChromHMM {len(theirs):,}; largest posterior difference {diff:.2e}; "
          f"same most probable state in {100 * agree:.4f}% of bins")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if diff <= args.tolerance and len(ours) == len(theirs) else 1


if __name__ == "__main__":
    sys.exit(main())
