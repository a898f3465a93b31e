"""Without PostgreSQL the commit point is one MongoDB document (``nexus_restore``): a restore
killed after it is finished by the next process that opens the store, as with PostgreSQL."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pymongo

from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.backup._pause import PAUSE_VARIABLE
from tests.backup.test_kill import _kill_after
from tests.support import start_cli


async def _state(stack: Stack) -> tuple[int, int]:
    async with NexusStore(stack.settings()) as store:  # opening finishes a committed restore
        events = await store.backends.mongo.db["events"].count_documents({})
        client = store.backends.redis.client("sessions")
        pattern = store.backends.redis.keyspace("sessions").pattern
        sessions = len([key async for key in client.scan_iter(match=pattern)])
        assert await store.backends.mongo.db["nexus_restore"].find_one({}) is None
    return events, sessions


async def test_a_kill_after_a_mongodb_commit_is_finished_by_opening_the_store(
    mongo_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    source = Stack.located(
        mongo_url=mongo_url, mongo_database=f"bcs{tag}", redis_url=redis_url,
        redis_namespace=f"{redis_namespace}s{tag}",
    )  # fmt: skip
    target = Stack.located(
        mongo_url=mongo_url, mongo_database=f"bct{tag}", redis_url=redis_url,
        redis_namespace=f"{redis_namespace}t{tag}",
    )  # fmt: skip
    async with NexusStore(source.settings()) as store:
        for n in range(30):
            await store.events.track("e", user_id=f"u{n}", wait=True)
        for n in range(5):
            await store.sessions.create(f"user-{n}", {"n": n}, ttl=600)
        await store.backup.create(tmp_path / "archive")
    after = await _state(source)
    async with NexusStore(target.settings()) as store:
        await store.events.track("mine", user_id="someone", wait=True)
    before = await _state(target)
    assert before != after

    env = {**target.environment(), PAUSE_VARIABLE: "committed"}
    process = start_cli("backup", "restore", str(tmp_path / "archive"), "--force", env=env)
    lines = _kill_after(process, "paused at committed", 0)
    assert process.returncode == -signal.SIGKILL, lines
    with pymongo.MongoClient(mongo_url) as client:  # committed: the plan is there
        assert client[f"bct{tag}"]["nexus_restore"].find_one({"_id": "pending"}) is not None
    assert await _state(target) == after
