"""Emission families: how a bin's raw observations score each label
(docs/model.md, "Emissions").

A bin holds M features, independent given the label; its log-likelihood
under label c is the sum over its present features of the family's
log-density, and a missing feature (NaN here) contributes nothing. Families
and their parameters, each a (C, M) array in the model's label order:

    bernoulli          p      P(feature present | label), in [0, 1]
    poisson            mean   >= 0
    negative_binomial  mean   >= 0, dispersion > 0: variance mean + mean^2 / dispersion
                              (the duration laws' convention; the reads-based
                              ``coverage:`` section uses mean + dispersion * mean^2)
    gaussian           mean, sd > 0

A probability of 0 (p = 0 or 1, or a mean of 0 with a positive count) gives
``-inf``: the label cannot explain that bin.

The core never reads files: ``flashseg.io.model`` builds an
:class:`EmissionModel` from the YAML, ``flashseg.io.observations`` hands it
float64 rows with NaN for missing values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: family -> its parameters, in YAML order
FAMILIES = {
    "bernoulli": ("p",),
    "poisson": ("mean",),
    "negative_binomial": ("mean", "dispersion"),
    "gaussian": ("mean", "sd"),
}
#: observation kind -> the families that can score it (the first is the default)
KIND_FAMILIES = {
    "binary": ("bernoulli",),
    "count": ("poisson", "negative_binomial"),
    "continuous": ("gaussian",),
}
FAMILY_KIND = {family: kind for kind, families in KIND_FAMILIES.items() for family in families}


def check_parameter(family: str, name: str, value: float) -> str | None:
    """Why ``value`` is not allowed for parameter ``name`` of ``family`` (None when it is)."""
    if not math.isfinite(value):
        return "must be finite"
    if name == "p" and not 0.0 <= value <= 1.0:
        return "must be a probability in [0, 1]"
    if name == "mean" and family != "gaussian" and value < 0:
        return "must be >= 0"
    if name in ("dispersion", "sd") and not value > 0:
        return "must be > 0"
    return None


@dataclass(frozen=True)
class EmissionModel:
    """One family's parameters for C labels and M features (see the module doc)."""

    family: str
    features: tuple[str, ...]
    params: dict = field(compare=False)   # name -> (C, M) float64, read-only

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown emission family {self.family!r}")
        features = tuple(str(f) for f in self.features)
        if not features or len(set(features)) != len(features):
            raise ValueError("features must be non-empty and unique")
        object.__setattr__(self, "features", features)
        wanted = FAMILIES[self.family]
        if set(self.params) != set(wanted):
            raise ValueError(f"{self.family} takes {', '.join(wanted)}, got {', '.join(self.params)}")
        params = {}
        shape = None
        for name in wanted:
            a = np.ascontiguousarray(np.asarray(self.params[name], dtype=np.float64))
            if a.ndim != 2 or a.shape[1] != len(features):
                raise ValueError(f"{name}: expected a (C, {len(features)}) array, got {a.shape}")
            if shape is not None and a.shape != shape:
                raise ValueError(f"{name}: shape {a.shape} differs from {shape}")
            shape = a.shape
            for value in a.ravel():
                why = check_parameter(self.family, name, float(value))
                if why:
                    raise ValueError(f"{name}: {why}, got {value!r}")
            a.setflags(write=False)
            params[name] = a
        object.__setattr__(self, "params", params)

    @property
    def kind(self) -> str:
        """The observation kind this family scores: binary, count or continuous."""
        return FAMILY_KIND[self.family]

    @property
    def n_labels(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def n_features(self) -> int:
        return len(self.features)

    def log_likelihood(self, x) -> np.ndarray:
        """(n, C) float64 log P(row | label) for rows ``x`` (n, M), NaN = missing."""
        from . import emission_kernels as kernels

        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected an (n, {self.n_features}) array, got {x.shape}")
        out = np.empty((x.shape[0], self.n_labels))
        p = self.params
        if self.family == "bernoulli":
            with np.errstate(divide="ignore"):
                log_p, log_q = np.log(p["p"]), np.log1p(-p["p"])
            if np.isfinite(log_p).all() and np.isfinite(log_q).all():
                gain_present = np.ascontiguousarray((log_p - log_q).T)
                gain_missing = np.ascontiguousarray(-log_q.T)
                kernels.bernoulli_from_absent(x, log_q.sum(axis=1), gain_present, gain_missing, out)
            else:   # p of 0 or 1: -inf terms, summed one by one
                kernels.bernoulli(x, log_p, log_q, out)
        elif self.family == "poisson":
            with np.errstate(divide="ignore"):
                kernels.poisson(x, p["mean"], np.log(p["mean"]), out)
        elif self.family == "negative_binomial":
            kernels.negative_binomial(x, p["mean"], p["dispersion"], out)
        else:
            kernels.gaussian(x, p["mean"], p["sd"], out)
        return out

    def sample(self, labels, rng: np.random.Generator) -> np.ndarray:
        """Draw one row per bin given its label (n,) int: (n, M) in the kind's storage
        (binary uint8, count int32, continuous float64), nothing missing."""
        labels = np.asarray(labels, dtype=np.intp)
        p = self.params
        if self.family == "bernoulli":
            return (rng.random((labels.size, self.n_features)) < p["p"][labels]).astype(np.uint8)
        if self.family == "poisson":
            return rng.poisson(p["mean"][labels]).astype(np.int32)
        if self.family == "negative_binomial":
            mean, shape = p["mean"][labels], p["dispersion"][labels]
            # gamma-Poisson mixture: variance mean + mean^2 / shape
            rate = rng.gamma(shape, np.where(mean > 0, mean / shape, 0.0))
            return rng.poisson(rate).astype(np.int32)
        return rng.normal(p["mean"][labels], p["sd"][labels])

    def as_yaml(self, label_names) -> dict:
        """The ``emissions:`` section of a model YAML holding this model."""
        out = {"family": self.family, "features": list(self.features)}
        for name in FAMILIES[self.family]:
            out[name] = {label: [float(v) for v in row] for label, row in zip(label_names, self.params[name])}
        return out
