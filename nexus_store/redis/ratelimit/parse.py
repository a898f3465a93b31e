"""Parsing limit strings such as ``"10/second;1000/hour"`` or ``"5 per 10 minutes"``.

    parse_limits("10/second;1000/hour")   # RateLimits of two items
    parse_limits("10/fortnight")          # ValidationError: limits: unknown unit 'fortnight' ...

Results are cached: parsing the same string again costs one dictionary lookup.
"""

from __future__ import annotations

import re
from functools import lru_cache

from nexus_store.errors import ValidationError
from nexus_store.redis.ratelimit.limits import RateLimitItem, RateLimits

__all__ = ["MAX_AMOUNT", "MAX_WINDOW_SECONDS", "parse_limit", "parse_limits"]

MAX_AMOUNT = 1_000_000_000
MAX_WINDOW_SECONDS = 366 * 24 * 3600
_UNITS = {
    "second": 1, "seconds": 1, "sec": 1, "s": 1,
    "minute": 60, "minutes": 60, "min": 60, "m": 60,
    "hour": 3600, "hours": 3600, "h": 3600,
    "day": 86400, "days": 86400, "d": 86400,
}  # fmt: skip
_CANONICAL = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
_ITEM = re.compile(r"^\s*(\d+)\s*(?:/|\s+per\s+)\s*(?:(\d+)\s*)?([A-Za-z]+)\s*$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[;,]")


def parse_limit(text: str, *, field: str = "limits") -> RateLimitItem:
    """One limit: ``"10/second"``, ``"100 per 5 minutes"``, ``"3/2h"``."""
    match = _ITEM.match(text)
    if match is None:
        raise ValidationError(
            field, f"{text.strip()!r} is not a limit; write it like '10/second' or '5 per 2 hours'"
        )
    amount_text, multiple_text, unit_text = match.groups()
    unit = _UNITS.get(unit_text.lower())
    if unit is None:
        raise ValidationError(
            field, f"unknown unit {unit_text!r} in {text.strip()!r}; use second, minute, hour, day"
        )
    amount = int(amount_text)
    multiple = int(multiple_text) if multiple_text is not None else 1
    if not 1 <= amount <= MAX_AMOUNT:
        raise ValidationError(field, f"amount in {text.strip()!r} must be 1..{MAX_AMOUNT}")
    window = multiple * unit
    if not 1 <= window <= MAX_WINDOW_SECONDS:
        raise ValidationError(
            field, f"window of {text.strip()!r} must be 1 second..{MAX_WINDOW_SECONDS} seconds"
        )
    name = _CANONICAL[unit]
    canonical = f"{amount}/{name}" if multiple == 1 else f"{amount}/{multiple} {name}s"
    return RateLimitItem(amount=amount, window_ms=window * 1000, text=canonical)


def parse_limits(text: str) -> RateLimits:
    """Every limit of ``text`` (separated by ``;`` or ``,``), all enforced together."""
    if not isinstance(text, str):
        raise ValidationError("limits", f"must be a string like '10/second', not {type(text)}")
    return _parse_limits(text)


@lru_cache(maxsize=1024)
def _parse_limits(text: str) -> RateLimits:
    parts = [part for part in _SEPARATORS.split(text) if part.strip()]
    if not parts:
        raise ValidationError("limits", "is empty; write limits like '10/second;1000/hour'")
    items: list[RateLimitItem] = []
    for part in parts:
        item = parse_limit(part)
        if any(seen.field == item.field for seen in items):
            raise ValidationError("limits", f"{item.text!r} is given twice in {text!r}")
        items.append(item)
    return RateLimits(tuple(items))
