"""Raw observations and emission families (docs/model.md, "Emissions"; docs/formats.md, "Observations"):
each family's log-likelihood against scipy, the file format, the model's emissions section, and
decode / simulate / validate / info with observations."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from cli_helpers import run_main
from flashseg.cli import cli
from flashseg.core.emissions import EmissionModel
from flashseg.errors import DataError
from flashseg.io.model import load_model
from flashseg.io.observations import ObservationsWriter, open_observations
from flashseg.io.tracks import TracksWriter

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is the independent reference for the families")

ROOT = Path(__file__).resolve().parents[1]
MARKS_MODEL = ROOT / "configs" / "models" / "marks-4.yaml"


def invoke(*argv, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def fails(capsys, *argv, code=1):
    """The real entry point's one-line error (stderr)."""
    got, out, err = run_main([str(a) for a in argv], capsys)
    assert got == code and err.count("\n") == 1 and err.startswith("flashseg: error: "), err
    return err


# ------------------------------------------------------------ families vs scipy


def scipy_log_likelihood(family, params, x):
    """sum over present features of scipy's log pmf/pdf: (n, C)."""
    present = ~np.isnan(x)[:, None, :]
    v = np.nan_to_num(x)[:, None, :]
    with np.errstate(all="ignore"):
        if family == "bernoulli":
            terms = scipy_stats.bernoulli.logpmf(v, params["p"][None])
        elif family == "poisson":
            terms = scipy_stats.poisson.logpmf(v, params["mean"][None])
        elif family == "negative_binomial":
            r, mu = params["dispersion"][None], params["mean"][None]
            terms = scipy_stats.nbinom.logpmf(v, r, r / (r + mu))   # variance mu + mu^2 / r
        else:
            terms = scipy_stats.norm.logpdf(v, params["mean"][None], params["sd"][None])
    return np.where(present, terms, 0.0).sum(axis=2)


def random_case(family, C, M, n, rng):
    if family == "bernoulli":
        p = rng.random((C, M))
        p[rng.random((C, M)) < 0.15] = 0.0
        p[rng.random((C, M)) < 0.15] = 1.0
        params = {"p": p}
        x = rng.integers(0, 2, (n, M)).astype(float)
    elif family in ("poisson", "negative_binomial"):
        mean = rng.gamma(1.0, 5.0, (C, M))
        mean[rng.random((C, M)) < 0.15] = 0.0
        params = {"mean": mean}
        if family == "negative_binomial":
            params["dispersion"] = rng.gamma(1.0, 2.0, (C, M)) + 1e-3
        x = rng.poisson(rng.gamma(1.0, 5.0, (n, M))).astype(float)
    else:
        params = {"mean": rng.normal(0, 5, (C, M)), "sd": rng.gamma(2.0, 1.0, (C, M)) + 1e-3}
        x = rng.normal(0, 5, (n, M))
    x[rng.random((n, M)) < 0.2] = np.nan
    return params, x


@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(["bernoulli", "poisson", "negative_binomial", "gaussian"]),
       C=st.integers(1, 5), M=st.integers(1, 6), n=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_each_family_matches_scipy(family, C, M, n, seed):
    rng = np.random.default_rng(seed)
    params, x = random_case(family, C, M, n, rng)
    em = EmissionModel(family, tuple(f"f{j}" for j in range(M)), params)
    got = em.log_likelihood(x)
    want = scipy_log_likelihood(family, params, x)
    assert got.shape == (n, C)
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-10)
    if family == "bernoulli":   # every p inside (0, 1): the kernel that starts from the all-absent score
        inside = {"p": np.clip(params["p"], 0.01, 0.99)}
        got = EmissionModel(family, em.features, inside).log_likelihood(x)
        np.testing.assert_allclose(got, scipy_log_likelihood(family, inside, x), rtol=1e-12, atol=1e-10)


def test_missing_values_contribute_nothing_and_impossible_values_are_minus_inf():
    em = EmissionModel("bernoulli", ("a", "b"), {"p": [[0.0, 0.5], [1.0, 0.25]]})
    got = em.log_likelihood(np.array([[np.nan, np.nan], [1.0, np.nan], [0.0, 1.0]]))
    assert got[0].tolist() == [0.0, 0.0]
    assert got[1, 0] == -np.inf and got[1, 1] == 0.0
    assert got[2, 0] == pytest.approx(np.log(0.5)) and got[2, 1] == -np.inf


