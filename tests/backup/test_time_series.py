"""Time-series events collections: MongoDB cannot rename them, so a restore stages the
documents in a regular collection and, once committed, copies them into a new time-series
collection created with the archived options (``_mongo.publish``)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from bson import json_util

from devstack.stack import Stack, scratch_stack
from nexus_store import NexusStore
from nexus_store.backup import _mongo
from nexus_store.cli.init import run_init

_OPTIONS = {"timeseries": {"timeField": "ts", "granularity": "seconds"}}


async def test_copy_path_is_complete_and_can_run_again_after_a_kill(target_stack: Stack) -> None:
    """The copy itself, on any server (the substitute takes the time-series options and
    creates a regular collection: what is checked here is the copy, count, indexes and the
    order that makes a re-run after a kill safe)."""
    async with NexusStore(target_stack.settings()) as store:
        backend = store.backends.mongo
        db = backend.db
        staged = "events__nxr_" + secrets.token_hex(4)
        await db[staged].insert_many([{"i": i, "ts": i} for i in range(1200)])
        indexes = [{"key": {"i": 1}, "name": "i_1"}]
        plan = {
            "events": {
                "staged": staged,
                "count": 1200,
                "timeSeries": True,
                "options": json_util.dumps(_OPTIONS),
                "indexes": json_util.dumps(indexes),
            }
        }
        # A kill halfway through the copy: the target holds part of it, the staged copy all.
        await db.drop_collection("events")
        await db["events"].insert_many([{"i": i, "ts": i} for i in range(500)])
        await _mongo.publish(backend, plan)
        assert await db["events"].count_documents({}) == 1200
        assert sorted([d["i"] async for d in db["events"].find({})]) == list(range(1200))
        assert staged not in await db.list_collection_names()
        keys = [dict(index["key"]) async for index in await db["events"].list_indexes()]
        assert {"i": 1} in keys  # by key: some servers name indexes their own way
        # Once the staged copy is gone, publishing again changes nothing.
        await _mongo.publish(backend, plan)
        assert await db["events"].count_documents({}) == 1200


@pytest.mark.real_mongodb
async def test_round_trip_of_a_time_series_events_collection(
    postgres_url: str, mongo_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Needs MongoDB 7.0 or later (NEXUS_MONGO_URL, or Docker's mongo:7): the substitute
    has no time-series collections."""
    stacks = []
    for prefix in ("bts", "btt"):
        tag = secrets.token_hex(5)
        stacks.append(
            scratch_stack(
                postgres_url,
                mongo_url,
                redis_url,
                database=f"nexus_{prefix}_{tag}",
                namespace=f"{prefix}{tag}",
            )
        )
    with stacks[0] as source, stacks[1] as target:
        source_settings = source.merged(events={"time_series": True}).settings()
        target_settings = target.merged(events={"time_series": True}).settings()
        async with NexusStore(source_settings) as store:
            steps = await run_init(store, progress=False, only=["mongo"])
            assert all(step.status != "failed" for step in steps), steps
            for i in range(300):
                await store.events.track("ts-event", user_id=f"u{i % 7}", properties={"i": i})
            await store.events.flush()
            await store.backup.create(tmp_path / "archive", only="mongo")
        async with NexusStore(target_settings) as store:
            report = await store.backup.restore(tmp_path / "archive", only="mongo")
            db = store.backends.mongo.db
            info = await (await db.list_collections(filter={"name": "events"})).to_list()
            assert info[0]["type"] == "timeseries", info
            assert await db["events"].count_documents({}) == 300
            assert not [n for n in await db.list_collection_names() if "__nxr_" in n]
            assert any(c.part == "events" and c.count == 300 for c in report.counts)
