"""The names the Redis layer is configured by: its areas and its rate-limit strategies.

Each list is written once, here, as a literal type; everything else derives from it: the
settings' field types and defaults (``redis.databases``, ``ratelimit.strategy``), the
client's area checks, health output and the strategy table. A leaf module (typing only), so
that settings can import it without loading redis-py.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "AREAS",
    "CACHE_AREAS",
    "DEFAULT_DATABASES",
    "STRATEGY_NAMES",
    "Area",
    "StrategyName",
]

Area = Literal["sessions", "cache", "ratelimit", "realtime", "queue", "analytics_cache"]
AREAS: tuple[Area, ...] = get_args(Area)
#: Areas that move to ``redis.cache_url`` when it is set: they may be evicted, the rest not.
CACHE_AREAS: tuple[Area, ...] = ("cache", "analytics_cache")
#: The logical DB of each area on a standalone server unless ``redis.databases`` says
#: otherwise: its position in :data:`AREAS`.
DEFAULT_DATABASES: dict[Area, int] = {area: index for index, area in enumerate(AREAS)}

StrategyName = Literal["gcra", "sliding_window", "fixed_window"]
STRATEGY_NAMES: tuple[StrategyName, ...] = get_args(StrategyName)
