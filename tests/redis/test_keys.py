"""Key safety: caller parts can never reach into another key's namespace."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import redis as redis_lib
from devstack.stack import Stack
from nexus_store import NexusSettings
from nexus_store.errors import ValidationError
from nexus_store.redis.client import AREAS, RedisBackend
from nexus_store.redis.keys import MAX_KEY_PART_BYTES, Keyspace, escape_part

HOSTILE = st.text(
    alphabet=st.sampled_from([*" \n\r\t:{}*?[]\\%/-_.aZ09é\x01", "\u2028", "😀"]),
    min_size=1,
    max_size=40,
)
PARTS = st.lists(HOSTILE | st.integers(), min_size=1, max_size=4)
SPACE = Keyspace(area="cache", prefix="ns:cache:")
CHARSET = re.compile(r"[A-Za-z0-9_.\-@+=/%]+")


@given(PARTS, PARTS)
@settings(max_examples=400, deadline=None)
def test_distinct_parts_give_distinct_keys(first: list[str | int], second: list[str | int]) -> None:
    same = [str(p) for p in first] == [str(p) for p in second]
    assert (SPACE.key(*first) == SPACE.key(*second)) is same


@given(PARTS)
@settings(max_examples=300, deadline=None)
def test_escaped_parts_hold_no_separator_glob_space_or_brace(parts: list[str | int]) -> None:
    key = SPACE.key(*parts)
    assert key.startswith(SPACE.prefix)
    body = key.removeprefix(SPACE.prefix)
    # Exactly one segment per part: a ':' inside a part cannot add a level.
    segments = body.split(":")
    assert len(segments) == len(parts)
    assert all(CHARSET.fullmatch(segment) for segment in segments)


@given(HOSTILE, PARTS)
@settings(max_examples=300, deadline=None)
def test_tagged_keys_have_exactly_the_callers_tag(tag: str, parts: list[str | int]) -> None:
    key = SPACE.tagged("session", tag, *parts)
    assert key.count("{") == 1 and key.count("}") == 1
    hashed = key[key.index("{") + 1 : key.index("}")]
    assert hashed == escape_part(tag)
    assert SPACE.tagged("user", tag) != SPACE.tagged("session", tag)


@given(PARTS, PARTS)
@settings(max_examples=400, deadline=None)
def test_a_key_is_under_another_only_if_its_parts_extend_it(
    outer: list[str | int], inner: list[str | int]
) -> None:
    """``key(a) + ":"`` prefixes ``key(b)`` exactly when ``a`` is a leading run of ``b``:
    no value of a part can make a key appear inside someone else's namespace."""
    nested = SPACE.key(*inner).startswith(SPACE.key(*outer) + ":")
    a, b = [str(p) for p in outer], [str(p) for p in inner]
    assert nested is (len(a) < len(b) and b[: len(a)] == a)


def test_over_long_and_empty_parts_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        SPACE.key("a" * (MAX_KEY_PART_BYTES + 1), field="key")
    assert caught.value.field == "key"
    # escaping expands: 200 newlines are 600 bytes once escaped
    with pytest.raises(ValidationError, match="once escaped"):
        SPACE.key("\n" * 200)
    with pytest.raises(ValidationError, match="empty"):
        SPACE.key("")
    assert SPACE.key("a" * MAX_KEY_PART_BYTES)


@pytest.mark.parametrize(
    ("part", "problem"),
    [("a\x00b", "NUL"), ("\ud800", "surrogate"), ("x\udfff" * 3, "surrogate")],
)
def test_nul_and_lone_surrogates_are_refused_naming_the_field(part: str, problem: str) -> None:
    """Such a part cannot be sent as UTF-8 (a surrogate raised UnicodeEncodeError from the
    driver) or would be cut by C clients (NUL): refused before any I/O."""
    with pytest.raises(ValidationError, match=problem) as caught:
        SPACE.key(part, field="user_id")
    assert caught.value.field == "user_id"
    with pytest.raises(ValidationError):
        SPACE.tagged("session", part)


@pytest.mark.parametrize("part", [None, 1.5, b"bytes", True, ["a"]])
def test_parts_that_are_not_strings_or_integers_are_refused(part: object) -> None:
    with pytest.raises(ValidationError) as caught:
        SPACE.key(part)  # type: ignore[arg-type]
    assert caught.value.field == "key"


def test_areas_map_to_databases_or_cluster_prefixes(redis_url: str) -> None:
    standalone = RedisBackend(NexusSettings.load(redis={"url": redis_url}).redis)
    cluster = RedisBackend(NexusSettings.load(redis={"url": redis_url, "cluster": True}).redis)
    assert [standalone.location(area) for area in AREAS] == [f"db {i}" for i in range(6)]
    assert standalone.keyspace("cache").prefix == "nexus:"
    assert [cluster.keyspace(area).prefix for area in AREAS] == [f"nexus:{area}:" for area in AREAS]
    with pytest.raises(ValidationError) as caught:
        standalone.keyspace("nope")  # type: ignore[arg-type]
    assert caught.value.field == "area"


async def test_url_database_cannot_override_the_area_map(
    redis_url: str, redis_namespace: str
) -> None:
    backend = RedisBackend(
        NexusSettings.load(redis={"url": redis_url + "/7?db=9", "namespace": redis_namespace}).redis
    )
    try:
        client = backend.client("cache")
        assert client.connection_pool.connection_kwargs["db"] == 1
        assert backend.sync_client("queue").connection_pool.connection_kwargs["db"] == 4
    finally:
        await backend.close()


async def test_hostile_keys_stay_inside_the_namespace_on_a_real_server(
    redis_stack: Stack,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
) -> None:
    from nexus_store import NexusStore

    hostile = [
        f"{unique} a",
        f"{unique}\nb",
        f"{unique}*",
        f"{unique}:c",
        f"{unique}{{d}}",
        f"{unique}[e]?",
        f"{unique}%3A",
    ]
    async with NexusStore(redis_stack.settings()) as store:
        for index, key in enumerate(hostile):
            await store.cache.set(key, index, ttl=30)
        assert [await store.cache.get(key) for key in hostile] == list(range(len(hostile)))
        # ":c" and "%3A" escape differently, so they do not collide
        assert await store.cache.get(f"{unique}:c") != await store.cache.get(f"{unique}%3A")
        assert await store.cache.delete(f"{unique}*") == 1
        assert await store.cache.get(f"{unique} a") == 0  # a glob key deleted only itself
    names = [name.decode() for name in raw_redis(1).scan_iter(match=f"{redis_namespace}:c:*")]
    mine = [name for name in names if unique in name]
    assert len(mine) == len(hostile) - 1
    assert all(CHARSET.fullmatch(name.split(":", 2)[2]) for name in mine)
