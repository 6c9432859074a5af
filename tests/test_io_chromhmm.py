"""`flashseg tracks chromhmm`: ChromHMM binarized files and model files on small hand-made inputs."""
from __future__ import annotations

import gzip

import h5py
import numpy as np
import pytest
import yaml

from cli_helpers import run_main
from flashseg.io import chromhmm as fmt
from flashseg.io.model import load_model

MARKS = ["H3K4me3", "H3K27ac", "H3K27me3"]


def write_binarized(path, cell, chrom, marks, rows, *, gz=False, raw_lines=None):
    text = f"{cell}\t{chrom}\n" + "\t".join(marks) + "\n"
    text += "".join("\t".join(str(v) for v in row) + "\n" for row in rows) if raw_lines is None else raw_lines
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def stored(path, contig):
    with h5py.File(path) as f:
        return f["observations"][contig][:], f["observations"][contig].attrs.get("length")


def features_of(path):
    with h5py.File(path) as f:
        return [x.decode() if isinstance(x, bytes) else str(x) for x in f.attrs["features"]], \
            [x.decode() if isinstance(x, bytes) else str(x) for x in f.attrs["contigs"]]


@pytest.fixture
def cell_dir(tmp_path):
    """Cell A: chr2 (plain, marks in MARKS order) and chr10 (gzip, marks in another order), with 2s."""
    rng = np.random.default_rng(3)
    chr2 = rng.integers(0, 3, size=(7, 3))
    chr10 = rng.integers(0, 3, size=(5, 3))
    chr2[0] = [2, 1, 0]
    chr10[1] = [1, 2, 0]
    d = tmp_path / "bin"
    d.mkdir()
    write_binarized(d / "A_chr2_binary.txt", "A", "chr2", MARKS, chr2)
    other = [2, 0, 1]                                   # H3K27me3, H3K4me3, H3K27ac
    write_binarized(d / "A_chr10_binary.txt.gz", "A", "chr10", [MARKS[j] for j in other], chr10[:, other], gz=True)
    return d, {"chr2": chr2, "chr10": chr10}


def test_marks_matched_by_name_gzip_plain_and_missing(cell_dir, tmp_path, capsys):
    d, truth = cell_dir
    code, _, err = run_main(["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    out = tmp_path / "out" / "A.h5"
    features, contigs = features_of(out)
    assert features == MARKS                            # the first file (chr2, natural order) sets the order
    assert contigs == ["chr2", "chr10"]                 # natural sort: chr2 before chr10
    for chrom in contigs:
        x, length = stored(out, chrom)
        assert x.dtype == np.uint8
        np.testing.assert_array_equal(x, truth[chrom])  # chr10's columns were permuted back by name
        assert length is None
    x, _ = stored(out, "chr10")
    assert x[1].tolist() == [1, 2, 0] and (x == 2).sum() == (truth["chr10"] == 2).sum()
    from flashseg.io.observations import open_observations

    with open_observations(out) as f:
        assert f.kind == "binary" and f.bin_size == 200
        assert np.isnan(f.read("chr2", 0, 1)[0, 0])     # 2 reads as missing


def test_info_describes_the_output(cell_dir, tmp_path, capsys):
    d, _ = cell_dir
    assert run_main(["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out")], capsys)[0] == 0
    code, out, err = run_main(["info", str(tmp_path / "out" / "A.h5")], capsys)
    if code != 0 and "observations" not in out + err:
        pytest.skip("flashseg info does not describe observations files yet")
    assert code == 0, err
    assert "H3K27me3" in out and "chr10" in out


def test_chromsizes_order_and_lengths(cell_dir, tmp_path, capsys):
    d, truth = cell_dir
    sizes = tmp_path / "chrom.sizes"
    sizes.write_text("chr10\t1099\nchr2\t1400\nchrX\t5000\n")     # chr10: floor(1099/200) = 5 rows
    code, _, err = run_main(["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out"), "--chromsizes", str(sizes)],
                            capsys)
    assert code == 0, err
    features, contigs = features_of(tmp_path / "out" / "A.h5")
    assert contigs == ["chr10", "chr2"]
    assert features == ["H3K27me3", "H3K4me3", "H3K27ac"]       # now chr10's file comes first: its order
    x, length = stored(tmp_path / "out" / "A.h5", "chr10")
    assert length == 1099
    np.testing.assert_array_equal(x, truth["chr10"][:, [MARKS.index(m) for m in features]])
    assert stored(tmp_path / "out" / "A.h5", "chr2")[1] == 1400
    sizes.write_text("chr10\t1000\nchr2\t2000\n")                 # chr2: 7 rows for 10 bins
    code, _, err = run_main(["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out2"), "--chromsizes", str(sizes)],
                            capsys)
    assert code == 1 and err.count("\n") == 1
    assert "A_chr2_binary.txt" in err and "7 rows" in err
    assert not (tmp_path / "out2" / "A.h5").exists()


