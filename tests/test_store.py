"""The facade against the real services: connect, route, degrade, close, never leak secrets."""

from __future__ import annotations

import logging
import uuid
from functools import cached_property
from typing import Any

import pytest

from devstack import servers
from devstack.stack import Stack
from nexus_store import (
    AuditRecord,
    BackendUnavailableError,
    ConfigurationError,
    Event,
    NewSession,
    NexusSettings,
    NexusStore,
    StoreClosedError,
    ValidationError,
)
from nexus_store.postgres import migrate
from nexus_store.postgres.models import User

PASSWORD = "Sup3r-Secret-pw"


@pytest.fixture(scope="module")
async def migrated(settings: NexusSettings) -> NexusSettings:
    await migrate.upgrade(settings)
    return settings


def _closed_port_url(backend: str) -> str:
    port = servers.closed_port()
    return {
        "postgres": f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/nexus",
        "mongo": f"mongodb://app:{PASSWORD}@127.0.0.1:{port}/?authSource=admin",
        "redis": f"redis://:{PASSWORD}@127.0.0.1:{port}",
    }[backend]


def _with_broken(stack: Stack, backend: str) -> NexusSettings:
    return stack.merged(**{backend: {"url": _closed_port_url(backend)}}).settings(
        mongo={"server_selection_timeout": 1.0},
        postgres={"connect_timeout": 1.0},
        redis={"connect_timeout": 1.0},
    )


def _user() -> User:
    tag = uuid.uuid4().hex[:12]
    return User(email=f"{tag}@example.com", username=f"user_{tag}", password_hash="x" * 60)


def _audit_record() -> AuditRecord:
    return AuditRecord(actor="tests", action="check", resource_type="store", resource_id="1")


async def test_from_env_connects_every_backend(
    monkeypatch: pytest.MonkeyPatch, stack: Stack
) -> None:
    monkeypatch.setenv("NEXUS_POSTGRES_URL", stack.postgres_url)
    monkeypatch.setenv("NEXUS_MONGO_URL", stack.mongo_url)
    monkeypatch.setenv("NEXUS_REDIS_URL", stack.redis_url)
    async with NexusStore.from_env() as store:
        assert sorted(store.backends.configured()) == ["mongo", "postgres", "redis"]
        assert await store.connect() == {"postgres": None, "mongo": None, "redis": None}


async def test_routes_list_every_kind(store: NexusStore) -> None:
    routes = {route.kind: route for route in store.routes()}
    assert set(routes) == {
        "entity",
        "event",
        "audit",
        "session",
        "cache",
        "ratelimit",
        "realtime",
        "queue",
    }
    assert routes["entity"].backend == "postgres"
    assert routes["event"].location == f"{store.settings.mongo.database}.events"
    assert routes["audit"].location == f"{store.settings.mongo.database}.audit_log"
    assert routes["session"].location == "db 0"
    assert routes["cache"].location == "db 1"
    assert routes["ratelimit"].location == "db 2"
    assert routes["queue"].location == "db 4"


async def test_routes_become_prefixes_in_cluster_mode(stack: Stack) -> None:
    store = NexusStore(stack.settings(redis={"cluster": True}))
    namespace = stack.redis_namespace
    locations = {route.kind: route.location for route in store.routes()}
    assert locations["session"] == f"cluster prefix {namespace}:sessions:"
    assert locations["ratelimit"] == f"cluster prefix {namespace}:ratelimit:"


async def test_routes_ask_the_backend_where_the_cache_server_is(stack: Stack) -> None:
    store = NexusStore(stack.settings(redis={"cache_url": "redis://cache:6379"}))
    locations = {route.kind: route.location for route in store.routes()}
    assert locations["cache"] == "cache server db 1" == store.backends.redis.location("cache")
    assert locations["session"] == "db 0"


