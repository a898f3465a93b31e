"""The metrics read from the SDK's own counters (event writer, limiter, outbox, pools),
collected by the real OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import gc

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.postgres.models import User
from tests.support import FAST_FAILURE, Telemetry, tag, user_values


async def test_event_writer_limiter_outbox_and_pool_metrics(
    stack: Stack, secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    key = tag()
    gc.collect()  # the writers and limiters of earlier tests would add up with these
    async with NexusStore(secret_settings) as store:
        for _ in range(3):
            await store.events.track("metric_test", user_id="u1")
        await store.events.flush()
        for _ in range(3):
            await store.limiter.hit(key, "2/minute")
        await store.entities.create(User, **user_values())
        lag = await store.outbox.lag()
        written = telemetry.metric_points("nexus_store.events.written")
        decisions = {
            point.attributes["nexus_store.limiter.decision"]: point.value
            for point in telemetry.metric_points("nexus_store.limiter.decisions")
        }
        pending = telemetry.metric_points("nexus_store.outbox.pending")
        pools = {
            (point.attributes["db.client.connection.pool.name"]): point
            for point in telemetry.metric_points("db.client.connection.max")
        }
    assert [point.value for point in written] == [3]
    assert decisions == {"allowed": 2, "refused": 1}
    assert [point.value for point in pending] == [lag.pending]
    assert pools["postgres.writes"].value == secret_settings.postgres.pool_size + (
        secret_settings.postgres.max_overflow
    )
    assert pools["redis.ratelimit"].value == secret_settings.redis.max_connections

    # Without Redis, the fail mode decides, and says so by mode.
    port = servers.closed_port()
    down = stack.merged(redis={"url": f"redis://127.0.0.1:{port}/0"}).settings(
        redis=FAST_FAILURE, ratelimit={"fail_mode": "fail_open"}
    )
    async with NexusStore(down) as store:
        assert (await store.limiter.hit(key, "2/minute")).allowed
        by_mode = {
            point.attributes["nexus_store.limiter.fail_mode"]: point.value
            for point in telemetry.metric_points("nexus_store.limiter.fail_mode")
        }
    assert by_mode == {"fail_open": 1, "fail_closed": 0, "local": 0}
