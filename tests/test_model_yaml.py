"""The model YAML format (docs/model.md): load_model -> ModelSpec, and its errors."""
import copy
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from flashseg.core.model import SemiMarkovModel
from flashseg.errors import DataError
from flashseg.io.durations import duration_table, parse_duration
from flashseg.io.model import CoverageSpec, LabelSpec, ModelSpec, load_model

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "models").glob("*.yaml"))

BASE = {
    "name": "toy",
    "bin_size": 200,
    "max_duration": 16,
    "labels": [
        {"name": "Enhancer", "color": "255,195,77", "duration": {"family": "geometric", "mean": 4}},
        {"name": "Promoter", "strand": "+",
         "duration": {"family": "negative_binomial", "mean": 6, "dispersion": 3}},
        {"name": "Quiescent", "duration": {"family": "geometric", "mean": 20}},
    ],
    "transitions": {
        "Enhancer": {"Promoter": 1, "Quiescent": 3},
        "Promoter": {"log": {"Enhancer": -1.2, "Quiescent": -0.4}},
        "Quiescent": {"Enhancer": 0.5, "Promoter": 0.5},
    },
}


def write(tmp_path, data, name="model.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def load(tmp_path, data):
    return load_model(write(tmp_path, data))


def modified(edit):
    data = copy.deepcopy(BASE)
    edit(data)
    return data


# ---------------------------------------------------------------- the example configs


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_load(path):
    spec = load_model(path)
    C, K = spec.n_labels, spec.max_duration
    assert isinstance(spec, ModelSpec) and isinstance(spec.model, SemiMarkovModel)
    assert spec.model.duration.shape == (K, C) and spec.warnings == []
    assert spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and spec.path == str(path)
    assert len(set(spec.label_names)) == C
    assert all(lab.strand in ".+-" and len(lab.color.split(",")) == 3 for lab in spec.labels)
    rho = spec.tail_rho[np.isfinite(spec.tail_rho)]
    assert np.all((rho > 0) & (rho < 1))
    assert np.all(spec.mean_durations >= 1)
    rows = spec.transition_probabilities.sum(axis=1)
    assert np.allclose(rows[rows > 0], 1.0)
    # every example but the plain HMM uses the geometric tail
    assert (spec.model.tail_log_rho is None) == (path.stem == "hmm-4")
    assert spec.model.is_plain_hmm == (path.stem == "hmm-4")


def test_example_config_contents():
    by_name = {p.stem: load_model(p) for p in CONFIGS}
    assert {"chromatin-12", "gene-structure", "copy-number", "demo"} <= set(by_name)
    chrom = by_name["chromatin-12"]
    assert (chrom.bin_size, chrom.max_duration, chrom.n_labels) == (200, 256, 12)
    off = ~np.eye(12, dtype=bool)
    assert np.isfinite(chrom.model.transition[off]).all()  # dense
    genes = by_name["gene-structure"]
    assert genes.bin_size == 1 and genes.max_duration == 512
    strands = dict(zip(genes.label_names, (lab.strand for lab in genes.labels)))
    assert strands == {"intergenic": ".", "exon+": "+", "intron+": "+", "exon-": "-", "intron-": "-"}
    i = genes.label_index
    assert genes.model.duration[:49, i("exon+")].max() == -np.inf       # exons >= 50 bp
    assert genes.model.duration[:59, i("intron-")].max() == -np.inf     # introns >= 60 bp
    assert genes.model.transition[i("intron+"), i("intergenic")] == -np.inf
    assert genes.model.transition[i("exon+"), i("exon-")] == -np.inf
    cnv = by_name["copy-number"]
    assert cnv.bin_size == 1000 and cnv.coverage.model == "negative_binomial"
    assert cnv.coverage.mean.tolist() == [0.05, 0.5, 1.0, 1.5, 2.0]
    demo = by_name["demo"]
    assert (demo.bin_size, demo.max_duration, demo.n_labels) == (200, 64, 4)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_round_trip_through_yaml(path, tmp_path):
    a = load_model(path)
    b = load(tmp_path, yaml.safe_load(path.read_text()))
    for name in ("duration", "tail_log_rho", "transition", "initial", "final"):
        np.testing.assert_array_equal(getattr(a.model, name), getattr(b.model, name))
    assert a.labels == b.labels and a.name == b.name
    np.testing.assert_array_equal(a.mean_durations, b.mean_durations)


# ---------------------------------------------------------------- semantics


def test_base_model_arrays(tmp_path):
    spec = load(tmp_path, BASE)
    m = spec.model
    assert spec.label_names == ["Enhancer", "Promoter", "Quiescent"]
    assert spec.labels[1] == LabelSpec("Promoter", "0,0,0", "+")
    assert spec.labels[0].color == "255,195,77" and spec.labels[0].strand == "."
    assert spec.tail == "geometric" and spec.coverage is None
    np.testing.assert_allclose(m.initial, np.log(np.full(3, 1 / 3)))   # uniform
    np.testing.assert_array_equal(m.final, np.zeros(3))                 # free
    # probability rows are normalised; absent = forbidden
    np.testing.assert_allclose(m.transition[0], [-np.inf, math.log(0.25), math.log(0.75)])
    # log rows are used as given
    assert m.transition[1].tolist() == [-1.2, -np.inf, -0.4]
    # durations: the geometric law, its tail rho = 1 - 1/mean
    law = parse_duration(BASE["labels"][1]["duration"])
    np.testing.assert_array_equal(m.duration[:, 1], duration_table(law, 16).log_prob)
    np.testing.assert_allclose(m.duration[:, 0], np.log(0.25) + np.arange(16) * np.log(0.75))
    np.testing.assert_allclose(spec.tail_rho[[0, 2]], [0.75, 0.95])
    np.testing.assert_allclose(spec.mean_durations[[0, 2]], [4.0, 20.0])
    np.testing.assert_allclose(spec.transition_probabilities[0], [0, 0.25, 0.75])


def test_initial_final_forms_and_minus_inf(tmp_path):
    data = modified(lambda d: d.update(
        initial={"Enhancer": 2, "Quiescent": 6},
        final={"log": {"Enhancer": 0.5, "Promoter": -math.inf, "Quiescent": -1}}))
    text = yaml.safe_dump(data)
    assert "-.inf" in text  # the YAML spelling of -inf
    m = load(tmp_path, text).model
    np.testing.assert_allclose(m.initial, [math.log(0.25), -np.inf, math.log(0.75)])
    assert m.final.tolist() == [0.5, -np.inf, -1.0]
    data = modified(lambda d: d["transitions"].update(
        Quiescent={"log": {"Enhancer": "-inf", "Promoter": -2}}))
    assert load(tmp_path, data).model.transition[2].tolist() == [-np.inf, -2.0, -np.inf]


def test_label_without_outgoing_transitions_is_legal(tmp_path):
    data = modified(lambda d: d["transitions"].update(Quiescent={}))
    spec = load(tmp_path, data)
    assert np.all(spec.model.transition[2] == -np.inf)
    data = modified(lambda d: d["transitions"].pop("Quiescent"))
    assert np.all(load(tmp_path, data).model.transition[2] == -np.inf)


def test_ordinary_hmm_and_tail_none(tmp_path):
    hmm = {"bin_size": 1, "max_duration": 1, "tail": "none",
           "labels": [{"name": "a", "duration": {"family": "table", "log": [0]}},
                      {"name": "b", "duration": {"family": "table", "log": [0]}}],
           "transitions": {"a": {"a": 0.9, "b": 0.1}, "b": {"a": 0.2, "b": 0.8}}}
    spec = load(tmp_path, hmm)
    assert spec.model.tail_log_rho is None and spec.tail == "none"
    assert spec.model.duration.tolist() == [[0.0, 0.0]]
    assert np.isnan(spec.tail_rho).all() and spec.warnings == []
    assert spec.name == "model"  # default: the file's stem
    data = modified(lambda d: d.update(tail="none"))
    spec = load(tmp_path, data)
    assert spec.model.tail_log_rho is None
    assert len(spec.warnings) == 3 and "tail: none forbids durations > max_duration=16" in spec.warnings[0]


def test_duration_table_path_is_relative_to_the_yaml(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "enh.tsv").write_text("0.5\n0.25\n0.25\n")
    data = modified(lambda d: d["labels"][0].update(duration={"family": "table", "path": "tables/enh.tsv"}))
    spec = load(tmp_path, data)
    np.testing.assert_allclose(np.exp(spec.model.duration[:4, 0]), [0.5, 0.25, 0.25, 0])
    assert spec.tail_rho[0] != spec.tail_rho[0]  # support ends before K: no tail (nan)


def test_coverage_section(tmp_path):
    data = modified(lambda d: d.update(coverage={
        "model": "negative_binomial", "dispersion": 0.2,
        "mean": {"Enhancer": 1.5, "Promoter": 1.0, "Quiescent": 0.5}}))
    cov = load(tmp_path, data).coverage
    assert isinstance(cov, CoverageSpec) and cov.model == "negative_binomial"
    assert cov.dispersion == 0.2 and cov.mean.tolist() == [1.5, 1.0, 0.5]
    data["coverage"] = {"model": "poisson", "mean": {"Enhancer": 1, "Promoter": 2, "Quiescent": 3}}
    cov = load(tmp_path, data).coverage
    assert cov.model == "poisson" and cov.dispersion == 0.0


def test_tail_warning_is_reported(tmp_path):
    data = modified(lambda d: d["labels"][2]["duration"].update(max=100))
    spec = load(tmp_path, data)
    assert spec.warnings == ["labels[2].duration.max: the geometric tail beyond max_duration=16 "
                             "does not stop at max=100 (label Quiescent)"]


# ---------------------------------------------------------------- errors


def _set(path, value):
    """Edit that sets data[path...] = value (list indices as ints)."""
    def edit(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


def _del(path):
    def edit(d):
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return edit


ERRORS = [
    (_set(["labels", 2, "duration", "mean"], -3), "labels[2].duration.mean: must be >= 1, got -3 (label Quiescent)"),
    (_set(["labels", 1, "duration", "dispersion"], 0), "labels[1].duration.dispersion: must be > 0"),
    (_set(["labels", 0, "duration"], {"family": "gamma", "shape": 2, "mean": -1}),
     "labels[0].duration.mean: must be > 0"),
    (_set(["transitions", "Enhancer", "Promotr"], 0.5), "transitions.Enhancer.Promotr: unknown label"),
    (_set(["transitions", "Enhancr"], {"Promoter": 1}), "transitions.Enhancr: unknown label"),
    (_set(["transitions", "Enhancer", "Promoter"], -1), "transitions.Enhancer.Promoter: probability must be >= 0"),
    (_set(["transitions", "Enhancer"], {"Promoter": 0, "Quiescent": 0}),
     "transitions.Enhancer: probabilities must have a positive sum"),
    (_set(["transitions", "Promoter", "log", "Enhancer"], math.inf),
     "transitions.Promoter.log.Enhancer: must be finite"),
    (_set(["transitions", "Promoter", "log", "Enhancer"], "big"),
     "transitions.Promoter.log.Enhancer: must be a number, got 'big'"),
    (_set(["initial"], {"Enhancr": 1}), "initial.Enhancr: unknown label (did you mean"),
    (_set(["initial"], "uniformly"), "initial: must be uniform, free"),
    (_set(["final"], {"log": {"Enhancer": -math.inf}}), "final: every label has probability 0"),
    (_set(["bin_size"], 0), "bin_size: must be >= 1, got 0"),
    (_set(["bin_size"], 2.5), "bin_size: must be an integer"),
    (_set(["max_duration"], "many"), "max_duration: must be a number"),
    (_del(["max_duration"]), "max_duration: missing"),
    (_set(["tail"], "exponential"), "tail: must be geometric or none, got 'exponential'"),
    (_set(["colour"], "red"), "colour: unknown key"),
    (_set(["labels"], []), "labels: must be a non-empty list"),
    (_set(["labels", 1, "name"], "Enhancer"), "labels[1].name: duplicate label 'Enhancer' (also labels[0])"),
    (_set(["labels", 1, "name"], "Pro moter"), "labels[1].name: must be non-empty without whitespace"),
    (_del(["labels", 0, "name"]), "labels[0].name: missing"),
    (_set(["labels", 0, "color"], "300,0,0"), 'labels[0].color: must be "r,g,b" with integers 0..255'),
    (_set(["labels", 0, "color"], "red"), 'labels[0].color: must be "r,g,b"'),
    (_set(["labels", 0, "strand"], "x"), 'labels[0].strand: must be ".", "+" or "-"'),
    (_del(["labels", 0, "duration"]), "labels[0].duration: missing"),
    (_set(["labels", 0, "shape"], 3), "labels[0].shape: unknown key"),
    (_set(["labels", 0, "duration", "family"], "weibul"), "labels[0].duration.family: unknown family"),
    (_set(["labels", 1, "duration", "mean"], 400),
     "labels[1].duration: geometric tail ratio rho = P(K+1)/P(K) ="),
    (_set(["labels", 0, "duration", "min"], 40), "labels[0].duration: P(d=K=16) = 0"),
    (_set(["labels", 0, "duration", "tail_rho"], 1.5), "labels[0].duration.tail_rho: must be in (0, 1)"),
    (_set(["coverage"], {"model": "gaussian", "mean": {}}), "coverage.model: must be poisson or negative_binomial"),
    (_set(["coverage"], {"model": "negative_binomial", "mean": {"Enhancer": 1, "Promoter": 1, "Quiescent": 1}}),
     "coverage.dispersion: missing"),
    (_set(["coverage"], {"model": "negative_binomial", "dispersion": -1,
                         "mean": {"Enhancer": 1, "Promoter": 1, "Quiescent": 1}}),
     "coverage.dispersion: must be > 0"),
    (_set(["coverage"], {"model": "poisson", "mean": {"Enhancer": 1, "Promoter": 0, "Quiescent": 1}}),
     "coverage.mean.Promoter: must be > 0"),
    (_set(["coverage"], {"model": "poisson", "mean": {"Enhancer": 1}}),
     "coverage.mean.Promoter: missing (every label needs a mean; also missing: Quiescent)"),
    (_set(["coverage"], {"model": "poisson", "mean": {"Enhancer": 1, "Promoter": 1, "Quiescent": 1, "X": 1}}),
     "coverage.mean.X: unknown label"),
]


@pytest.mark.parametrize("edit,message", ERRORS, ids=[m.split(":")[0] + f"#{i}" for i, (_, m) in enumerate(ERRORS)])
def test_error_names_file_and_key_path(tmp_path, edit, message):
    path = write(tmp_path, modified(edit))
    with pytest.raises(DataError) as exc:
        load_model(path)
    assert exc.value.file == str(path)
    assert exc.value.message.startswith(message), exc.value.message
    assert str(exc.value) == f"{path}: {exc.value.message}"
    assert "\n" not in str(exc.value)


def test_malformed_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, "name: x\nbin_size: 200\nlabels: [a, b\nmax_duration: 3\n")
    with pytest.raises(DataError) as exc:
        load_model(path)
    assert exc.value.message.startswith("invalid YAML at line 4") and "\n" not in str(exc.value)
    path = write(tmp_path, "name: x\nlabels:\n  - name: a\n    strand: -\n")
    with pytest.raises(DataError, match=r'line 4, column \d+: .*quote it, e.g. strand: "-"'):
        load_model(path)


def test_duplicate_keys_are_errors(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False) + "transitions: {}\n"
    path = write(tmp_path, text)
    with pytest.raises(DataError) as exc:
        load_model(path)
    n = text.count("\n")
    first = text.splitlines().index("transitions:") + 1
    assert exc.value.message == (f"invalid YAML at line {n}, column 1: duplicate key "
                                 f"'transitions' (first at line {first})")


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(DataError, match="cannot read model"):
        load_model(tmp_path / "nope.yaml")
    with pytest.raises(DataError, match="the model file is empty"):
        load(tmp_path, "")
    with pytest.raises(DataError, match="must be a YAML mapping"):
        load(tmp_path, "- a\n- b\n")
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_model(path)
