"""Sessions on a real Redis: hashed tokens, sliding expiry, caps, revocation, the user index."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import pytest

import redis as redis_lib
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import NotFoundError, ValidationError
from nexus_store.redis.sessions import NewSession, Session, SessionInfo


def _all_values(client: redis_lib.Redis, namespace: str) -> bytes:
    """Every key name and stored byte of the namespace, to search for leaked secrets."""
    dump = b""
    for name in client.scan_iter(match=f"{namespace}:*"):
        dump += name
        kind = client.type(name)
        if kind == b"hash":
            for field, value in client.hgetall(name).items():
                dump += field + value
        elif kind == b"zset":
            dump += b"".join(client.zrange(name, 0, -1))
    return dump


async def test_create_get_update_revoke(store: NexusStore, unique: str) -> None:
    sessions = store.sessions
    token = await sessions.put(NewSession(f"u{unique}", {"role": "admin"}))
    assert isinstance(token, str) and len(token) >= 40
    session = await sessions.get(token)
    assert isinstance(session, Session)
    assert (session.user_id, session.data) == (f"u{unique}", {"role": "admin"})
    assert session.created_at <= session.last_seen_at < session.expires_at

    await sessions.update(token, {"role": "viewer", "n": [1, 2]})
    assert (await sessions.get(token)).data == {"role": "viewer", "n": [1, 2]}

    assert await sessions.revoke(token) is True
    assert await sessions.revoke(token) is False
    assert await sessions.get_or_none(token) is None
    with pytest.raises(NotFoundError):
        await sessions.update(token, {})


async def test_only_a_hash_of_the_token_is_stored(
    store: NexusStore,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
) -> None:
    token = await store.sessions.create(f"u{unique}", {"k": "v"})
    secret_part = token.split(".", 1)[1]
    stored = _all_values(raw_redis(0), redis_namespace)
    assert secret_part.encode() not in stored
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    # the database index of the sessions area is DB 0; nothing leaked to DB 1
    assert not list(raw_redis(1).scan_iter(match=f"{redis_namespace}:*session*"))


async def test_unknown_expired_and_revoked_tokens_look_identical(
    redis_stack: Stack, unique: str
) -> None:
    async with NexusStore(redis_stack.settings()) as store:
        sessions = store.sessions
        expired = await sessions.create(f"u{unique}", {}, ttl=0.2)
        revoked = await sessions.create(f"u{unique}", {})
        await sessions.revoke(revoked)
        forged = "0000." + "A" * 43
        await asyncio.sleep(0.35)
        errors = []
        for token in (expired, revoked, forged, "garbage", ""):
            with pytest.raises(NotFoundError) as caught:
                await sessions.get(token)
            errors.append((type(caught.value), str(caught.value), caught.value.key))
        assert len(set(errors)) == 1
        assert expired not in errors[0][1]


async def test_sliding_expiry_is_capped_by_max_lifetime(redis_stack: Stack, unique: str) -> None:
    async with NexusStore(
        redis_stack.settings(sessions={"sliding": True, "max_lifetime": 1})
    ) as store:
        sessions = store.sessions
        token = await sessions.create(f"u{unique}", {}, ttl=0.6)
        first = await sessions.get(token)
        # Reading every 0.25 s keeps a 0.6 s session alive well past 0.6 s...
        for _ in range(3):
            await asyncio.sleep(0.25)
            assert await sessions.get_or_none(token) is not None
        later = await sessions.get(token)
        assert later.expires_at > first.expires_at
        # ...but never past max_lifetime (1 s) after creation.
        cap = (later.expires_at - later.created_at).total_seconds()
        assert cap <= 1.0
        past_cap = later.created_at.timestamp() + 1.05 - time.time()
        await asyncio.sleep(max(past_cap, 0))
        assert await sessions.get_or_none(token) is None


async def test_without_sliding_reads_do_not_extend(redis_stack: Stack, unique: str) -> None:
    async with NexusStore(redis_stack.settings(sessions={"sliding": False})) as store:
        token = await store.sessions.create(f"u{unique}", {}, ttl=0.6)
        expires = (await store.sessions.get(token)).expires_at
        await asyncio.sleep(0.2)
        assert (await store.sessions.get(token)).expires_at == expires
        await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.05)
        assert await store.sessions.get_or_none(token) is None


async def test_revoke_all_and_list_follow_expiry(
    store: NexusStore,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
) -> None:
    sessions = store.sessions
    user = f"user {unique}:{{x}}*"  # odd characters in the user id are fine
    long_lived = [await sessions.create(user, {"i": i}) for i in range(3)]
    await sessions.create(user, {"short": True}, ttl=0.2)
    other = await sessions.create(f"other{unique}", {})
    listed = await sessions.list_for_user(user)
    assert len(listed) == 4
    assert all(isinstance(info, SessionInfo) and not isinstance(info, Session) for info in listed)
    assert all(info.user_id == user for info in listed)
    text = repr(listed)
    assert not any(token.split(".")[1] in text for token in long_lived)

    await asyncio.sleep(0.3)
    assert len(await sessions.list_for_user(user)) == 3  # the expired one left the index
    index = [
        n for n in raw_redis(0).scan_iter(match=f"{redis_namespace}:user:*") if unique in n.decode()
    ]
    assert [raw_redis(0).zcard(name) for name in index if b"other" not in name] == [3]

    assert await sessions.revoke_all(user) == 3
    assert await sessions.list_for_user(user) == []
    for token in long_lived:
        assert await sessions.get_or_none(token) is None
    assert await sessions.get_or_none(other) is not None  # another user is untouched
    assert await sessions.revoke_all(user) == 0


async def test_concurrent_creates_are_all_indexed(store: NexusStore, unique: str) -> None:
    tokens = await asyncio.gather(
        *(store.sessions.create(f"u{unique}", {"n": n}) for n in range(40))
    )
    assert len(set(tokens)) == 40
    assert len(await store.sessions.list_for_user(f"u{unique}")) == 40
    assert await store.sessions.revoke_all(f"u{unique}") == 40


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.create("", {}), "user_id"),
        (lambda s: s.create("x" * 300, {}), "user_id"),
        (lambda s: s.create(None, {}), "user_id"),
        # Found by the long fuzz profile: 0 was stored as "0" and read back as a string.
        (lambda s: s.create(0, {}), "user_id"),
        (lambda s: s.revoke_all(5), "user_id"),
        (lambda s: s.create("u", ["not", "a", "dict"]), "data"),
        (lambda s: s.create("u", {"when": object()}), "data.when"),
        # NaN and ±Infinity have no JSON form: refused, never stored as null
        (lambda s: s.create("u", {"score": float("nan")}), "data.score"),
        (lambda s: s.create("u", {"scores": [1.0, float("-inf")]}), "data.scores[1]"),
        (lambda s: s.create("\ud800", {}), "user_id"),
        (lambda s: s.create("a\x00b", {}), "user_id"),
        (lambda s: s.revoke_all("\udfff"), "user_id"),
        (lambda s: s.list_for_user("\ud800x"), "user_id"),
        (lambda s: s.create("u", {"blob": "x" * 20_000}), "data"),
        (lambda s: s.create("u", {}, ttl=0), "ttl"),
        # 5e-324 s was stored as a 1 ms session (found by the long fuzz profile)
        (lambda s: s.create("u", {}, ttl=5e-324), "ttl"),
        (lambda s: s.create("u", {}, ttl=0.0009), "ttl"),
        (lambda s: s.create("u", {}, ttl="60"), "ttl"),
        (lambda s: s.get(b"bytes-token"), "token"),
        (lambda s: s.revoke_all(""), "user_id"),
    ],
)
async def test_bad_input_is_refused_before_redis(
    store: NexusStore, call: Callable[..., object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await call(store.sessions)  # type: ignore[misc]
    assert caught.value.field == field
