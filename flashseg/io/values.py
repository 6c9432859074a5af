"""Numbers and key paths of the YAML files (model, duration tables): one rule
for what a number is, and errors that start with the key path, e.g.
``labels[2].duration.mean: must be >= 1, got 0.5 (label Enhancer)``.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import DataError


def fmt(x: float) -> str:
    """A number as the user wrote it: 3 not 3.0, 0.9999999 not 1."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def short(value, limit: int = 60) -> str:
    """repr of a value for an error message, cut to ``limit`` characters: a
    message never grows with the input (a huge string, a long list)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + " ...>"


def key_error(key: str, msg: str, label: str | None = None) -> DataError:
    where = f" (label {label})" if label else ""
    return DataError(f"{key}: {msg}{where}")


def number(value: Any, key: str, label: str | None = None, *, allow_neg_inf: bool = False) -> float:
    """A finite number (or -inf where allowed); numeric strings count, booleans do not."""
    if isinstance(value, bool) or value is None:
        raise key_error(key, f"must be a number, got {short(value)}", label)
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:   # an integer beyond the largest double (YAML reads 1000...0 exactly)
            raise key_error(key, f"must be finite, got an integer of {value.bit_length()} bits", label) from None
    elif isinstance(value, str):
        # PyYAML reads 1e-3 (no dot) as a string; accept numeric strings.
        try:
            x = float(value.strip())
        except ValueError:
            raise key_error(key, f"must be a number, got {short(value)}", label) from None
    else:
        raise key_error(key, f"must be a number, got {type(value).__name__}", label)
    if math.isnan(x):
        raise key_error(key, "must be a number, got NaN", label)
    if x == math.inf or (x == -math.inf and not allow_neg_inf):
        raise key_error(key, f"must be finite, got {x}", label)
    return x


def integer(value: Any, key: str, label: str | None = None, *, minimum: int | None = None) -> int:
    x = number(value, key, label)
    if not float(x).is_integer():
        raise key_error(key, f"must be an integer, got {short(value)}", label)
    if minimum is not None and x < minimum:
        raise key_error(key, f"must be >= {minimum}, got {int(x)}", label)
    return int(x)