def one_line_error(capsys, argv, code=1):
    got, out, err = run_main(argv, capsys)
    assert got == code, err
    assert err.startswith("flashseg: error:") and err.count("\n") == 1, err
    return err


def test_mismatched_mark_sets_name_both_files(cell_dir, tmp_path, capsys):
    d, _ = cell_dir
    write_binarized(d / "A_chr1_binary.txt", "A", "chr1", ["H3K4me3", "H3K27ac", "H3K36me3"], [[0, 1, 0]])
    err = one_line_error(capsys, ["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out")])
    assert "A_chr1_binary.txt" in err and ("A_chr2_binary.txt" in err or "A_chr10_binary.txt.gz" in err)
    assert "H3K36me3" in err and "H3K27me3" in err
    assert not (tmp_path / "out" / "A.h5").exists()


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("bad, what", [("0\t3\t1\n", "is '3'"), ("0\t1\n", "2 values, expected 3"),
                                       ("0\t1\tx\n", "is 'x'"), ("\n", "empty line")])
def test_bad_row_names_file_and_line(tmp_path, capsys, gz, bad, what):
    d = tmp_path / "bin"
    d.mkdir()
    name = "B_chr1_binary.txt" + (".gz" if gz else "")
    write_binarized(d / name, "B", "chr1", MARKS, None, gz=gz, raw_lines="0\t0\t0\n1\t1\t1\n" + bad + "1\t0\t2\n")
    err = one_line_error(capsys, ["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out")])
    assert name in err and "line 5" in err and what in err
    assert not (tmp_path / "out" / "B.h5").exists()


def test_tolerant_text_and_big_files(tmp_path, monkeypatch):
    """CRLF, spaces and trailing blank lines parse; blocks split mid-file parse the same as whole files."""
    d = tmp_path
    rows = np.random.default_rng(0).integers(0, 3, size=(1000, 3))
    text = "".join("\t".join(map(str, r)) + "\n" for r in rows)
    plain = write_binarized(d / "C_chr1_binary.txt", "C", "chr1", MARKS, None, raw_lines=text)
    crlf = write_binarized(d / "D_chr1_binary.txt", "D", "chr1", MARKS, None,
                           raw_lines=text.replace("\n", "\r\n").replace("\t", " ") + "\n\n")
    monkeypatch.setattr(fmt, "BLOCK_BYTES", 97)
    for path in (plain, crlf):
        bf = fmt.read_header(str(path))
        np.testing.assert_array_equal(fmt.read_binarized(bf, MARKS), rows)
        np.testing.assert_array_equal(fmt.read_binarized(bf, MARKS[::-1]), rows[:, ::-1])


def test_outputs_are_not_replaced_without_force(cell_dir, tmp_path, capsys):
    d, _ = cell_dir
    out = tmp_path / "out"
    out.mkdir()
    (out / "A.h5").write_text("mine")
    (out / "notes.txt").write_text("other files are fine")
    code, _, err = run_main(["tracks", "chromhmm", str(d), "-o", str(out)], capsys)
    assert code == 2 and "--force" in err and (out / "A.h5").read_text() == "mine"
    code, _, err = run_main(["tracks", "chromhmm", str(d), "-o", str(out), "--force"], capsys)
    assert code == 0, err
    assert features_of(out / "A.h5")[0] == MARKS and (out / "notes.txt").exists()


