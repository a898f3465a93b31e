"""Redis health checks: a response time per logical DB, version, memory and eviction
policy, connections, and cluster state. ``nexus-store init`` runs the same checks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from nexus_store.health import (
    HIGH_USAGE,
    Check,
    CheckResult,
    HealthTarget,
    Status,
    describe_failure,
    ms,
    prepare,
    version_check,
)

if TYPE_CHECKING:
    from nexus_store.redis.client import Area, RedisBackend

__all__ = ["area_pings", "cluster_state", "eviction_risk", "redis_checks", "server_info"]


def eviction_risk(info: dict[str, Any]) -> str | None:
    """Why Redis may evict sessions or rate-limit counters, or None when it will not.

    ``info`` is ``INFO memory``. With no ``maxmemory`` nothing is evicted; with a limit, any
    policy but ``noeviction`` may drop sessions and limits (``volatile-*`` too: they carry
    TTLs), which logs users out and resets limits.
    """
    policy = str(info.get("maxmemory_policy", "noeviction"))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if maxmemory == 0 or policy == "noeviction":
        return None
    return (
        f"maxmemory-policy {policy} with maxmemory {maxmemory} bytes may evict sessions "
        "and rate limits; use noeviction or a separate Redis for the cache"
    )


async def area_pings(backend: RedisBackend) -> list[CheckResult]:
    """One response time per logical DB (each must answer), or one for a cluster."""
    from nexus_store.redis.client import AREAS

    areas = AREAS[:1] if backend.settings.cluster else AREAS

    async def ping(area: Area) -> CheckResult:
        where = f"{area} ({backend.location(area)})"
        try:
            seconds = await backend.ping(area)
        except Exception as exc:
            return CheckResult("datastore", "fail", None, "ms", describe_failure(exc), where)
        return CheckResult("datastore", "pass", ms(seconds), "ms", component_id=where)

    return list(await asyncio.gather(*(ping(area) for area in areas)))


async def cluster_state(backend: RedisBackend) -> CheckResult:
    """``cluster_state`` and slot coverage of a Redis Cluster."""
    with backend.unavailable():
        cluster: Any = backend.client("sessions")  # a RedisCluster in cluster mode
        info = await cluster.cluster_info()
    state = str(info.get("cluster_state", "unknown"))
    assigned = int(info.get("cluster_slots_assigned", 0))
    failing = int(info.get("cluster_slots_fail", 0)) + int(info.get("cluster_slots_pfail", 0))
    status: Status = "pass" if state == "ok" and assigned == 16384 and failing == 0 else "fail"
    return CheckResult(
        "datastore",
        status,
        state,
        "state",
        output=(
            f"{assigned}/16384 slots assigned, {failing} failing, "
            f"{info.get('cluster_known_nodes', '?')} nodes"
        ),
    )


async def server_info(backend: RedisBackend, section: str) -> list[tuple[str | None, Any]]:
    """``INFO section`` of the server, or of every primary of a cluster (each has its own
    memory limit and policy), as ``(node or None, info)`` pairs."""
    client: Any = backend.client("sessions")
    with backend.unavailable():
        if not backend.settings.cluster:
            return [(None, await client.info(section))]
        await client.initialize()
        nodes = client.get_primaries()
        infos = await asyncio.gather(*(client.info(section, target_nodes=n) for n in nodes))
    return [(node.name, info) for node, info in zip(nodes, infos, strict=True)]


def _memory_result(node: str | None, info: dict[str, Any]) -> CheckResult:
    used = int(info.get("used_memory", 0))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    problems = []
    if risk := eviction_risk(info):
        problems.append(risk)
    if maxmemory and used >= HIGH_USAGE * maxmemory:
        problems.append(f"{used} of {maxmemory} bytes used")
    limit = f"of {maxmemory}" if maxmemory else "(no maxmemory)"
    policy = info.get("maxmemory_policy", "?")
    output = "; ".join(problems) or f"{used} bytes {limit}, policy {policy}"
    status: Status = "warn" if problems else "pass"
    return CheckResult("datastore", status, used, "bytes", output, node)


def redis_checks(target: HealthTarget) -> list[Check]:
    """The Redis checks, none when Redis is not configured."""
    if "redis" not in target.backends.configured():
        return []
    prepare(target, "redis")

    async def response_time() -> list[CheckResult]:
        return await area_pings(target.backends.redis)

    async def memory() -> list[CheckResult]:
        return [
            _memory_result(node, info)
            for node, info in await server_info(target.backends.redis, "memory")
        ]

    async def connections() -> list[CheckResult]:
        results = []
        for node, info in await server_info(target.backends.redis, "clients"):
            clients = int(info.get("connected_clients", 0))
            maxclients = int(info.get("maxclients", 0) or 0)
            high = bool(maxclients) and clients >= HIGH_USAGE * maxclients
            output = f"{clients} of {maxclients or '?'} server connections"
            status: Status = "warn" if high else "pass"
            results.append(CheckResult("datastore", status, clients, "clients", output, node))
        return results

    async def cluster() -> list[CheckResult]:
        return [await cluster_state(target.backends.redis)]

    checks = [
        Check("redis:responseTime", "datastore", response_time),
        version_check(target, "redis"),
        Check("redis:memory", "datastore", memory),
        Check("redis:connections", "datastore", connections),
    ]
    if target.settings.redis.cluster:
        checks.append(Check("redis:cluster", "datastore", cluster))
    return checks
