"""Limit strings, response headers and the in-process fallback: no server needed."""

from __future__ import annotations

import pytest

from nexus_store.errors import RateLimitExceeded, ValidationError
from nexus_store.redis.names import STRATEGY_NAMES
from nexus_store.redis.ratelimit import (
    get_strategy,
    parse_limit,
    parse_limits,
    rate_limit,
    rate_limit_headers,
)
from nexus_store.redis.ratelimit._local import LocalLimiter


@pytest.mark.parametrize(
    ("text", "amount", "window_seconds", "canonical"),
    [
        ("10/second", 10, 1, "10/second"),
        ("10 per second", 10, 1, "10/second"),
        ("5/minute", 5, 60, "5/minute"),
        ("100 per 5 minutes", 100, 300, "100/5 minutes"),
        ("3/2h", 3, 7200, "3/2 hours"),
        (" 7 / day ", 7, 86400, "7/day"),
        ("1/SECONDS", 1, 1, "1/second"),
    ],
)
def test_parses_one_limit(text: str, amount: int, window_seconds: int, canonical: str) -> None:
    item = parse_limit(text)
    assert (item.amount, item.window_seconds, item.text) == (amount, window_seconds, canonical)
    assert item.window_ms == window_seconds * 1000


def test_parses_several_limits_in_order() -> None:
    limits = parse_limits("10/second;1000/hour, 5000/day")
    assert [item.text for item in limits.items] == ["10/second", "1000/hour", "5000/day"]
    assert limits.smallest_amount == 10
    assert limits.text == "10/second;1000/hour;5000/day"
    # Script arguments are computed once: field, amount, window in microseconds per limit.
    assert limits.script_args[:3] == ("10/1000", 10, 1_000_000)
    assert parse_limits("10/second;1000/hour, 5000/day") is limits  # cached


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        (" ; ", "is empty"),
        ("ten/second", "is not a limit"),
        ("10/fortnight", "unknown unit 'fortnight'"),
        ("0/second", "amount"),
        ("10/0 seconds", "window"),
        ("10/400 days", "window"),
        ("10/second;10/second", "given twice"),
        ("10/second;", None),
    ],
)
def test_bad_limit_strings_name_the_problem(text: str, problem: str | None) -> None:
    if problem is None:  # a trailing separator is tolerated
        assert parse_limits(text).text == "10/second"
        return
    with pytest.raises(ValidationError) as caught:
        parse_limits(text)
    assert caught.value.field == "limits"
    assert problem in caught.value.problem


def test_non_string_limits_are_refused() -> None:
    with pytest.raises(ValidationError, match="limits"):
        parse_limits(["10/second"])  # type: ignore[arg-type]


def test_decorator_refuses_bad_arguments_at_decoration_time() -> None:
    with pytest.raises(ValidationError, match="unknown unit"):
        rate_limit("10/fortnight")
    with pytest.raises(ValidationError) as caught:
        rate_limit("5/second;100/hour", cost=6)
    assert caught.value.field == "cost"
    with pytest.raises(ValidationError) as caught:
        rate_limit("5/second", cost=0)
    assert caught.value.field == "cost"
    with pytest.raises(ValidationError) as caught:
        rate_limit("5/second", strategy="leaky")
    assert caught.value.field == "strategy"
    with pytest.raises(ValidationError) as caught:
        rate_limit("5/second", key="user")  # type: ignore[arg-type]
    assert caught.value.field == "key"


def test_strategies_are_lua_files_with_the_shared_driver() -> None:
    for name in STRATEGY_NAMES:
        strategy = get_strategy(name)
        assert "local function evaluate(" in strategy.script.source
        assert "redis.call('TIME')" in strategy.script.source
        assert len(strategy.script.sha) == 40


def test_headers_render_ietf_draft_legacy_and_retry_after() -> None:
    headers = rate_limit_headers(
        limit=100, window_seconds=60, remaining=50, reset_after=29.2, retry_after=0
    )
    assert headers == {
        "RateLimit-Policy": '"default";q=100;w=60',
        "RateLimit": '"default";r=50;t=30',
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "50",
        "RateLimit-Reset": "30",
    }
    refused = rate_limit_headers(
        limit=10,
        window_seconds=1,
        remaining=0,
        reset_after=0.95,
        retry_after=0.05,
        policy_name="per-user",
    )
    assert refused["RateLimit-Policy"] == '"per-user";q=10;w=1'
    assert refused["RateLimit"] == '"per-user";r=0;t=1'
    assert refused["Retry-After"] == "1"  # rounded up: a client waiting that long is not early


def test_policy_names_are_quoted_and_checked() -> None:
    headers = rate_limit_headers(
        limit=1,
        window_seconds=1,
        remaining=0,
        reset_after=1,
        retry_after=1,
        policy_name='a"b\\c',
    )
    assert headers["RateLimit-Policy"].startswith('"a\\"b\\\\c";')
    with pytest.raises(ValidationError) as caught:
        rate_limit_headers(
            limit=1,
            window_seconds=1,
            remaining=0,
            reset_after=1,
            retry_after=1,
            policy_name="bad\r\nX-Injected: 1",
        )
    assert caught.value.field == "policy_name"


def test_exception_headers_use_the_refusing_limit() -> None:
    exc = RateLimitExceeded(
        "user:1",
        limit="10/minute",
        amount=10,
        window_seconds=60.0,
        remaining=0,
        reset_after=42.5,
        retry_after=5.9,
    )
    headers = exc.headers()
    assert headers["RateLimit-Policy"] == '"default";q=10;w=60'
    assert headers["RateLimit"] == '"default";r=0;t=43'
    assert headers["RateLimit-Reset"] == "43"
    assert headers["Retry-After"] == "6"


def test_local_fallback_limits_all_or_nothing_and_stays_bounded() -> None:
    local = LocalLimiter(max_keys=3)
    limits = parse_limits("2/hour;3/day")
    decisions = [local.evaluate("a", limits, 1, consume=True) for _ in range(3)]
    assert [decision[0] for decision in decisions] == [1, 1, 0]
    assert decisions[2][1] == 1  # refused by 2/hour, the first limit
    assert decisions[2][4] > 0  # with a retry_after in microseconds
    # The refusal consumed nothing: the daily limit still has one unit.
    assert local.evaluate("a", parse_limits("3/day"), 1, consume=False)[2] == 0
    assert local.evaluate("a", parse_limits("3/day"), 0, consume=False)[2] == 1
    for name in ("b", "c", "d"):
        local.evaluate(name, limits, 1, consume=True)
    assert len(local) == 3  # "a", the least recently used, was forgotten
    assert local.evaluate("a", limits, 1, consume=True)[0] == 1