# A 2-state ChromHMM model whose marks are listed H3K27ac, H3K27me3, H3K4me3 (not the files' order).
MODEL_MARKS = ["H3K27ac", "H3K27me3", "H3K4me3"]
P_PRESENT = np.array([[0.6, 0.01, 0.9],       # state 1, in MODEL_MARKS order
                      [0.05, 0.4, 0.001]])    # state 2
INIT = [0.25, 0.75]
TRANS = [[0.9, 0.1], [0.2, 0.8]]


def write_chromhmm_model(path):
    lines = ["2\t3\tE\t-1234.5\t100"]
    lines += [f"probinit\t{i + 1}\t{p}" for i, p in enumerate(INIT)]
    lines += [f"transitionprobs\t{i + 1}\t{j + 1}\t{TRANS[i][j]}" for i in range(2) for j in range(2)]
    for i in range(2):
        for j, mark in enumerate(MODEL_MARKS):
            lines.append(f"emissionprobs\t{i + 1}\t{j}\t{mark}\t0\t{float(1 - P_PRESENT[i, j])!r}")
            lines.append(f"emissionprobs\t{i + 1}\t{j}\t{mark}\t1\t{float(P_PRESENT[i, j])!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_model_import_matches_marks_by_name(cell_dir, tmp_path, capsys):
    d, _ = cell_dir
    model = write_chromhmm_model(tmp_path / "model_2.txt")
    code, _, err = run_main(["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out"), "--chromhmm-model",
                             str(model), "--bin-size", "100"], capsys)
    assert code == 0, err
    text = (tmp_path / "out" / "model.yaml").read_text()
    data = yaml.safe_load(text)
    em = data["emissions"]
    assert em["family"] == "bernoulli" and em["features"] == MARKS      # the binarized files' order
    for i, state in enumerate(["E1", "E2"]):
        expected = [P_PRESENT[i, MODEL_MARKS.index(m)] for m in MARKS]
        assert em["p"][state] == pytest.approx(expected, abs=0)
    assert em["p"]["E1"] == [0.9, 0.6, 0.01] and em["p"]["E2"] == [0.001, 0.05, 0.4]
    assert data["initial"] == {"E1": 0.25, "E2": 0.75} and data["final"] == "free"
    assert data["transitions"]["E2"] == {"E1": 0.2, "E2": 0.8}
    assert data["max_duration"] == 1 and data["tail"] == "none" and data["bin_size"] == 100
    spec = load_model(tmp_path / "out" / "model.yaml")
    assert spec.label_names == ["E1", "E2"] and len({lab.color for lab in spec.labels}) == 2
    np.testing.assert_allclose(np.exp(spec.model.transition), TRANS)
    np.testing.assert_allclose(np.exp(spec.model.initial), INIT)
    np.testing.assert_array_equal(spec.emissions.params["p"], P_PRESENT[:, [MODEL_MARKS.index(m) for m in MARKS]])


def test_model_reader(tmp_path):
    m = fmt.read_model(str(write_chromhmm_model(tmp_path / "model_2.txt")))
    assert m.marks == MODEL_MARKS and m.n_states == 2
    np.testing.assert_array_equal(m.present, P_PRESENT)
    np.testing.assert_array_equal(m.p_for(["H3K4me3", "H3K27ac"]), P_PRESENT[:, [2, 0]])
    # only value-0 lines: P(present) = 1 - P(absent)
    text = "\n".join(line for line in (tmp_path / "model_2.txt").read_text().splitlines()
                     if not (line.startswith("emissionprobs") and line.split("\t")[4] == "1"))
    (tmp_path / "only0.txt").write_text(text)
    np.testing.assert_allclose(fmt.read_model(str(tmp_path / "only0.txt")).present, P_PRESENT, atol=1e-15)
    assert fmt._num(1e-5) == "1.0e-05" and yaml.safe_load(fmt._num(1e-5)) == 1e-5
    assert yaml.safe_load(fmt._num(1.2605495181870288e-253)) == 1.2605495181870288e-253