def test_sampling_follows_the_family():
    rng = np.random.default_rng(1)
    em = EmissionModel("negative_binomial", ("a",), {"mean": [[4.0], [20.0]], "dispersion": [[2.0], [5.0]]})
    draws = em.sample(np.repeat([0, 1], 200_000), rng).astype(float)
    for c, (mu, r) in enumerate([(4.0, 2.0), (20.0, 5.0)]):
        d = draws[c * 200_000:(c + 1) * 200_000, 0]
        assert d.mean() == pytest.approx(mu, rel=0.02)
        assert d.var() == pytest.approx(mu + mu * mu / r, rel=0.05)
    b = EmissionModel("bernoulli", ("a", "b"), {"p": [[0.2, 0.9]]}).sample(np.zeros(100_000, int), rng)
    assert b.dtype == np.uint8 and np.allclose(b.mean(axis=0), [0.2, 0.9], atol=0.01)


# ------------------------------------------------------------ the file format


def write_observations(path, contigs, features=("a", "b"), kind="binary", bin_size=10, lengths=None):
    with ObservationsWriter(path, features=features, kind=kind, bin_size=bin_size) as w:
        for name, rows in contigs.items():
            w.add_contig(name, len(rows), length_bp=(lengths or {}).get(name))
            w.write(name, 0, np.asarray(rows))
    return str(path)


def test_round_trip_and_missing_codes(tmp_path):
    path = write_observations(tmp_path / "o.h5", {"chr2": [[0, 1], [2, 1], [1, 0]], "chr1": [[1, 1]]},
                              lengths={"chr2": 25})
    with open_observations(path) as f:
        assert f.kind == "binary" and f.features == ["a", "b"] and f.contigs == ["chr2", "chr1"]
        assert f.n_bins("chr2") == 3 and f.length_bp("chr2") == 25 and f.length_bp("chr1") is None
        assert f.dtype("chr2") == "uint8"
        x = f.read("chr2", 0, 3)
        assert np.isnan(x[1, 0]) and x[0].tolist() == [0.0, 1.0] and x[2].tolist() == [1.0, 0.0]
    counts = write_observations(tmp_path / "c.h5", {"chr1": [[3, -1], [0, 7]]}, kind="count")
    with open_observations(counts) as f:
        x = f.read("chr1", 0, 2)
        assert f.dtype("chr1") == "int32" and np.isnan(x[0, 1]) and x[1].tolist() == [0.0, 7.0]


@pytest.mark.parametrize("kind,rows,message", [
    ("binary", [[0, 3]], "binary observations must be 0, 1 or 2"),
    ("count", [[0, -2]], "counts must be >= 0"),
    ("continuous", [[0.0, np.inf]], "must be finite"),
])
def test_writer_refuses_values_the_kind_cannot_hold(tmp_path, kind, rows, message):
    with pytest.raises(DataError, match=message) as info:
        write_observations(tmp_path / "o.h5", {"chr1": rows}, kind=kind)
    assert "feature b" in str(info.value) and not (tmp_path / "o.h5").exists()


def test_reader_names_file_contig_and_bin_of_a_bad_value(tmp_path):
    path = write_observations(tmp_path / "o.h5", {"chr1": [[0, 1]] * 5})
    with h5py.File(path, "a") as f:
        f["observations/chr1"][3, 1] = 7
    with open_observations(path) as f, pytest.raises(DataError) as info:
        f.read("chr1", 0, 5)
    err = info.value
    assert err.file == path and err.contig == "chr1" and err.bin == 3 and "feature b is 7" in str(err)


# ------------------------------------------------------------ the model's emissions section


def marks_yaml(**edits):
    data = yaml.safe_load(MARKS_MODEL.read_text())
    for key, value in edits.items():
        if value is None:
            del data["emissions"][key]
        else:
            data["emissions"][key] = value
    return data


@pytest.mark.parametrize("edit,message", [
    ({"family": "binomial"}, "emissions.family: must be one of"),
    ({"p": {"Promoter": [0.9, 0.6, 0.4]}}, "emissions.p.Promoter: must be a list of 4 numbers"),
    ({"p": {"Promoter": [0.9, 0.6, 0.4, 1.5]}}, r"emissions.p.Promoter\[3\]: must be a probability"),
    ({"p": {"Promoter": [0.9, 0.6, 0.4, 0.1]}}, "emissions.p.Enhancer: missing"),
    ({"p": {"Promoter": [0.9, 0.6, 0.4, 0.1], "Promotor": [0, 0, 0, 0]}}, "did you mean Promoter"),
    ({"mean": {"Promoter": [1, 1, 1, 1]}}, "emissions.mean: unknown key for family bernoulli"),
    ({"features": ["a", "a", "b", "c"]}, r"emissions.features\[1\]: duplicate feature"),
    ({"features": None}, "emissions.features: must be a non-empty list"),
])
def test_bad_emissions_sections_name_the_key(tmp_path, edit, message):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(marks_yaml(**edit)))
    with pytest.raises(DataError, match=message) as info:
        load_model(path)
    assert info.value.file == str(path)