async def test_routes_of_an_unconfigured_backend_have_no_location(stack: Stack) -> None:
    store = NexusStore(stack.only("mongo", "redis").settings())
    locations = {route.kind: route.location for route in store.routes()}
    assert locations["entity"] == "not configured"
    assert locations["event"] == f"{store.settings.mongo.database}.events"


def test_every_route_reaches_a_sub_api_of_the_store() -> None:
    from nexus_store.routing import ROUTES

    for spec in ROUTES:
        assert isinstance(getattr(NexusStore, spec.api), cached_property), spec.api
        assert (spec.redis_area is not None) == (spec.backend == "redis"), spec.kind


async def test_started_reports_only_the_sub_apis_already_used(stack: Stack) -> None:
    async with NexusStore(stack.settings()) as store:
        assert store.started("cache") is None
        cache = store.cache
        assert store.started("cache") is cache is store.cache


async def test_put_routes_each_record_to_its_store(migrated: NexusSettings) -> None:
    async with NexusStore(migrated) as store:
        user = await store.put(_user())
        assert (await store.entities.get(User, user.id)).email == user.email

        event = Event(name="store.put", user_id=str(user.id))
        await store.put(event)
        await store.events.flush()
        exported = [doc["event_id"] async for doc in store.events.export_user(str(user.id))]
        assert exported == [event.event_id]

        entry = await store.put(_audit_record())
        assert entry.seq >= 1 and entry.hash

        token = await store.put(NewSession(user_id=str(user.id), data={"via": "put"}))
        assert (await store.sessions.get(token)).data == {"via": "put"}

        with pytest.raises(ValidationError, match="record"):
            await store.put(object())


async def test_unconfigured_backend_names_its_setting_on_use(
    stack: Stack,
) -> None:
    async with NexusStore(stack.only("postgres", "mongo").settings()) as store:
        with pytest.raises(ConfigurationError) as caught:
            store.sessions  # noqa: B018 - the property access is the operation under test
        assert caught.value.setting == "redis.url"
        assert "NEXUS_REDIS_URL" in str(caught.value)


@pytest.mark.parametrize("backend", ["postgres", "mongo", "redis"])
async def test_closed_port_raises_backend_unavailable_and_others_keep_working(
    backend: str, migrated: NexusSettings, stack: Stack
) -> None:
    calls = {
        "postgres": lambda store: store.entities.create(User, **_user_values()),
        "mongo": lambda store: store.audit.put(_audit_record()),
        "redis": lambda store: store.sessions.create("u1", {"k": "v"}),
    }
    async with NexusStore(_with_broken(stack, backend)) as store:
        with pytest.raises(BackendUnavailableError) as caught:
            await calls[backend](store)
        assert caught.value.backend == backend
        assert backend in str(caught.value)
        assert PASSWORD not in str(caught.value)
        for other in {"postgres", "mongo", "redis"} - {backend}:
            assert await calls[other](store)


def _user_values() -> dict[str, Any]:
    user = _user()
    return {"email": user.email, "username": user.username, "password_hash": user.password_hash}


async def test_password_never_reaches_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nexus_store")
    settings = _with_broken(stack, "postgres")
    async with NexusStore(settings) as store:
        with pytest.raises(BackendUnavailableError):
            await store.backends.postgres.ping()
    output = caplog.text + repr([vars(record) for record in caplog.records])
    assert "backend_unreachable" in output
    assert "postgres" in output
    assert PASSWORD not in output


async def test_close_is_safe_when_a_backend_never_connected(
    stack: Stack,
) -> None:
    store = NexusStore(_with_broken(stack, "mongo"))
    results = await store.connect(ping_timeout=2.0)
    assert results["mongo"] is not None and PASSWORD not in results["mongo"]
    assert results["redis"] is None
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError, match="closed") as caught:
        store.cache  # noqa: B018
    assert caught.value.api == "cache"
    assert not isinstance(caught.value, ConfigurationError)  # the settings are not at fault
