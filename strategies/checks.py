"""Checks for the keyword parameters of the strategy classes.

Each check returns the value in its canonical type or raises ValueError naming the
parameter and what it accepts; the strategy classes call them in `__init__`.
"""

from __future__ import annotations

import numpy as np

Seed = int | np.random.Generator


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Check a real-valued parameter; ValueError with the accepted range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        bracket = "(" if low_open else "["
        upper = "inf)" if high is None else f"{high}]"
        raise ValueError(f"{name} must lie in {bracket}{low}, {upper}, got {value!r}")
    if high is not None and number > high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return number


def check_integer(name: str, value: object, *, low: int) -> int:
    """Check an integer parameter >= `low` (bools rejected); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def check_choice(name: str, value: object, valid: tuple[str, ...]) -> str:
    """Check that `value` is one of the strings in `valid`; the error lists them in order."""
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
    return value


def check_seed(value: object) -> Seed:
    """A np.random.Generator as is, otherwise an integer seed >= 0."""
    if isinstance(value, np.random.Generator):
        return value
    return check_integer("seed", value, low=0)
