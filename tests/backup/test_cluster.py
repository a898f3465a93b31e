"""Redis areas backed up from and restored into a real 3-master Redis Cluster: SCAN reaches
every primary, and DUMP/RESTORE work key by key whatever the slot."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import Stack
from nexus_store import NexusStore

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]


async def test_sessions_and_queues_round_trip_on_a_cluster(
    redis_cluster: str, unique: str, tmp_path: Path
) -> None:
    source = Stack.located(redis_url=redis_cluster, redis_namespace=f"bs{unique}")
    target = Stack.located(redis_url=redis_cluster, redis_namespace=f"bt{unique}")
    cluster = {"cluster": True}
    async with NexusStore(source.settings(redis=cluster)) as store:
        tokens = [await store.sessions.create(f"user-{n}", {"n": n}, ttl=600) for n in range(40)]
        for n in range(10):
            await store.queue.enqueue("mail", {"n": n})
        await store.queue.consume("mail", "workers", "w1", count=4)
        report = await store.backup.create(tmp_path / "archive")
    keys = {c.part: c.count for c in report.counts}
    assert keys["sessions"] >= 40  # a key per session, plus the per-user indexes

    async with NexusStore(target.settings(redis=cluster)) as store:
        restored = await store.backup.restore(tmp_path / "archive")
        assert {c.part: c.count for c in restored.counts} == keys
        for n, token in enumerate(tokens):
            assert (await store.sessions.get(token)).data == {"n": n}
        stats = await store.queue.stats("mail")
        assert (stats.length, stats.groups["workers"].pending) == (10, 4)
        # The restored keys carry the target's namespace, spread over the cluster's nodes.
        client = store.backends.redis.client("sessions")
        names = [key async for key in client.scan_iter(match=f"bt{unique}:*")]
        assert len(names) == sum(keys.values())
        nodes = {client.get_node_from_key(name).name for name in names}
        assert len(nodes) == 3
