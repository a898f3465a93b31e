"""GCRA is written twice: ``strategies/gcra.lua`` (with ``check.lua``) on Redis, and
``ratelimit/_local.py``, the in-process fallback. One table of cases runs through both on
the same fixed clock, and every decision must be identical: allowed, deciding limit,
remaining, reset_after and retry_after in microseconds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import cast

import pytest

import redis as redis_lib
from nexus_store.redis.ratelimit import _local
from nexus_store.redis.ratelimit._local import LocalLimiter
from nexus_store.redis.ratelimit.parse import parse_limits
from nexus_store.redis.ratelimit.strategies import get_strategy

Decision = tuple[int, int, int, int, int, int]
START_US = 1_000_000_000  # the fixed clock of a case starts here (1000 s)

# (limits, steps); a step is (milliseconds after the start, cost, consume).
CASES: dict[str, tuple[str, list[tuple[int, int, bool]]]] = {
    "burst past the limit, then one unit back": (
        "10/second",
        [(0, 1, True)] * 12 + [(100, 1, True), (100, 1, True)],
    ),
    "cost above one": (
        "5/minute",
        [(0, 3, True), (0, 3, True), (12_000, 3, True), (24_000, 3, True), (60_000, 5, True)],
    ),
    "two limits: all or nothing, deciding limit": (
        "2/hour;3/day",
        [(0, 1, True), (0, 1, True), (0, 1, True), (1_800_000, 1, True), (3_600_000, 1, True)],
    ),
    "looking consumes nothing": (
        "3/minute",
        [(0, 1, True), (0, 2, False), (0, 0, False), (0, 2, True), (0, 1, False), (1, 0, False)],
    ),
    "an interval that is not a whole number of microseconds": (
        "7/hour",
        [(0, 1, True)] * 8 + [(514_285, 1, True), (514_286, 1, True), (600_000, 2, False)],
    ),
    "idle longer than the window: full again": (
        "4/second",
        [(0, 4, True), (0, 1, True), (5_000, 1, False), (5_000, 4, True)],
    ),
}


def _lua_at(redis: redis_lib.Redis, key: str) -> Callable[[int, str, int, bool], Decision]:
    """Run the GCRA strategy script with the server clock replaced by ``now_us``."""
    source = get_strategy("gcra").script.source
    assert source.count("redis.call('TIME')") == 1

    def decide(now_us: int, limits: str, cost: int, consume: bool) -> Decision:
        seconds, micros = divmod(now_us, 1_000_000)
        fixed = source.replace("redis.call('TIME')", f"{{'{seconds}', '{micros}'}}")
        args = (cost, "1" if consume else "0", *parse_limits(limits).script_args)
        reply = redis.eval(fixed, 1, key, *args)
        return cast(Decision, tuple(int(value) for value in reply))

    return decide


@pytest.mark.parametrize("case", sorted(CASES))
def test_lua_and_local_gcra_decide_alike(
    case: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits, steps = CASES[case]
    redis = redis_lib.Redis.from_url(redis_url)
    key = f"gcra-parity:{uuid.uuid4().hex}"
    local = LocalLimiter(max_keys=10)
    lua = _lua_at(redis, key)
    try:
        for index, (after_ms, cost, consume) in enumerate(steps):
            now_us = START_US + after_ms * 1000
            monkeypatch.setattr(_local, "_monotonic_us", lambda now=now_us: float(now))
            expected = local.evaluate(key, parse_limits(limits), cost, consume=consume)
            assert lua(now_us, limits, cost, consume) == expected, f"step {index} of {case}"
    finally:
        redis.delete(key)
        redis.close()
