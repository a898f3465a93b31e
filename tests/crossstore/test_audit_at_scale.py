"""The audit log at scale: 3 OS processes of 8 tasks each append while the outbox relay
delivers; one valid log, every idempotency key once, proofs that verify offline."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections import Counter

from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.audit_proofs import check_entry, verify_consistency
from nexus_store.postgres.models import Organization, Project
from tests.support import REPO_ROOT

WRITER = REPO_ROOT / "tests" / "mongo" / "audit" / "_writer_process.py"
KEY = "scale-test-k3y"
PROCESSES, TASKS, PER_TASK, SHARED = 3, 8, 6, 20
CHANGES = 30


async def test_three_processes_of_eight_tasks_and_the_relay(
    settings, crossstore_stack: Stack
) -> None:
    configured = crossstore_stack.settings(audit={"hmac_key": KEY, "checkpoint_every": 7})
    url = configured.mongo.url.get_secret_value()
    env = {**os.environ, "NEXUS_AUDIT__HMAC_KEY": KEY}
    async with NexusStore(configured) as store:
        await store.audit.record("setup", "start", "test", "0")
        before = await store.audit.tree_head()
        org = await store.entities.create(
            Organization, name="Scale", slug=f"scale-{uuid.uuid4().hex}"
        )
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(WRITER),
                url,
                configured.mongo.database,
                configured.audit.collection,
                f"proc{n}",
                str(PER_TASK),
                str(TASKS),
                str(SHARED),
                cwd=REPO_ROOT,
                env=env,
                stderr=subprocess.PIPE,
            )
            for n in range(PROCESSES)
        ]
        delivered = 0
        for index in range(CHANGES):  # audited changes, relayed while the writers append
            await store.entities.create(
                Project, organization_id=org.id, name=f"scale-{index}", audit=True
            )
            if index % 5 == 4:
                delivered += await store.outbox.relay_once()
        for process in processes:
            _, stderr = await asyncio.wait_for(process.communicate(), 180)
            assert process.returncode == 0, stderr.decode()
        while (count := await store.outbox.relay_once()) > 0:
            delivered += count
        assert delivered == CHANGES

        documents = (
            await store.backends.mongo.db[configured.audit.collection]
            .find({}, {"_id": 0, "seq": 1, "actor": 1, "idempotency_key": 1})
            .to_list()
        )
        keys = Counter(doc.get("idempotency_key") for doc in documents if "idempotency_key" in doc)
        assert all(count == 1 for count in keys.values())  # every key stored once
        assert sum(key.startswith("shared:") for key in keys) == SHARED
        assert sum(key.startswith("outbox:") for key in keys) == CHANGES
        assert sorted(doc["seq"] for doc in documents) == list(range(1, len(documents) + 1))
        assert len(documents) == 1 + SHARED + CHANGES

        result = await store.audit.verify()
        assert result.ok, result.reason
        after = await store.audit.tree_head()
        for seq in random.Random(15).sample(range(1, after.size + 1), 8):
            proof = await store.audit.prove(seq)
            assert check_entry(proof.entry, proof, after, hmac_key=KEY.encode()) is None
        consistency = await store.audit.prove_consistency(before.size, after.size)
        assert verify_consistency(
            before.size,
            after.size,
            bytes.fromhex(before.root_hash),
            bytes.fromhex(after.root_hash),
            [bytes.fromhex(item) for item in consistency.path],
        )
        assert (await store.audit.verify(since=before)).ok
