"""The model YAML file (docs/model.md) -> :class:`ModelSpec` with the core's arrays.

Every problem is a :class:`flashseg.errors.DataError` naming the file, whose
message starts with the key path of the offending value, e.g.
``labels[2].duration.mean: must be > 0`` or
``transitions.Enhancer.Promotr: unknown label``.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from .. import bins
from ..core.emissions import FAMILIES, EmissionModel, check_parameter
from ..core.model import SemiMarkovModel
from ..errors import DataError
from .durations import DurationLaw, DurationTable, duration_table, not_computable, parse_duration
from .values import fmt as _fmt, integer, key_error as _err, number as _number, short

__all__ = ["load_model", "parse_model", "ModelSpec", "LabelSpec", "CoverageSpec"]

NEG_INF = -math.inf
TOP_KEYS = ("name", "description", "bin_size", "max_duration", "tail", "labels",
            "initial", "final", "transitions", "coverage", "emissions")
LABEL_KEYS = ("name", "color", "strand", "duration")
COVERAGE_KEYS = ("model", "dispersion", "mean")
STRANDS = (".", "+", "-")


@dataclass(frozen=True)
class LabelSpec:
    """One label: its BED name, itemRgb, strand, and its duration law."""

    name: str
    color: str = "0,0,0"
    strand: str = "."
    duration: DurationLaw | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CoverageSpec:
    """Read-depth emission model (docs/model.md, "Coverage").

    Counts around ``mu = mean[label] * depth`` with variance
    ``mu + dispersion * mu^2``; ``dispersion`` is 0 for ``poisson``.
    """

    model: str
    dispersion: float
    mean: np.ndarray  # (C,) relative copy ratio per label, > 0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    bin_size: int
    max_duration: int
    tail: str                      # "geometric" | "none"
    labels: list[LabelSpec]
    model: SemiMarkovModel
    durations: tuple[DurationTable, ...]
    mean_durations: np.ndarray     # (C,) mean duration in bins of each truncated law
    tail_rho: np.ndarray           # (C,) rho, nan where a label has no tail
    coverage: CoverageSpec | None
    path: str
    sha256: str
    warnings: list[str]
    description: str = ""
    emissions: EmissionModel | None = None   # docs/model.md, "Emissions"

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def input_files(self) -> list[str]:
        """The model file and the duration tables it reads (``path:``)."""
        tables = [lab.duration.params["path"] for lab in self.labels
                  if lab.duration is not None and "path" in lab.duration.params]
        return [self.path] + tables

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def label_index(self, name: str) -> int:
        return self.label_names.index(name)

    @property
    def transition_probabilities(self) -> np.ndarray:
        """exp of the transition log matrix (row = from), for display."""
        return np.exp(self.model.transition)


# --------------------------------------------------------------------------
# YAML reading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last) and
    aliases (``*name``): a model has no use for them, and a few nested aliases
    expand a 1 KB file into gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in a model",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # yaml reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {short(key)} (first at line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _checked_scalar(construct):
    """PyYAML's scalar constructors raise ValueError on some values (an integer of
    more than 4300 digits, the date 2001-13-45): a YAML error at that value instead."""
    def checked(loader, node):
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(None, None, f"invalid value ({str(exc).split(':')[0]})",
                                                    node.start_mark) from None
    return checked


for _tag in ("int", "float", "timestamp"):
    _tag = "tag:yaml.org,2002:" + _tag
    _StrictLoader.add_constructor(_tag, _checked_scalar(yaml.SafeLoader.yaml_constructors[_tag]))


def _yaml_error(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return f"invalid YAML: {problem}"
    msg = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    lines = text.splitlines()
    if mark.line < len(lines) and re.search(r":\s*-\s*$", lines[mark.line]):
        msg += ' (a bare "-" starts a list: quote it, e.g. strand: "-")'
    return msg


# --------------------------------------------------------------------------
# value parsing


def _label_key(key: Any, path: str, names: list[str]) -> str:
    """A mapping key that must name a label."""
    if isinstance(key, bool):
        raise _err(f"{path}.{key}", "unknown label (YAML reads unquoted yes/no/on/off as "
                   "booleans: quote the label name)")
    name = str(key)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise _err(f"{path}.{name}", f"unknown label{hint}")
    return name


def _log_map(obj: Any, path: str, names: list[str]) -> np.ndarray:
    """{label: log score} used as given; absent labels get -inf."""
    if not isinstance(obj, Mapping):
        raise _err(path, "must be a mapping {label: log score}")
    out = np.full(len(names), NEG_INF)
    for key, value in obj.items():
        name = _label_key(key, path, names)
        out[names.index(name)] = _number(value, f"{path}.{name}", None, allow_neg_inf=True)
    return out


def _prob_or_log_map(obj: Any, path: str, names: list[str]) -> np.ndarray:
    """{label: prob} (normalised, absent = 0) or {log: {label: score}} -> log scores."""
    if isinstance(obj, Mapping) and len(obj) == 1 and "log" in obj and isinstance(obj["log"], Mapping):
        return _log_map(obj["log"], f"{path}.log", names)
    if not isinstance(obj, Mapping):
        raise _err(path, "must be a mapping {label: probability} or {log: {label: score}}")
    probs = np.zeros(len(names))
    for key, value in obj.items():
        name = _label_key(key, path, names)
        p = _number(value, f"{path}.{name}", None)
        if p < 0:
            raise _err(f"{path}.{name}", f"probability must be >= 0, got {_fmt(p)}")
        probs[names.index(name)] = p
    total = probs.sum()
    if not total > 0:
        raise _err(path, "probabilities must have a positive sum")
    with np.errstate(divide="ignore"):
        return np.log(probs / total)


def _endpoint(obj: Any, path: str, names: list[str], default: str) -> np.ndarray:
    C = len(names)
    if obj is None:
        obj = default
    if obj == "uniform":
        return np.full(C, -math.log(C))
    if obj == "free":
        return np.zeros(C)
    if isinstance(obj, str):
        raise _err(path, f"must be uniform, free, {{label: prob}} or {{log: {{label: score}}}}, got {short(obj)}")
    out = _prob_or_log_map(obj, path, names)
    if not np.isfinite(out).any():
        raise _err(path, "every label has probability 0: no segmentation is possible")
    return out


def _color(value: Any, path: str) -> str:
    if value is None:
        return "0,0,0"
    if isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    else:
        parts = []
    ok = len(parts) == 3
    rgb = []
    for p in parts if ok else []:
        if isinstance(p, bool):
            ok = False
            break
        try:
            v = int(p)
        except (TypeError, ValueError):
            ok = False
            break
        if str(p).strip() != str(v) or not 0 <= v <= 255:
            ok = False
            break
        rgb.append(v)
    if not ok:
        raise _err(path, f'must be "r,g,b" with integers 0..255, got {short(value)}')
    return ",".join(map(str, rgb))


def _labels(obj: Any, base_dir: Path) -> tuple[list[LabelSpec], list[str]]:
    if not isinstance(obj, list) or not obj:
        raise _err("labels", "must be a non-empty list of {name, color, strand, duration}")
    labels, names = [], []
    for i, item in enumerate(obj):
        path = f"labels[{i}]"
        if not isinstance(item, Mapping):
            raise _err(path, "must be a mapping with name, duration (and color, strand)")
        for k in item:
            if k not in LABEL_KEYS:
                raise _err(f"{path}.{k}", f"unknown key (allowed: {', '.join(LABEL_KEYS)})")
        if item.get("name") is None:
            raise _err(f"{path}.name", "missing")
        name = item["name"]
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            raise _err(f"{path}.name", f"must be a string, got {short(name)}")
        name = str(name)
        if not name or re.search(r"\s", name):
            raise _err(f"{path}.name", f"must be non-empty without whitespace, got {short(name)}")
        if name in names:
            raise _err(f"{path}.name", f"duplicate label {short(name)} (also labels[{names.index(name)}])")
        names.append(name)
        color = _color(item.get("color"), f"{path}.color")
        strand = item.get("strand", ".")
        if strand is None:
            strand = "."
        if strand not in STRANDS:
            raise _err(f"{path}.strand", f'must be ".", "+" or "-", got {short(strand)}')
        if "duration" not in item:
            raise _err(f"{path}.duration", "missing")
        law = parse_duration(item["duration"], key=f"{path}.duration", label=name, base_dir=base_dir)
        labels.append(LabelSpec(name, color, strand, law))
    return labels, names


def _transitions(obj: Any, names: list[str]) -> np.ndarray:
    C = len(names)
    out = np.full((C, C), NEG_INF)
    if obj is None:
        return out
    if not isinstance(obj, Mapping):
        raise _err("transitions", "must be a mapping {from_label: {to_label: probability}}")
    for key, row in obj.items():
        name = _label_key(key, "transitions", names)
        path = f"transitions.{name}"
        if row is None or (isinstance(row, Mapping) and not row):
            continue  # no outgoing transitions: the label can only end the contig
        out[names.index(name)] = _prob_or_log_map(row, path, names)
    return out


def _coverage(obj: Any, names: list[str]) -> CoverageSpec | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise _err("coverage", "must be a mapping with model, mean (and dispersion)")
    for k in obj:
        if k not in COVERAGE_KEYS:
            raise _err(f"coverage.{k}", f"unknown key (allowed: {', '.join(COVERAGE_KEYS)})")
    model = obj.get("model")
    if model not in ("poisson", "negative_binomial"):
        raise _err("coverage.model", f"must be poisson or negative_binomial, got {short(model)}")
    dispersion = 0.0
    if model == "negative_binomial":
        if obj.get("dispersion") is None:
            raise _err("coverage.dispersion", "missing (needed by negative_binomial)")
        dispersion = _number(obj["dispersion"], "coverage.dispersion", None)
        if dispersion <= 0:
            raise _err("coverage.dispersion", f"must be > 0, got {_fmt(dispersion)}")
    elif obj.get("dispersion") is not None:
        raise _err("coverage.dispersion", "only for model: negative_binomial")
    means = obj.get("mean")
    if not isinstance(means, Mapping):
        raise _err("coverage.mean", "must be a mapping {label: relative copy ratio}")
    mean = np.full(len(names), np.nan)
    for key, value in means.items():
        name = _label_key(key, "coverage.mean", names)
        v = _number(value, f"coverage.mean.{name}", None)
        if v <= 0:
            raise _err(f"coverage.mean.{name}", f"must be > 0, got {_fmt(v)}")
        mean[names.index(name)] = v
    missing = [n for n, v in zip(names, mean) if np.isnan(v)]
    if missing:
        raise _err(f"coverage.mean.{missing[0]}", "missing (every label needs a mean"
                   + (f"; also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ")"))
    mean.setflags(write=False)
    return CoverageSpec(model, dispersion, mean)


def _emissions(obj: Any, names: list[str]) -> EmissionModel | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise _err("emissions", "must be a mapping with family, features and the family's parameters")
    family = obj.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        raise _err("emissions.family", f"must be one of {', '.join(FAMILIES)}, got {short(family)}")
    allowed = ("family", "features") + FAMILIES[family]
    for k in obj:
        if k not in allowed:
            raise _err(f"emissions.{k}", f"unknown key for family {family} (allowed: {', '.join(allowed)})")
    features = obj.get("features")
    if not isinstance(features, list) or not features:
        raise _err("emissions.features", "must be a non-empty list of feature names")
    for j, feature in enumerate(features):
        if isinstance(feature, bool) or not isinstance(feature, (str, int)) or not str(feature).strip():
            raise _err(f"emissions.features[{j}]", f"must be a name, got {short(feature)}")
    features = [str(f) for f in features]
    for j, feature in enumerate(features):
        if feature in features[:j]:
            raise _err(f"emissions.features[{j}]", f"duplicate feature {short(feature)}")
    M = len(features)
    params = {}
    for pname in FAMILIES[family]:
        table = obj.get(pname)
        path = f"emissions.{pname}"
        if not isinstance(table, Mapping):
            raise _err(path, f"missing or not a mapping {{label: [one value per feature ({M})]}}")
        values = np.full((len(names), M), np.nan)
        for key, row in table.items():
            name = _label_key(key, path, names)
            if not isinstance(row, list) or len(row) != M:
                raise _err(f"{path}.{name}", f"must be a list of {M} numbers, one per feature")
            for j, v in enumerate(row):
                x = _number(v, f"{path}.{name}[{j}]", None)
                why = check_parameter(family, pname, x)
                if why:
                    raise _err(f"{path}.{name}[{j}]", f"{why}, got {_fmt(x)} (feature {features[j]})")
                values[names.index(name), j] = x
        missing = [n for n, row in zip(names, values) if np.isnan(row).any()]
        if missing:
            raise _err(f"{path}.{missing[0]}", "missing (every label needs one"
                       + (f"; also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ")"))
        params[pname] = values
    return EmissionModel(family, tuple(features), params)


def parse_model(data: Any, *, base_dir: str | Path = ".", path: str = "<model>",
                sha256: str = "") -> ModelSpec:
    """Build a :class:`ModelSpec` from already-loaded YAML data.

    Errors carry no file; :func:`load_model` adds it.
    """
    base_dir = Path(base_dir)
    if data is None:
        raise DataError("the model file is empty")
    if not isinstance(data, Mapping):
        raise DataError("the model must be a YAML mapping (name, bin_size, max_duration, labels, ...)")
    for k in data:
        if k not in TOP_KEYS:
            raise _err(str(k), f"unknown key (allowed: {', '.join(TOP_KEYS)})")
    for k in ("bin_size", "max_duration", "labels", "transitions"):
        if k not in data:
            raise _err(k, "missing")
    name = data.get("name")
    if name is None:
        name = Path(path).stem
    elif not isinstance(name, str) or not name.strip():
        raise _err("name", f"must be a non-empty string, got {short(name)}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise _err("description", "must be a string")
    bin_size = integer(data["bin_size"], "bin_size", minimum=1)
    if bin_size > bins.MAX_BIN_SIZE:
        raise _err("bin_size", f"must be at most {bins.MAX_BIN_SIZE} bp, got {bin_size}")
    K = integer(data["max_duration"], "max_duration", minimum=1)
    if K > MAX_DURATION:
        raise _err("max_duration", f"must be at most {MAX_DURATION} bins, got {K}: the tables and the core's "
                   f"state grow with it (about {8 * 12 * K / 2**30:.3g} GiB per label and thread); model "
                   "longer segments with the geometric tail")
    tail = data.get("tail", "geometric")
    if tail is None:
        tail = "geometric"
    if tail not in ("geometric", "none"):
        raise _err("tail", f"must be geometric or none, got {short(tail)}")

    labels, names = _labels(data["labels"], base_dir)
    warnings: list[str] = []
    tables = []
    for i, lab in enumerate(labels):
        try:
            table = duration_table(lab.duration, K, tail)
        except (ArithmeticError, ValueError) as exc:
            raise not_computable(f"labels[{i}].duration", exc, lab.name) from None
        warnings.extend(table.warnings)
        if table.log_prob.max() == NEG_INF and not table.has_tail:
            warnings.append(f"labels[{i}].duration: no duration is possible with max_duration={K} "
                            f"and tail: {tail}; label {lab.name} can never occur")
        tables.append(table)

    initial = _endpoint(data.get("initial"), "initial", names, "uniform")
    final = _endpoint(data.get("final"), "final", names, "free")
    transition = _transitions(data["transitions"], names)
    coverage = _coverage(data.get("coverage"), names)
    emissions = _emissions(data.get("emissions"), names)

    duration = np.stack([t.log_prob for t in tables], axis=1)
    log_rho = np.array([t.log_rho for t in tables])
    try:
        model = SemiMarkovModel(duration, None if tail == "none" else log_rho,
                                transition, initial, final)
    except ValueError as exc:  # the checks above should make this unreachable
        raise DataError(f"invalid model: {exc}") from None
    tail_rho = np.where(np.isfinite(log_rho) & (tail != "none"), np.exp(log_rho), np.nan)
    mean_durations = np.array([t.mean for t in tables])
    for a in (tail_rho, mean_durations):
        a.setflags(write=False)
    return ModelSpec(name=str(name), bin_size=bin_size, max_duration=K, tail=tail, labels=labels,
                     model=model, durations=tuple(tables), mean_durations=mean_durations,
                     tail_rho=tail_rho, coverage=coverage, path=str(path), sha256=sha256,
                     warnings=warnings, description=description, emissions=emissions)


#: Largest max_duration (bins) a model may have.
MAX_DURATION = 1_000_000
#: Largest model or duration-table file read (bytes): far beyond any real model.
MAX_FILE_BYTES = 64 << 20


def read_bounded(path: Path, what: str, key: str | None = None) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES (never a device,
    FIFO or directory, which could be endless): errors name the file."""
    import os
    import stat

    def fail(msg):
        return _err(key, msg) if key else DataError(msg, file=str(path))

    try:
        info = os.stat(path)
    except OSError as exc:
        raise fail(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise fail(f"{what} {path} is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise fail(f"{what} {path} is {info.st_size} bytes, more than the {MAX_FILE_BYTES >> 20} MB a {what} may have")
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]
    except OSError as exc:
        raise fail(f"cannot read {what} {path}: {exc.strerror}") from None


def load_model(path: str | Path) -> ModelSpec:
    """Read and validate a model YAML file (docs/model.md, "YAML reference").

    Raises DataError(file=path) whose message starts with the key path.
    """
    path = Path(path)
    raw = read_bounded(path, "model")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise DataError(_yaml_error(exc, text), file=str(path)) from None
    except RecursionError:      # PyYAML composes nested collections recursively
        raise DataError("invalid YAML: collections nested too deeply", file=str(path)) from None
    try:
        return parse_model(data, base_dir=path.parent, path=str(path),
                           sha256=hashlib.sha256(raw).hexdigest())
    except DataError as exc:
        raise exc.located(file=str(path)) from None


# --------------------------------------------------------------------------
# writing


def model_text(*, name: str, description: str, bin_size: int, labels, colors, model: SemiMarkovModel,
               emissions: EmissionModel | None = None, comments=()) -> str:
    """A model YAML holding ``model`` exactly (up to float repr): duration tables
    as ``log:`` lists of K entries with their ``tail_rho`` (which the loader
    honours on tables), transitions and initial as probabilities, ``final: free``
    unless the model's final scores say otherwise. ``comments`` become ``#``
    lines at the top (provenance)."""
    names = list(labels)
    K = model.max_duration
    tail = "none" if model.tail_log_rho is None else "geometric"
    rho = model.tail_or_none()
    out_labels = []
    for c, label in enumerate(names):
        duration = {"family": "table", "log": [float(v) for v in model.duration[:, c]]}
        if tail == "geometric" and np.isfinite(rho[c]):
            duration["tail_rho"] = float(math.exp(rho[c]))
        out_labels.append({"name": label, "color": colors[c], "duration": duration})

    def probabilities(row):
        p = np.exp(row - np.max(row)) if np.isfinite(row).any() else np.zeros_like(row)
        p = p / p.sum() if p.sum() > 0 else p
        return {names[j]: float(p[j]) for j in range(len(names)) if p[j] > 0}

    doc = {"name": name, "description": description, "bin_size": int(bin_size), "max_duration": int(K),
           "tail": tail, "labels": out_labels, "initial": probabilities(model.initial)}
    if np.all(model.final == 0):
        doc["final"] = "free"
    else:
        doc["final"] = {"log": {n: float(v) for n, v in zip(names, model.final)}}
    doc["transitions"] = {n: (probabilities(model.transition[c]) or None) for c, n in enumerate(names)}
    if emissions is not None:
        doc["emissions"] = emissions.as_yaml(names)
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)
    head = "".join(f"# {line}\n" for line in comments)
    return head + body
