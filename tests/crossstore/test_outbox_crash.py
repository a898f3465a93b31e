"""Crash test: relay processes are SIGKILLed at random points while writes continue.

At the end every committed change is in the audit log exactly once, nothing else is there,
and the chain verifies. Its own module, hence its own databases: the audit log then holds
only what this test wrote.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from nexus_store import NexusStore
from nexus_store.postgres.models import Organization, Outbox, Project

KILLS = 6
pytestmark = pytest.mark.slow


def start_relay(crossstore_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **crossstore_env,
        "NEXUS_OUTBOX__BATCH_SIZE": "5",
        "NEXUS_OUTBOX__POLL_INTERVAL": "0.05",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "nexus_store.outbox"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_sigkilled_relays_lose_and_duplicate_nothing(
    store: NexusStore, crossstore_env: dict[str, str]
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    org = await store.entities.create(Organization, name="Crash", slug=f"c-{uuid.uuid4().hex}")
    projects = [
        await store.entities.create(Project, organization_id=org.id, name=f"c{i}", audit=True)
        for i in range(5)
    ]
    writing = asyncio.Event()
    rolled_back: list[str] = []

    async def writer() -> int:
        writes = 0
        while not writing.is_set():
            project = rng.choice(projects)
            if writes % 7 == 3:  # changes that roll back must never reach the audit log
                name = f"rolled-back-{uuid.uuid4().hex}"
                with pytest.raises(RuntimeError):
                    async with store.entities.transaction():
                        created = await store.entities.create(
                            Project, organization_id=org.id, name=name, audit=True
                        )
                        rolled_back.append(str(created.id))
                        raise RuntimeError("roll back")
            else:
                await store.entities.update(Project, project.id, budget=Decimal(writes), audit=True)
            writes += 1
            await asyncio.sleep(0.002)
        return writes

    table = Outbox.__table__

    async def delivered() -> int:
        async with store.backends.postgres.engine.connect() as conn:
            query = select(func.count()).where(table.c.delivered_at.is_not(None))
            return int((await conn.execute(query)).scalar_one())

    writer_task = asyncio.create_task(writer())
    try:
        for _ in range(KILLS):
            before = await delivered()
            process = start_relay(crossstore_env)
            for _ in range(300):  # wait (15 s at most) until it is delivering, then kill it
                if await delivered() > before:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0, 0.3))
            process.kill()  # SIGKILL: no cleanup; its transaction and locks die with it
            await asyncio.to_thread(process.wait, 10)
            assert process.returncode == -9, process.stderr.read() if process.stderr else ""
    finally:
        writing.set()
        writes = await writer_task
    assert writes > 50
    assert await delivered() > 0  # the killed relays did deliver between kills

    await store.outbox.relay_once()  # what the last kill left behind
    assert (await store.outbox.lag()).pending == 0
    async with store.backends.postgres.engine.connect() as conn:
        committed = (await conn.execute(select(table.c.event_id, table.c.aggregate_id))).all()
    collection = store.backends.mongo.db[store.settings.audit.collection]
    documents = [doc async for doc in collection.find({}, {"_id": 0})]
    keys = Counter(doc.get("idempotency_key") for doc in documents)
    expected = {f"outbox:{row.event_id}" for row in committed}
    assert [key for key, count in keys.items() if count > 1] == [], f"seed {seed}"
    assert set(keys) == expected, f"seed {seed}"  # every committed change, nothing else
    assert not {doc["resource_id"] for doc in documents} & set(rolled_back)
    verified = await store.audit.verify()
    assert verified.ok, (seed, verified)
    assert verified.checked == len(committed)
    # Per project, the audit log holds every version once, in commit order.
    for project in projects:
        current = await store.entities.get(Project, project.id)
        versions = [
            doc["after"]["version"]
            for doc in sorted(documents, key=lambda doc: doc["seq"])
            if doc["resource_id"] == str(project.id)
        ]
        assert versions == list(range(1, current.version + 1)), f"seed {seed}"