@pytest.mark.parametrize("edit, what", [
    (lambda t: t.replace("probinit\t2\t0.75\n", ""), "no probinit for state 2"),
    (lambda t: t.replace("transitionprobs\t1\t2\t0.1", "transitionprobs\t1\t3\t0.1"), "line 5: state '3'"),
    (lambda t: t.replace("emissionprobs\t2\t1\tH3K27me3\t1\t0.4", "emissionprobs\t2\t1\tH3K27me3\t1\t1.4"),
     "is not a probability"),
    (lambda t: "x\t3\n" + t.split("\n", 1)[1], "line 1"),
])
def test_bad_model_is_one_line(cell_dir, tmp_path, capsys, edit, what):
    d, _ = cell_dir
    model = write_chromhmm_model(tmp_path / "model_2.txt")
    model.write_text(edit(model.read_text()))
    err = one_line_error(capsys, ["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out"), "--chromhmm-model",
                                  str(model)])
    assert "model_2.txt" in err and what in err
    assert not (tmp_path / "out" / "A.h5").exists()


def test_model_mark_missing_from_the_data(cell_dir, tmp_path, capsys):
    d, _ = cell_dir
    model = write_chromhmm_model(tmp_path / "model_2.txt")
    model.write_text(model.read_text().replace("H3K27me3", "H3K9me3"))
    err = one_line_error(capsys, ["tracks", "chromhmm", str(d), "-o", str(tmp_path / "out"), "--chromhmm-model",
                                  str(model)])
    assert "H3K9me3" in err and "A_chr" in err


def forward_backward(x, p, init, trans):
    """Posteriors of a plain HMM with bernoulli marks (NaN = missing), in probability space."""
    like = np.ones((len(x), p.shape[0]))
    for c in range(p.shape[0]):
        for m in range(p.shape[1]):
            obs = x[:, m]
            like[:, c] *= np.where(np.isnan(obs), 1.0, np.where(obs == 1, p[c, m], 1 - p[c, m]))
    alpha = np.zeros_like(like)
    alpha[0] = np.asarray(init) * like[0]
    alpha[0] /= alpha[0].sum()
    for t in range(1, len(x)):
        alpha[t] = (alpha[t - 1] @ trans) * like[t]
        alpha[t] /= alpha[t].sum()
    beta = np.ones_like(like)
    for t in range(len(x) - 2, -1, -1):
        beta[t] = trans @ (like[t + 1] * beta[t + 1])
        beta[t] /= beta[t].sum()
    g = alpha * beta
    return g / g.sum(axis=1, keepdims=True)


def test_decode_imported_model_equals_forward_backward(cell_dir, tmp_path, capsys):
    from cli_helpers import real_core_works

    if not real_core_works():
        pytest.skip("the core cannot decode yet")
    d, truth = cell_dir
    model = write_chromhmm_model(tmp_path / "model_2.txt")
    out = tmp_path / "out"
    assert run_main(["tracks", "chromhmm", str(d), "-o", str(out), "--chromhmm-model", str(model)], capsys)[0] == 0
    code, _, err = run_main(["decode", "-m", str(out / "model.yaml"), "--observations", str(out / "A.h5"),
                             "--posteriors", str(tmp_path / "post.h5"), "--posteriors-dtype", "float32",
                             "--method", "posterior", "--device", "cpu", "--threads", "1",
                             "-o", str(tmp_path / "calls.bed")], capsys)
    assert code == 0, err
    p = P_PRESENT[:, [MODEL_MARKS.index(m) for m in MARKS]]
    with h5py.File(tmp_path / "post.h5") as f:
        for chrom, rows in truth.items():
            x = np.where(rows == 2, np.nan, rows.astype(float))
            expected = forward_backward(x, p, INIT, np.array(TRANS))
            np.testing.assert_allclose(f["tracks"][chrom][:], expected, atol=1e-6)
