"""Exactness under concurrency: a limit of 100 with 50 clients making 10 calls each lets
exactly 100 through, whether the clients are threads, asyncio tasks or two OS processes.

The window is an hour so that no unit comes back during the test: any count other than 100
is a race in the check.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import RateLimitExceeded
from nexus_store.redis.names import STRATEGY_NAMES
from tests.support import REPO_ROOT

STRATEGIES = list(STRATEGY_NAMES)
CLIENTS, CALLS, LIMIT = 50, 10, "100/hour"


@pytest.fixture(scope="module")
def settings(redis_stack: Stack) -> NexusSettings:
    return redis_stack.settings(redis={"max_connections": 16, "pool_timeout": 10})


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_threads(store: NexusStore, strategy: str) -> None:
    key = uuid.uuid4().hex
    passed: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(CLIENTS)

    @store.limiter.limit(LIMIT, key=lambda: key, strategy=strategy)
    def work() -> None:
        passed.append(1)

    def client() -> None:
        start.wait(timeout=30)
        for _ in range(CALLS):
            try:
                work()
            except RateLimitExceeded:
                refused.append(1)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(passed) == 100
    assert len(refused) == CLIENTS * CALLS - 100


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_asyncio_tasks(store: NexusStore, strategy: str) -> None:
    key = uuid.uuid4().hex
    passed: list[int] = []
    start = asyncio.Event()

    @store.limiter.limit(LIMIT, key=lambda: key, strategy=strategy)
    async def work() -> None:
        passed.append(1)

    async def client() -> int:
        await start.wait()
        refused = 0
        for _ in range(CALLS):
            try:
                await work()
            except RateLimitExceeded:
                refused += 1
        return refused

    tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    await asyncio.sleep(0)
    start.set()
    refused = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert len(passed) == 100
    assert sum(refused) == CLIENTS * CALLS - 100
    stats = store.limiter.stats()
    assert (stats["allowed"], stats["refused"]) == (100, CLIENTS * CALLS - 100)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_processes(redis_stack: Stack, strategy: str) -> None:
    """Two OS processes of 25 threads each, configured only by the environment."""
    key = uuid.uuid4().hex
    env = {
        **os.environ,
        **redis_stack.environment(),
        "PYTHONPATH": str(REPO_ROOT),
    }
    start_at = time.time() + 2.0  # both interpreters are up by then, so they contend
    command = [
        sys.executable,
        "-m",
        "tests.redis.ratelimit._decorator_worker",
        key,
        strategy,
        str(CLIENTS // 2),
        str(CALLS),
        str(start_at),
    ]
    workers = [
        subprocess.Popen(
            command,
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=90) for worker in workers]
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors
    reports = [json.loads(stdout) for stdout, _ in outputs]
    assert [report["failures"] for report in reports] == [[], []]
    assert sum(report["passed"] for report in reports) == 100, reports