def test_family_parameters_parse_in_label_order(tmp_path):
    data = marks_yaml(family="negative_binomial", p=None,
                      mean={name: [1, 2, 3, 4] for name in ("Quiescent", "Repressed", "Enhancer")}
                      | {"Promoter": [5, 6, 7, 0]},
                      dispersion={name: [0.5, 1, 2, 4] for name in ("Promoter", "Enhancer", "Repressed",
                                                                     "Quiescent")})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    em = load_model(path).emissions
    assert em.kind == "count" and em.params["mean"][0].tolist() == [5, 6, 7, 0]
    assert em.params["dispersion"][3].tolist() == [0.5, 1, 2, 4]


# ------------------------------------------------------------ commands


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "sim"
    invoke("simulate", "-m", MARKS_MODEL, "--contig", "chr1:600000", "--contig", "chr2:160000", "-o", out,
           "--seed", "3")
    return out


def test_simulate_writes_observations_drawn_from_the_emissions(simulated):
    assert (simulated / "observations.h5").exists() and not (simulated / "tracks.h5").exists()
    spec = load_model(MARKS_MODEL)
    truth = [line.split("\t") for line in (simulated / "truth.bed").read_text().splitlines()
             if not line.startswith("#")]
    with open_observations(simulated / "observations.h5") as f:
        assert f.features == list(spec.emissions.features) and f.kind == "binary"
        x = f.read("chr1", 0, f.n_bins("chr1"))
    labels = np.empty(len(x), dtype=int)
    for chrom, start, end, name in truth:
        if chrom == "chr1":
            labels[int(start) // 200:(int(end) + 199) // 200] = spec.label_index(name.strip())
    for c in range(spec.n_labels):
        rows = x[labels == c]
        if len(rows) > 500:
            assert np.allclose(rows.mean(axis=0), spec.emissions.params["p"][c], atol=0.05)


def test_decode_from_observations_equals_decode_from_tracks_computed_by_hand(simulated, tmp_path):
    spec = load_model(MARKS_MODEL)
    p = spec.emissions.params["p"]
    tracks = tmp_path / "hand.h5"
    with open_observations(simulated / "observations.h5") as f, \
            TracksWriter(tracks, labels=spec.label_names, bin_size=200, dtype="float64") as w:
        for name in f.contigs:
            x = f.read(name, 0, f.n_bins(name))
            w.add_contig(name, len(x), length_bp=f.length_bp(name))
            w.write(name, 0, scipy_log_likelihood("bernoulli", {"p": p}, x))
    common = ["-m", MARKS_MODEL, "--fasta", simulated / "genome.fa", "--method", "posterior"]
    invoke("decode", *common, "--observations", simulated / "observations.h5", "-o", tmp_path / "obs.bed",
           "--posteriors", tmp_path / "obs.h5", "--chunk-size", "777")
    invoke("decode", *common, "-t", tracks, "-o", tmp_path / "hand.bed", "--posteriors", tmp_path / "hand_p.h5")

    def body(path):
        return [line for line in path.read_text().splitlines() if not line.startswith("##flashseg command")]
    assert body(tmp_path / "obs.bed") == body(tmp_path / "hand.bed")
    with h5py.File(tmp_path / "obs.h5") as a, h5py.File(tmp_path / "hand_p.h5") as b:
        for name in ("chr1", "chr2"):
            np.testing.assert_allclose(a["tracks"][name][:], b["tracks"][name][:], atol=1e-6)
    # and the calls recover the truth
    calls = [line.split("\t") for line in body(tmp_path / "obs.bed") if not line.startswith("#")]
    truth = [line.split("\t") for line in (simulated / "truth.bed").read_text().splitlines()
             if not line.startswith("#")]

    def per_bin(rows):
        out = {}
        for row in rows:
            out.setdefault(row[0], []).extend([row[3].strip()] * ((int(row[2]) - int(row[1]) + 199) // 200))
        return out
    got, want = per_bin(calls), per_bin(truth)
    agree = np.mean([a == b for name in want for a, b in zip(got[name], want[name])])
    assert agree > 0.8


def test_observations_and_tracks_add(simulated, tmp_path):
    spec = load_model(MARKS_MODEL)
    extra = tmp_path / "extra.h5"
    rng = np.random.default_rng(0)
    bias = {}
    with open_observations(simulated / "observations.h5") as f, \
            TracksWriter(extra, labels=spec.label_names[::-1], bin_size=200, dtype="float64") as w:
        for name in f.contigs:
            bias[name] = rng.normal(0, 1, (f.n_bins(name), spec.n_labels))
            w.add_contig(name, f.n_bins(name))
            w.write(name, 0, bias[name][:, ::-1])
    from flashseg.io.tracks import open_track_set

    with open_track_set([(str(extra), 0.5)], spec.label_names, observations=[simulated / "observations.h5"],
                        spec=spec) as both, open_observations(simulated / "observations.h5") as f:
        x = f.read("chr2", 10, 90)
        want = spec.emissions.log_likelihood(x) + 0.5 * bias["chr2"][10:90]
        np.testing.assert_allclose(both.read("chr2", 10, 90), want, rtol=1e-12)


def test_features_are_matched_by_name(simulated, tmp_path, caplog, capsys):
    spec = load_model(MARKS_MODEL)
    shuffled = tmp_path / "shuffled.h5"
    order = [3, "extra", 0, 2, 1]
    names = list(spec.emissions.features)
    with open_observations(simulated / "observations.h5") as f, \
            ObservationsWriter(shuffled, features=[names[j] if j != "extra" else "H2A.Z" for j in order],
                               kind="binary", bin_size=200) as w:
        for name in f.contigs:
            raw = f.read_raw(name, 0, f.n_bins(name))
            cols = [raw[:, j] if j != "extra" else np.ones(len(raw), np.uint8) for j in order]
            w.add_contig(name, len(raw), length_bp=f.length_bp(name))
            w.write(name, 0, np.stack(cols, axis=1))
    import logging

    from flashseg.io.observations import ObservationScores

    logger = logging.getLogger("flashseg")   # the CLI stops it propagating to the root
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="flashseg"), \
                ObservationScores(simulated / "observations.h5", spec) as a, ObservationScores(shuffled, spec) as b:
            np.testing.assert_array_equal(a.read("chr1", 0, 3000), b.read("chr1", 0, 3000))
    finally:
        logger.removeHandler(caplog.handler)
    assert "1 feature(s) not in the model's emissions are ignored: H2A.Z" in caplog.text
    lacking = write_observations(tmp_path / "lacking.h5", {"chr1": [[0, 1]]}, features=("H3K4me3", "x"),
                                 bin_size=200)
    err = fails(capsys, "decode", "-m", MARKS_MODEL, "--observations", lacking)
    assert "feature H3K27ac of the model's emissions is not in the file" in err
    assert "also missing: H3K4me1, H3K27me3" in err and lacking in err


def test_wrong_kind_for_the_family_is_an_error(tmp_path, capsys):
    counts = write_observations(tmp_path / "c.h5", {"chr1": [[0, 1, 2, 3]]}, kind="count", bin_size=200,
                                features=("H3K4me3", "H3K27ac", "H3K4me1", "H3K27me3"))
    err = fails(capsys, "decode", "-m", MARKS_MODEL, "--observations", counts)
    assert "count observations cannot be scored with the model's bernoulli emissions" in err
    err = fails(capsys, "decode", "-m", ROOT / "configs" / "models" / "demo.yaml", "--observations", counts)
    assert "the model has no emissions section" in err


def test_validate_and_info(simulated, tmp_path):
    out = invoke("validate", "-m", MARKS_MODEL, "--observations", simulated / "observations.h5").output
    assert "bernoulli emissions over 4 features" in out and "decodable: 2 contigs, 3800 bins" in out
    out = invoke("info", simulated / "observations.h5").output
    assert "observations\tbinary" in out and "features\t4\tH3K4me3, H3K27ac, H3K4me1, H3K27me3" in out
    assert "chr1\t3000\t600000\tuint8\tlzf" in out
    data = json.loads(invoke("info", "--json", MARKS_MODEL).output)
    assert [lab["name"] for lab in data["labels"]] == ["Promoter", "Enhancer", "Repressed", "Quiescent"]
    assert data["labels"][1]["mean_duration"] == pytest.approx(5.0)
    assert 0 < data["labels"][0]["tail_rho"] < 1
    assert data["transitions"]["Promoter"]["Enhancer"] == pytest.approx(0.4)
    assert data["emissions"]["family"] == "bernoulli"
    assert data["emissions"]["p"]["Enhancer"] == [0.05, 0.55, 0.8, 0.03]
    hmm = json.loads(invoke("info", "--json", ROOT / "configs" / "models" / "hmm-4.yaml").output)
    assert hmm["emissions"] is None and hmm["labels"][0]["tail_rho"] is None
    assert hmm["labels"][0]["mean_duration"] == 1.0


def test_mean_duration_includes_the_tail():
    spec = load_model(ROOT / "configs" / "models" / "chromatin-12.yaml")
    model = spec.model
    d = np.arange(1, 20001)
    for c in range(spec.n_labels):
        w = np.exp([model.log_duration(int(k))[c] for k in d])
        assert model.mean_durations()[c] == pytest.approx((d * w).sum() / w.sum(), rel=1e-9)
