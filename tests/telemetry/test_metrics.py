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
    gc.collect()
    # The metrics are process-wide sums over every live writer and limiter, and other tests'
    # stores (session fixtures) may still be alive: what this test adds is the difference.
    written_before = _total(telemetry, "nexus_store.events.written")
    decisions_before = _by(telemetry, "nexus_store.limiter.decisions", "decision")
    async with NexusStore(secret_settings) as store:
        for _ in range(3):
            await store.events.track("metric_test", user_id="u1")
        await store.events.flush()
        for _ in range(3):
            await store.limiter.hit(key, "2/minute")
        await store.entities.create(User, **user_values())
        lag = await store.outbox.lag()
        written = _total(telemetry, "nexus_store.events.written") - written_before
        decisions = {
            decision: value - decisions_before.get(decision, 0)
            for decision, value in _by(
                telemetry, "nexus_store.limiter.decisions", "decision"
            ).items()
        }
        pending = telemetry.metric_points("nexus_store.outbox.pending")
        pools = {
            (point.attributes["db.client.connection.pool.name"]): point
            for point in telemetry.metric_points("db.client.connection.max")
        }
    assert written == 3
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
    modes_before = _by(telemetry, "nexus_store.limiter.fail_mode", "fail_mode")
    async with NexusStore(down) as store:
        assert (await store.limiter.hit(key, "2/minute")).allowed
        by_mode = _by(telemetry, "nexus_store.limiter.fail_mode", "fail_mode")
    added = {mode: by_mode[mode] - modes_before.get(mode, 0) for mode in by_mode}
    assert added == {"fail_open": 1, "fail_closed": 0, "local": 0}


def _total(telemetry: Telemetry, name: str) -> float:
    return sum(point.value for point in telemetry.metric_points(name))


def _by(telemetry: Telemetry, name: str, attribute: str) -> dict[str, float]:
    """The points of metric ``name`` keyed by their ``nexus_store.limiter.<attribute>``."""
    return {
        point.attributes[f"nexus_store.limiter.{attribute}"]: point.value
        for point in telemetry.metric_points(name)
    }
