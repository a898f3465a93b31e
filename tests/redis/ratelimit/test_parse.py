"""Limit strings, response headers and the in-process fallback: no server needed."""

from __future__ import annotations

import pytest

from nexus_store.errors import ValidationError
from nexus_store.redis.names import STRATEGY_NAMES
from nexus_store.redis.ratelimit import (
    get_strategy,
    parse_limit,
    parse_limits,
    rate_limit,
    rate_limit_headers,
)
from nexus_store.redis.ratelimit._local import LocalLimiter
from nexus_store.redis.ratelimit.headers import outage_headers


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


def test_headers_render_every_policy_and_the_deciding_one() -> None:
    limits = parse_limits("100/minute;1000/hour")
    headers = rate_limit_headers(
        limits, deciding=0, remaining=50, next_unit_after=0.2, reset_after=29.2, retry_after=0
    )
    assert headers == {
        "RateLimit-Policy": '"100/60s";q=100;w=60, "1000/3600s";q=1000;w=3600',
        "RateLimit": '"100/60s";r=50;t=1',  # t: the next unit, not the full restore (30)
    }
    legacy = rate_limit_headers(
        limits,
        deciding=1,
        remaining=7,
        next_unit_after=3.6,
        reset_after=3000.5,
        retry_after=0,
        legacy=True,
    )
    assert legacy["RateLimit"] == '"1000/3600s";r=7;t=4'
    assert (legacy["RateLimit-Limit"], legacy["RateLimit-Remaining"]) == ("1000", "7")
    assert legacy["RateLimit-Reset"] == "3001"
    refused = rate_limit_headers(
        parse_limits("10/second"),
        deciding=0,
        remaining=0,
        next_unit_after=0.05,
        reset_after=0.95,
        retry_after=0.05,
        names=["per-user"],
    )
    assert refused["RateLimit-Policy"] == '"per-user";q=10;w=1'
    # On a refusal t equals Retry-After, rounded up: a client waiting that long is not early.
    assert refused["RateLimit"] == '"per-user";r=0;t=1'
    assert refused["Retry-After"] == "1"


def test_policy_names_are_quoted_and_checked() -> None:
    one = parse_limits("1/second")

    def render(names: list[str]) -> dict[str, str]:
        return rate_limit_headers(
            one, deciding=0, remaining=0, next_unit_after=1, reset_after=1, retry_after=1,
            names=names,
        )  # fmt: skip

    assert render(['a"b\\c'])["RateLimit-Policy"].startswith('"a\\"b\\\\c";')
    for bad in (["bad\r\nX-Injected: 1"], [""], ["a", "b"]):
        with pytest.raises(ValidationError) as caught:
            render(bad)
        assert caught.value.field == "policy_name"
    with pytest.raises(ValidationError):
        rate_limit_headers(
            parse_limits("1/second;5/minute"), deciding=0, remaining=0, next_unit_after=1,
            reset_after=1, retry_after=1, names=["same", "same"],
        )  # fmt: skip


def test_outage_headers_carry_the_policies_but_no_quota() -> None:
    limits = parse_limits("3/second;5/minute")
    assert outage_headers(limits, retry_after=None) == {
        "RateLimit-Policy": '"3/1s";q=3;w=1, "5/60s";q=5;w=60'
    }
    assert outage_headers(limits, retry_after=0.2)["Retry-After"] == "1"


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
