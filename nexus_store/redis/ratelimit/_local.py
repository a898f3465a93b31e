"""The in-process fallback limiter used while Redis is unreachable (``fail_mode = "local"``).

It always runs GCRA on the monotonic clock, whatever the configured strategy, and counts per
process: N processes together let through up to N times the limit during an outage. Its
memory is bounded: beyond ``max_keys`` keys the least recently used are forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from nexus_store.redis.ratelimit.limits import RateLimitItem, RateLimits

__all__ = ["LocalLimiter"]

_SLACK = 1.0  # microsecond, as in gcra.lua


def _monotonic_us() -> float:
    """Now in microseconds on the monotonic clock (the tests substitute a fixed clock)."""
    return time.monotonic() * 1_000_000


class LocalLimiter:
    """Thread-safe GCRA over a dict; answers in the same shape as the Lua scripts."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._tats: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tats)

    def evaluate(
        self, key: str, limits: RateLimits, cost: int, *, consume: bool
    ) -> tuple[int, int, int, int, int, int]:
        """``(allowed, deciding limit 1-based, remaining, reset_after us, retry_after us,
        next unit after us)``, as ``check.lua`` returns."""
        now = _monotonic_us()
        with self._lock:
            tats = self._tats.get(key)
            if tats is None:
                tats = {}
            else:
                self._tats.move_to_end(key)
            decisions = [self._gcra(tats.get(item.field), item, now, cost) for item in limits.items]
            allowed = all(decision[0] for decision in decisions)
            if consume and allowed:
                for item, decision in zip(limits.items, decisions, strict=True):
                    tats[item.field] = now + decision[2]
                self._tats[key] = tats
                self._forget_oldest()
        if allowed:  # the tightest limit
            pick = min(range(len(decisions)), key=lambda i: (decisions[i][1], -decisions[i][2]))
        else:  # the refusing limit that frees up last
            pick = max(
                (i for i, decision in enumerate(decisions) if not decision[0]),
                key=lambda i: decisions[i][3],
            )
        _, remaining, reset, retry, next_unit = decisions[pick]
        return (
            int(allowed),
            pick + 1,
            max(0, remaining),
            math.ceil(reset),
            math.ceil(retry),
            math.ceil(next_unit),
        )

    @staticmethod
    def _gcra(
        stored: float | None, item: RateLimitItem, now: float, cost: int
    ) -> tuple[bool, int, float, float, float]:
        """``(allowed, remaining, reset_after, retry_after, next unit after)`` of one limit, as
        in gcra.lua."""
        window = item.window_ms * 1000
        interval = window / item.amount
        tat = now if stored is None or stored < now else stored
        allow_at = tat + cost * interval - window
        if allow_at <= now + _SLACK:
            remaining = min(item.amount, math.floor((now - allow_at + _SLACK) / interval))
            next_unit = 0.0
            if remaining < item.amount:
                next_unit = max(0.0, allow_at + (remaining + 1) * interval - now)
            return True, remaining, tat + cost * interval - now, 0.0, next_unit
        remaining = math.floor((now - tat + window + _SLACK) / interval)
        return False, min(item.amount, remaining), tat - now, allow_at - now, allow_at - now

    def reset(self, key: str) -> None:
        with self._lock:
            self._tats.pop(key, None)

    def _forget_oldest(self) -> None:
        while len(self._tats) > self._max_keys:
            self._tats.popitem(last=False)
