"""Acceptance: populate every area, back up, verify, restore into dropped stores, compare."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import Stack
from nexus_store import NexusStore
from tests.support import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
async def test_round_trip_restores_every_store(
    encrypt: bool,
    populated,
    source_stack: Stack,
    target_stack: Stack,
    snapshot,
    drop_database,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = {}
    if encrypt:
        env["NEXUS_BACKUP_KEY"] = request.getfixturevalue("backup_key")
    archive = tmp_path / "archive"
    flags = ["--encrypt"] if encrypt else []
    created = run_cli(
        "backup", "create", str(archive), *flags, "--format", "json",
        env={**source_stack.environment(), **env}, timeout=180,
    )  # fmt: skip
    assert created.returncode == 0, created.output
    report = created.json()
    assert report["encrypted"] is encrypt
    parts = {(c["store"], c["part"]): c["count"] for c in report["counts"]}
    assert parts[("mongo", "events")] >= 5000
    assert parts[("redis", "sessions")] >= 20
    assert "running" in created.stderr  # progress on stderr, the report on stdout

    verified = run_cli("backup", "verify", str(archive), "--format", "json", env=env)
    assert verified.returncode == 0, verified.output
    assert verified.json()["auditChecked"] >= 500

    before = await snapshot(populated.settings)
    # "Drop the databases": the target's PostgreSQL database does not exist at all.
    drop_database(target_stack.postgres_url)
    restored = run_cli(
        "backup", "restore", str(archive), "--format", "json",
        env={**target_stack.environment(), **env}, timeout=180,
    )  # fmt: skip
    assert restored.returncode == 0, restored.output
    result = restored.json()
    assert result["health"] in ("pass", "warn")
    assert result["auditVerify"]["ok"] is True
    assert result["auditVerify"]["checked"] >= 500

    after = await snapshot(target_stack.settings())
    assert after["postgres"] == before["postgres"]
    assert sum(after["postgres"].values()) > 0
    assert after["mongo"] == before["mongo"]
    assert after == before

    async with NexusStore(target_stack.settings()) as store:
        events = store.backends.mongo.db[store.settings.events.collection]
        indexes = [index async for index in await events.list_indexes()]
        assert any("expireAfterSeconds" in index for index in indexes), indexes
        # Sessions come back with the expiry they had (ABSTTL), not a fresh TTL; read before
        # any get(), which slides the expiry.
        target_ttls = await _session_ttls(store)
        async with NexusStore(populated.settings) as source:
            source_ttls = await _session_ttls(source)
        assert target_ttls.keys() == source_ttls.keys()
        for key, ttl in target_ttls.items():
            assert ttl > 0 and abs(ttl - source_ttls[key]) < 30_000, (key, ttl, source_ttls[key])
        for token in populated.tokens:
            session = await store.sessions.get(token)
            assert session.user_id.startswith("user-")
    async with NexusStore(target_stack.settings()) as store:
        # The queue's messages, with the group's delivered-but-unacknowledged entries.
        stats = await store.queue.stats(populated.queue)
        assert stats.groups["workers"].pending == len(populated.pending_ids)
        assert stats.length == 30


async def _session_ttls(store: NexusStore) -> dict[bytes, int]:
    """PTTL of every key of the sessions area, by its name without the namespace."""
    redis = store.backends.redis
    client, keyspace = redis.client("sessions"), redis.keyspace("sessions")
    return {
        key[len(keyspace.prefix) :]: await client.pttl(key)
        async for key in client.scan_iter(match=keyspace.pattern)
    }
