"""Rate-limit algorithms, each a Lua script next to this module.

A strategy script is its own ``<name>.lua`` (the algorithm: ``evaluate`` one limit) followed
by ``check.lua`` (shared: evaluate every limit of a check, consume only if all pass, report
the deciding limit), so that one EVALSHA decides a whole ``"10/second;1000/hour"`` check.
The strategy names are :data:`nexus_store.redis.names.STRATEGY_NAMES`; each needs its file.

    get_strategy("gcra").script  # the LuaScript the limiter runs
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus_store.errors import ValidationError
from nexus_store.redis._lua import LuaScript, load_lua
from nexus_store.redis.names import STRATEGY_NAMES, StrategyName

__all__ = ["STRATEGIES", "Strategy", "StrategyName", "get_strategy"]


@dataclass(frozen=True, slots=True, repr=False)
class Strategy:
    """One algorithm: ``name`` is also the kind part of its Redis keys; ``script`` is its
    Lua script (``<name>.lua`` + ``check.lua``)."""

    name: StrategyName
    script: LuaScript

    def __repr__(self) -> str:
        return f"Strategy({self.name!r})"


STRATEGIES: dict[str, Strategy] = {
    name: Strategy(name, load_lua(name, "check", package=__package__)) for name in STRATEGY_NAMES
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; :class:`ValidationError` for an unknown one."""
    found = STRATEGIES.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValidationError(
            "strategy", f"unknown rate-limit strategy {name!r}; use one of {sorted(STRATEGIES)}"
        )
    return found
