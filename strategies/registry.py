"""The name registry: every strategy class by its `name`, built with checked parameters.

Use `get_strategy(name, **params)`, e.g. ``get_strategy("hybrid", lam=0.5)``;
`available_strategies()` lists the names and `strategy_params(name)` a strategy's
parameters. An unknown name or parameter raises ValueError listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from strategies.hybrids import RankMix, UncertaintyThenKCenter
from strategies.selection import (
    SCORE_STRATEGIES,
    KCenter,
    RandomStrategy,
    Strategy,
    accepted_params,
    build_strategy,
)
from strategies.typical import TypiClust

_CLASSES: tuple[type[Strategy], ...] = (
    RandomStrategy,
    *SCORE_STRATEGIES.values(),
    KCenter,
    UncertaintyThenKCenter,
    RankMix,
    TypiClust,
)
_REGISTRY: Mapping[str, type[Strategy]] = MappingProxyType({cls.name: cls for cls in _CLASSES})


def available_strategies() -> tuple[str, ...]:
    """Registry names, sorted."""
    return tuple(sorted(_REGISTRY))


def strategy_params(name: str) -> tuple[str, ...]:
    """Parameter names `get_strategy(name, ...)` accepts (ValueError for unknown names)."""
    return accepted_params(_lookup(name))


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by registry name, e.g. ``get_strategy("hybrid", lam=0.5)``.

    Raises:
        ValueError: unknown name (the message lists the valid names), unknown parameter
            (the message lists the accepted ones) or a bad parameter value.
    """
    return build_strategy(_lookup(name), params)


def _lookup(name: str) -> type[Strategy]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown strategy {name!r}; valid names: {', '.join(available_strategies())}"
        )
    return _REGISTRY[name]
