"""The ``duration:`` mapping of the model YAML: read and validated here, its
law built by the core (``flashseg.core.durations``; docs/model.md,
"Durations").

Errors are :class:`flashseg.errors.DataError` whose message starts with the
key path (``labels[2].duration.mean: ...``); the model loader adds the file.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..core.durations import DurationLaw, DurationTable, duration_table, family_law
from .values import fmt as _fmt, key_error as _err, number as _number, integer as _integer, short

__all__ = ["FAMILIES", "DurationLaw", "DurationTable", "parse_duration", "duration_table"]

NEG_INF = -math.inf


FAMILIES = {
    "geometric": ("mean",),
    "negative_binomial": ("mean", "dispersion"),
    "poisson": ("mean",),
    "lognormal": ("mu", "sigma"),
    "gamma": ("shape", "mean"),
    "uniform": (),
    "table": (),
}
_COMMON_KEYS = ("family", "min", "max", "tail_rho")
_TABLE_KEYS = ("probabilities", "log", "path", "scale")


def _read_column(path: Path, key: str, label: str | None) -> list[float]:
    from .model import read_bounded

    raw = read_bounded(path, "duration table", key)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _err(key, f"table {path} is not UTF-8 text (byte {exc.start})", label) from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 1:
            raise _err(key, f"{path}:{lineno}: expected one column, got {len(fields)}", label)
        try:
            values.append(float(fields[0]))
        except ValueError:
            # (the line itself is not echoed: the path may name any readable file)
            raise _err(key, f"{path}:{lineno}: not a number", label) from None
    if not values:
        raise _err(key, f"{path}: table is empty", label)
    return values


def _parse_table(spec: Mapping, key: str, label: str | None,
                 base_dir: Path | None) -> tuple[np.ndarray, bool, dict]:
    given = [k for k in ("probabilities", "log", "path") if k in spec]
    if len(given) != 1:
        raise _err(key, "table needs exactly one of probabilities, log, path", label)
    kind = given[0]
    source = spec[kind]
    if kind == "path":
        scale = spec.get("scale", "probabilities")
        if scale not in ("probabilities", "log"):
            raise _err(f"{key}.scale", f"must be probabilities or log, got {short(scale)}", label)
        kind = scale
    elif "scale" in spec:
        raise _err(f"{key}.scale", "only with path:", label)
    if isinstance(source, str):
        p = Path(source)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        raw = _read_column(p, f"{key}.{given[0]}", label)
        params = {"path": str(p)}
    elif isinstance(source, (list, tuple)):
        raw = list(source)
        params = {}
        if not raw:
            raise _err(f"{key}.{kind}", "table is empty", label)
    else:
        raise _err(f"{key}.{given[0]}", "must be a list of numbers or a file path", label)
    if kind == "log":
        values = np.array([_number(v, f"{key}.log[{i}]", label, allow_neg_inf=True)
                           for i, v in enumerate(raw)])
        return values, True, params
    probs = np.array([_number(v, f"{key}.probabilities[{i}]", label) for i, v in enumerate(raw)])
    bad = np.flatnonzero(probs < 0)
    if bad.size:
        i = int(bad[0])
        raise _err(f"{key}.probabilities[{i}]", f"must be >= 0, got {_fmt(probs[i])}", label)
    if probs.sum() <= 0:
        raise _err(f"{key}.probabilities", "must have a positive sum", label)
    with np.errstate(divide="ignore"):
        logs = np.log(probs) - math.log(probs.sum())
    return logs, False, params


def not_computable(key: str, exc: Exception, label: str | None):
    """The error for a law that double precision cannot evaluate (extreme parameters:
    an overflow, a division by zero, a series or continued fraction that does not converge)."""
    return _err(key, f"this law cannot be computed with these parameters ({exc or type(exc).__name__}); "
                "use less extreme values", label)


def _computed(key: str, label: str | None, compute, *args, **kwargs):
    try:
        return compute(*args, **kwargs)
    except (ArithmeticError, ValueError) as exc:
        raise not_computable(key, exc, label) from None


def parse_duration(spec: Any, *, key: str = "duration", label: str | None = None,
                   base_dir: str | Path | None = None) -> DurationLaw:
    """Validate one ``duration:`` mapping and build its truncated law."""
    if not isinstance(spec, Mapping):
        raise _err(key, "must be a mapping with a family, e.g. {family: geometric, mean: 10}", label)
    family = spec.get("family")
    if family is None:
        raise _err(f"{key}.family", f"missing; one of {', '.join(FAMILIES)}", label)
    if not isinstance(family, str) or family not in FAMILIES:
        raise _err(f"{key}.family", f"unknown family {short(family)}; one of {', '.join(FAMILIES)}", label)
    allowed = set(_COMMON_KEYS) | set(FAMILIES[family]) | (set(_TABLE_KEYS) if family == "table" else set())
    for k in spec:
        if k not in allowed:
            raise _err(f"{key}.{k}", f"unknown key for family {family} "
                       f"(allowed: {', '.join(sorted(allowed))})", label)
    for k in FAMILIES[family]:
        if k not in spec:
            raise _err(f"{key}.{k}", f"missing (needed by family {family})", label)
    base_dir = Path(base_dir) if base_dir is not None else None

    dmin = _integer(spec["min"], f"{key}.min", label) if spec.get("min") is not None else 1
    if dmin < 1:
        raise _err(f"{key}.min", f"must be >= 1, got {dmin}", label)
    raw_max = spec.get("max")
    if raw_max is None or (isinstance(raw_max, (int, float)) and not isinstance(raw_max, bool)
                           and raw_max == math.inf):
        dmax: float = math.inf
    else:
        dmax = _integer(raw_max, f"{key}.max", label)
        if dmax < dmin:
            raise _err(f"{key}.max", f"must be >= min ({dmin}), got {dmax}", label)
    tail_rho = None
    if spec.get("tail_rho") is not None:
        tail_rho = _number(spec["tail_rho"], f"{key}.tail_rho", label)
        if not 0.0 < tail_rho < 1.0:
            raise _err(f"{key}.tail_rho", f"must be in (0, 1), got {_fmt(tail_rho)}", label)

    params = {k: spec[k] for k in FAMILIES[family]}
    log_scores = False
    if family in ("geometric", "negative_binomial", "poisson"):
        mean = _number(spec["mean"], f"{key}.mean", label)
        if mean < 1:
            raise _err(f"{key}.mean", f"must be >= 1, got {_fmt(mean)}", label)
        dispersion = None
        if family == "negative_binomial":
            dispersion = _number(spec["dispersion"], f"{key}.dispersion", label)
            if dispersion <= 0:
                raise _err(f"{key}.dispersion", f"must be > 0, got {_fmt(dispersion)}", label)
        law = _computed(key, label, family_law, family, dmin, dmax, mean=mean, dispersion=dispersion)
    elif family == "lognormal":
        mu = _number(spec["mu"], f"{key}.mu", label)
        sigma = _number(spec["sigma"], f"{key}.sigma", label)
        if sigma <= 0:
            raise _err(f"{key}.sigma", f"must be > 0, got {_fmt(sigma)}", label)
        law = _computed(key, label, family_law, family, dmin, dmax, mu=mu, sigma=sigma)
    elif family == "gamma":
        shape = _number(spec["shape"], f"{key}.shape", label)
        if shape <= 0:
            raise _err(f"{key}.shape", f"must be > 0, got {_fmt(shape)}", label)
        mean = _number(spec["mean"], f"{key}.mean", label)
        if mean <= 0:
            raise _err(f"{key}.mean", f"must be > 0, got {_fmt(mean)}", label)
        law = _computed(key, label, family_law, family, dmin, dmax, shape=shape, mean=mean)
    elif family == "uniform":
        if math.isinf(dmax):
            raise _err(f"{key}.max", "uniform needs a finite max", label)
        law = _computed(key, label, family_law, family, dmin, dmax)
        params = {"min": dmin, "max": int(dmax)}
    else:
        values, log_scores, params = _parse_table(spec, key, label, base_dir)
        law = _computed(key, label, family_law, family, dmin, dmax, table=values)

    log_z = _computed(key, label, law.log_mass, dmin, dmax)
    if log_z == NEG_INF:
        raise _err(key, f"truncation to [{dmin}, {dmax}] leaves no probability mass", label)
    # Raw log scores are used as given: [min, max] only cuts them.
    return DurationLaw(family, params, dmin, dmax, tail_rho, key, label, law,
                       0.0 if log_scores else log_z, log_z, log_scores)


