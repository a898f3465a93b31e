"""Rate-limit algorithms, each a Lua script next to this module.

A strategy script is its own ``<name>.lua`` (the algorithm: ``evaluate`` one limit) followed
by ``check.lua`` (shared: evaluate every limit of a check, consume only if all pass, report
the deciding limit), so that one EVALSHA decides a whole ``"10/second;1000/hour"`` check.

    get_strategy("gcra").source  # the Lua text redis-py loads with SCRIPT LOAD / EVALSHA
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Literal, get_args

from nexus_store.errors import ValidationError

__all__ = ["STRATEGIES", "Strategy", "StrategyName", "get_strategy"]

StrategyName = Literal["gcra", "sliding_window", "fixed_window"]


@dataclass(frozen=True, slots=True)
class Strategy:
    """One algorithm: ``name`` is also the kind part of its Redis keys; ``sha`` is what
    EVALSHA sends (the SHA-1 of ``source``)."""

    name: StrategyName
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    def __repr__(self) -> str:
        return f"Strategy({self.name!r})"


def _load(name: StrategyName) -> Strategy:
    here = files(__package__)
    source = here.joinpath(f"{name}.lua").read_text("utf-8")
    return Strategy(name, source + "\n" + here.joinpath("check.lua").read_text("utf-8"))


STRATEGIES: dict[str, Strategy] = {name: _load(name) for name in get_args(StrategyName)}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; :class:`ValidationError` for an unknown one."""
    found = STRATEGIES.get(name)
    if found is None:
        raise ValidationError(
            "strategy", f"unknown rate-limit strategy {name!r}; use one of {sorted(STRATEGIES)}"
        )
    return found
