"""Conformance of the rate-limit headers with draft-ietf-httpapi-ratelimit-headers -10/-11,
checked by parsing every header with a Structured Field Values parser (``http_sfv``), for every
strategy and for one and several limits, against a real Redis.

The draft's rules asserted here: ``RateLimit-Policy`` is a List with one item per policy of
the check, each a String name (unique) with Integer ``q`` (quota) and ``w`` (window seconds);
``RateLimit`` is a List naming one of those policies with Integer ``r`` (0 <= r <= q) and
``t`` (seconds until at least one more unit is available); ``Retry-After`` (RFC 9110, whole
seconds) comes with a refusal only and equals ``t``; the legacy fields only on request."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from http_sfv import Item, List

from nexus_store import NexusStore
from nexus_store.redis.names import STRATEGY_NAMES
from nexus_store.redis.ratelimit import RateLimitResult

STRATEGIES = list(STRATEGY_NAMES)
LEGACY = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _parse_list(value: str) -> list[Item]:
    parsed = List()
    parsed.parse(value.encode("ascii"))
    items = list(parsed)
    assert all(isinstance(item, Item) for item in items), value  # no inner lists
    return items


def _assert_conforms(result: RateLimitResult, limits: str) -> tuple[str, int, int]:
    """Every rule of the draft for one decision; returns (policy name, r, t)."""
    headers = result.headers()
    assert not set(LEGACY) & set(headers)  # the legacy set is opt-in
    policies = _parse_list(headers["RateLimit-Policy"])
    names = [item.value for item in policies]
    assert all(isinstance(name, str) for name in names)
    assert len(set(names)) == len(names) == len(limits.split(";"))
    quota = {}
    for item, limit in zip(policies, result.limits.items, strict=True):
        assert set(item.params) == {"q", "w"}
        assert item.params["q"] == limit.amount and item.params["w"] == limit.window_seconds
        quota[item.value] = item.params["q"]

    reported = _parse_list(headers["RateLimit"])
    assert len(reported) == 1
    name = reported[0].value
    assert name in quota  # RateLimit names a policy that RateLimit-Policy lists
    assert set(reported[0].params) == {"r", "t"}
    remaining, next_unit = reported[0].params["r"], reported[0].params["t"]
    assert isinstance(remaining, int) and isinstance(next_unit, int)
    assert 0 <= remaining <= quota[name] and next_unit >= 0
    assert name == f"{result.limit.amount}/{result.limit.window_ms // 1000}s"
    if result.allowed:
        assert "Retry-After" not in headers
    else:
        retry_after = int(headers["Retry-After"])
        assert retry_after >= 1 and next_unit == retry_after  # t equals Retry-After
    return name, remaining, next_unit


@pytest.mark.parametrize("limits", ["4/second", "3/second;5/minute", "6/minute;4/hour"])
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_response_conforms(store: NexusStore, strategy: str, limits: str) -> None:
    key = f"conform-{uuid.uuid4().hex[:10]}"
    results = [await store.limiter.hit(key, limits, strategy=strategy) for _ in range(8)]
    assert any(result.allowed for result in results) and not all(r.allowed for r in results)
    for result in results:
        _assert_conforms(result, limits)
    for peeked in (
        await store.limiter.peek(key, limits, strategy=strategy),
        await store.limiter.test(key, limits, strategy=strategy),
    ):
        _assert_conforms(peeked, limits)
    legacy = results[0].headers(legacy=True)
    assert legacy["RateLimit-Remaining"] == str(results[0].remaining)
    assert legacy["RateLimit-Limit"] == str(results[0].limit.amount)


async def test_several_limits_each_keep_their_name(store: NexusStore) -> None:
    """The deciding policy changes between the two limits; each keeps its own name and its
    own q and w (the issue saw ``"default";q=3;w=1`` and ``"default";q=5;w=60`` alternate)."""
    key = f"names-{uuid.uuid4().hex[:10]}"
    limits = "3/second;5/minute"
    seen = set()
    for _ in range(10):  # the 5/minute limit runs out after a few 3/second refusals
        result = await store.limiter.hit(key, limits)
        seen.add(_assert_conforms(result, limits)[0])
        policy = result.headers()["RateLimit-Policy"]
        assert policy == '"3/1s";q=3;w=1, "5/60s";q=5;w=60'
        if not result.allowed and result.limit.amount == 3:
            await asyncio.sleep(result.retry_after + 0.05)
    assert seen == {"3/1s", "5/60s"}
    named = result.headers(names=["burst", "sustained"])
    assert [item.value for item in _parse_list(named["RateLimit-Policy"])] == [
        "burst",
        "sustained",
    ]


async def test_t_is_the_next_unit_not_the_full_restore(store: NexusStore) -> None:
    """GCRA, 100 a minute, 5 used: a unit comes back within 0.6 s, the limit is full again
    in 3 s. The draft's t is the former (the issue saw t=60)."""
    key = f"gcra-t-{uuid.uuid4().hex[:10]}"
    for _ in range(5):
        result = await store.limiter.hit(key, "100/minute", strategy="gcra")
    assert 0 < result.next_unit_after <= 0.6
    assert 2.4 < result.reset_after <= 3.0
    assert _assert_conforms(result, "100/minute")[2] == 1
    assert result.headers(legacy=True)["RateLimit-Reset"] == "3"


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_after_t_at_least_one_more_unit_is_available(
    store: NexusStore, strategy: str
) -> None:
    """The oracle for t: wait next_unit_after, and at least one unit more than r is left."""
    key = f"after-t-{uuid.uuid4().hex[:10]}"
    for _ in range(3):
        result = await store.limiter.hit(key, "5/second", strategy=strategy)
    assert result.allowed and result.remaining == 2
    assert 0 < result.next_unit_after <= result.reset_after
    started = time.monotonic()
    await asyncio.sleep(result.next_unit_after + 0.05)
    later = await store.limiter.peek(key, "5/second", strategy=strategy)
    assert later.remaining >= result.remaining + 1, time.monotonic() - started


async def test_a_full_limit_reports_t_zero(store: NexusStore) -> None:
    key = f"full-{uuid.uuid4().hex[:10]}"
    for strategy in STRATEGIES:
        peeked = await store.limiter.peek(key, "5/minute", strategy=strategy)
        assert _assert_conforms(peeked, "5/minute")[1:] == (5, 0)
