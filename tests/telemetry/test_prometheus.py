"""The Prometheus endpoint served by a real uvicorn server, scraped over HTTP and parsed
with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from devstack import servers
from nexus_store import NexusSettings, NexusStore
from nexus_store.telemetry.prometheus import disable, metrics_app
from tests.support import PASSWORD, tag


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` on a loopback port of its own, in this event loop; yields its base URL."""
    port = servers.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_metrics_route_serves_the_metric_table(secret_settings: NexusSettings) -> None:
    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/metrics", metrics_app(registry))])
    key = tag()
    try:
        async with NexusStore(secret_settings) as store:
            await store.cache.set(key, {"v": 1}, ttl=30)
            await store.cache.get(key)
            for _ in range(3):
                await store.limiter.hit(key, "2/minute")
            await store.events.track("scraped", user_id="u1")
            await store.events.flush()
            async with serving(app) as base, httpx.AsyncClient(base_url=base) as client:
                response = await client.get("/metrics")
    finally:
        disable(registry)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert PASSWORD not in response.text
    families = {family.name: family for family in text_string_to_metric_families(response.text)}

    duration = families["db_client_operation_duration_seconds"]
    assert duration.type == "histogram"
    counts = {
        sample.labels["db_operation_name"]: sample
        for sample in duration.samples
        if sample.name.endswith("_count")
    }
    get = counts["cache.get"]
    assert get.value == 1
    assert get.labels["db_system_name"] == "redis"
    assert f"{get.labels['server_address']}:{get.labels['server_port']}" in str(
        secret_settings.redis.url
    )
    assert get.labels["db_namespace"] == str(secret_settings.redis.databases.cache)
    assert counts["limiter.hit"].value == 3
    assert counts["events.flush"].labels["db_system_name"] == "mongodb"

    decisions = families["nexus_store_limiter_decisions"]
    assert decisions.type == "counter"
    by_decision = {
        sample.labels["nexus_store_limiter_decision"]: sample.value
        for sample in decisions.samples
        if sample.name.endswith("_total")
    }
    assert by_decision["refused"] >= 1 and by_decision["allowed"] >= 2
    assert families["nexus_store_events_written"].type == "counter"
    assert families["db_client_connection_max"].type == "gauge"


async def test_disable_takes_the_metrics_out_of_the_registry(
    secret_settings: NexusSettings,
) -> None:
    registry = CollectorRegistry()
    metrics_app(registry)
    metrics_app(registry)  # enabling twice adds nothing twice
    disable(registry)
    async with NexusStore(secret_settings) as store:
        await store.cache.get(tag())
    assert list(registry.collect()) == []
