"""Backup fixtures: a populated source stack (its own PostgreSQL database, MongoDB database and
Redis namespace, shared by the package), archives of it, and a fresh, empty target stack per
test.

Population: the ``demo`` workload, EVENTS extra events and AUDIT extra audit entries (the
issue's 50k/10k scaled down by 10 and 20 so that the package stays near a minute on an idle
2-core machine; ``NEXUS_BACKUP_FULL_SCALE=1`` runs the full counts),
sessions with a TTL, and a queue with delivered-but-unacknowledged messages.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack.stack import Stack, scratch_stack
from nexus_store import NexusSettings, NexusStore

#: NEXUS_BACKUP_FULL_SCALE=1 populates the issue's full 50,000 events and 10,000 audit entries.
FULL_SCALE = os.environ.get("NEXUS_BACKUP_FULL_SCALE") == "1"
EVENTS = 50_000 if FULL_SCALE else 5000
AUDIT = 10_000 if FULL_SCALE else 500
SESSIONS = 20
QUEUE_MESSAGES = 30
PENDING = 12  # consumed, not acknowledged: must come back in the group's pending list
#: Ed25519 seed signing the audit log's tree heads (64 hex digits).
SIGNING_KEY = secrets.token_hex(32)


def _stack(postgres_url: str, mongo_url: str, redis_url: str, prefix: str) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    with scratch_stack(
        postgres_url,
        mongo_url,
        redis_url,
        database=f"nexus_{prefix}_{tag}",
        namespace=f"{prefix}{tag}",
    ) as scratch:
        # Checkpoints every 100 entries, so that archives hold some to check the chain against;
        # a signing key (the same for source and targets), so that they hold a tree head.
        yield scratch.merged(
            outbox={"audited_tables": ["users"]},
            audit={"checkpoint_every": 100, "signing_key": SIGNING_KEY},
        )


@pytest.fixture(scope="package")
def source_stack(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[Stack]:
    yield from _stack(postgres_url, mongo_url, redis_url, "bks")


@pytest.fixture
def target_stack(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[Stack]:
    yield from _stack(postgres_url, mongo_url, redis_url, "bkt")


@dataclass
class Population:
    settings: NexusSettings
    tokens: list[str] = field(default_factory=list)
    queue: str = ""
    pending_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="package")
async def populated(source_stack: Stack) -> AsyncIterator[Population]:
    from nexus_store.cli.demo.workload import run_demo
    from nexus_store.cli.init import run_init

    settings = source_stack.settings()
    found = Population(settings)
    async with NexusStore(settings) as store:
        steps = await run_init(store, progress=False)
        assert all(step.status != "failed" for step in steps), steps
        report = await run_demo(store, users=5)
        assert not report.failures, report.failures
        await store.outbox.relay_once()
        for i in range(EVENTS):
            await store.events.track("bulk", user_id=f"u{i % 97}", properties={"i": i})
        await store.events.flush()
        for i in range(AUDIT):
            await store.audit.record("bulk", "touch", "item", str(i))
        for i in range(SESSIONS):
            found.tokens.append(await store.sessions.create(f"user-{i}", {"n": i}, ttl=3600))
        found.queue = f"jobs-{uuid.uuid4().hex[:6]}"
        for i in range(QUEUE_MESSAGES):
            await store.queue.enqueue(found.queue, {"job": i})
        deliveries = await store.queue.consume(found.queue, "workers", "w1", count=PENDING)
        found.pending_ids = [d.id for d in deliveries]
    yield found


async def _snapshot(settings: NexusSettings) -> dict[str, Any]:
    from nexus_store.backup import _mongo, _postgres
    from nexus_store.backup._redis import DURABLE_AREAS

    target = _postgres.PostgresTarget.from_settings(settings)
    state: dict[str, Any] = {}
    # Opened first, as an application would: opening finishes a committed restore.
    async with NexusStore(settings) as store:
        state["postgres"] = (
            await _postgres.counts_of(target)
            if await _postgres.exists(target, target.database)
            else {}
        )
        db = store.backends.mongo.db
        state["mongo"] = {
            name: await db[name].count_documents({})
            for name in _mongo.collections(settings).values()
        }
        redis = store.backends.redis
        for area in DURABLE_AREAS:
            client = redis.client(area)
            prefix = redis.keyspace(area).prefix.encode()
            keys = [k async for k in client.scan_iter(match=redis.keyspace(area).pattern)]
            state[f"redis:{area}"] = sorted(k[len(prefix) :] for k in keys)
    return state


@pytest.fixture
def snapshot() -> Callable[[NexusSettings], Awaitable[dict[str, Any]]]:
    """Counts of every store's data as an application sees them (after opening the store):
    PostgreSQL rows per table, documents per collection, key names per durable Redis area
    (without the namespace)."""
    return _snapshot


@pytest.fixture(scope="package")
async def populated_state(populated: Population) -> dict[str, Any]:
    """The populated source's :func:`_snapshot`, taken once: what a full restore of the
    archives gives."""
    return await _snapshot(populated.settings)


@pytest.fixture
def backup_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = secrets.token_hex(32)
    monkeypatch.setenv("NEXUS_BACKUP_KEY", key)
    return key


@pytest.fixture
def drop_database() -> Callable[[str], None]:
    """Drops the PostgreSQL database of a libpq URL (its sessions ended first)."""

    def drop(url: str) -> None:
        server, name = url.rsplit("/", 1)
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return drop


@pytest.fixture(scope="package")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "backup.key"
    path.write_text(secrets.token_hex(32))
    return path


@pytest.fixture(scope="package")
async def archives(
    populated: Population, tmp_path_factory: pytest.TempPathFactory, key_file: Path
) -> dict[str, Path]:
    """A plain and an encrypted archive of the populated source (never modified: copy one
    before damaging it)."""
    root = tmp_path_factory.mktemp("archives")
    async with NexusStore(populated.settings) as store:
        await store.backup.create(root / "plain")
        await store.backup.create(root / "encrypted", encrypt=True, key_file=key_file)
    return {"plain": root / "plain", "encrypted": root / "encrypted"}
