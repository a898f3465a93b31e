"""HTTP response headers for a rate-limit decision, per ``draft-ietf-httpapi-ratelimit-headers``
revisions -10/-11.

- ``RateLimit-Policy`` is a Structured Field List with **every** limit of the check, each
  under its own name: ``"10/1s";q=10;w=1, "1000/3600s";q=1000;w=3600``. The default name of
  a limit is ``<amount>/<window seconds>s``; pass ``names`` (one per limit, in order) to name
  them yourself.
- ``RateLimit`` reports the deciding limit, named: ``"10/1s";r=0;t=1``. ``r`` is what is left
  of it, ``t`` the seconds until at least one more unit is available (the draft's "additional
  quota", not the time until the limit is full again); on a refusal ``t`` equals
  ``Retry-After``; ``t=0`` when the limit is full.
- ``Retry-After`` (RFC 9110, whole seconds, at least 1) only on a refusal.
- The older ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` set is opt-in (``legacy=True``);
  its ``Reset`` is the seconds until the deciding limit is full again.

Seconds are rounded up, so that a client waiting that long is never early.

    rate_limit_headers(parse_limits("10/second"), deciding=0, remaining=9,
                       next_unit_after=0.1, reset_after=0.1, retry_after=0)
    # {'RateLimit-Policy': '"10/1s";q=10;w=1', 'RateLimit': '"10/1s";r=9;t=1'}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from nexus_store.errors import ValidationError
from nexus_store.redis.ratelimit.limits import RateLimitItem, RateLimits

__all__ = ["default_policy_name", "outage_headers", "policy_header", "rate_limit_headers"]


def default_policy_name(item: RateLimitItem) -> str:
    """``"10/1s"`` for 10 per second: the amount and the window in seconds."""
    return f"{item.amount}/{item.window_ms // 1000}s"


def _sf_string(name: str) -> str:
    """``name`` as a structured-field String (RFC 8941 §3.3.3): printable ASCII, quoted."""
    if not isinstance(name, str) or not name or any(not " " <= char <= "~" for char in name):
        raise ValidationError("policy_name", f"must be non-empty printable ASCII, not {name!r}")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(value: float) -> int:
    """Whole seconds, rounded up."""
    return max(0, math.ceil(value))


def _names(limits: RateLimits, names: Sequence[str] | None) -> tuple[str, ...]:
    """The quoted policy names, worked out once per (limits, names): every response needs
    them."""
    if names is None:
        return _quoted(limits, None)
    if isinstance(names, str) or len(names) != len(limits.items):
        raise ValidationError(
            "policy_name",
            f"give one name per limit of {limits.text!r} ({len(limits.items)}), not {names!r}",
        )
    if not all(isinstance(name, str) for name in names):
        raise ValidationError("policy_name", f"names must be strings, not {names!r}")
    if len(set(names)) != len(names):
        raise ValidationError("policy_name", f"names must differ: {list(names)!r}")
    return _quoted(limits, tuple(names))


@lru_cache(maxsize=1024)
def _quoted(limits: RateLimits, names: tuple[str, ...] | None) -> tuple[str, ...]:
    if names is None:
        return tuple(_sf_string(default_policy_name(item)) for item in limits.items)
    return tuple(_sf_string(name) for name in names)


@lru_cache(maxsize=1024)
def _policy_list(quoted: tuple[str, ...], limits: RateLimits) -> str:
    return ", ".join(
        f"{name};q={item.amount};w={item.window_ms // 1000}"
        for name, item in zip(quoted, limits.items, strict=True)
    )


def policy_header(limits: RateLimits, names: Sequence[str] | None = None) -> str:
    """The ``RateLimit-Policy`` value: every limit, each under its own name."""
    return _policy_list(_names(limits, names), limits)


def rate_limit_headers(
    limits: RateLimits,
    *,
    deciding: int,
    remaining: int,
    next_unit_after: float,
    reset_after: float,
    retry_after: float,
    names: Sequence[str] | None = None,
    legacy: bool = False,
) -> dict[str, str]:
    """Headers for one decision of ``limits``; ``deciding`` is the index of the limit that
    decided. ``Retry-After`` only when ``retry_after`` is positive (a refusal)."""
    quoted = _names(limits, names)
    item = limits.items[deciding]
    remaining = max(0, remaining)
    headers = {"RateLimit-Policy": _policy_list(quoted, limits)}
    if retry_after > 0:
        retry = str(max(1, _seconds(retry_after)))
        headers["RateLimit"] = f"{quoted[deciding]};r={remaining};t={retry}"
        headers["Retry-After"] = retry
    else:
        headers["RateLimit"] = f"{quoted[deciding]};r={remaining};t={_seconds(next_unit_after)}"
    if legacy:
        headers["RateLimit-Limit"] = str(item.amount)
        headers["RateLimit-Remaining"] = str(remaining)
        headers["RateLimit-Reset"] = str(_seconds(reset_after))
    return headers


def outage_headers(
    limits: RateLimits, *, retry_after: float | None, names: Sequence[str] | None = None
) -> dict[str, str]:
    """Headers while Redis is unreachable: the policies (they are known) but no ``RateLimit``
    (what is left is not), and ``Retry-After`` when the call was refused (``fail_closed``)."""
    headers = {"RateLimit-Policy": policy_header(limits, names)}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, _seconds(retry_after)))
    return headers
