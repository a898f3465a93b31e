"""Helpers shared by the rate-limit tests (settings builders, a worker for other processes)."""

from __future__ import annotations

from typing import Any

from nexus_store import NexusSettings

# Fail fast against a stopped server.
FAST_FAILURE = {
    "socket_timeout": 0.5,
    "connect_timeout": 0.5,
    "pool_timeout": 0.5,
    "retries": 1,
    "retry_backoff_cap": 0.05,
}


def limiter_settings(
    url: str, namespace: str, *, redis: dict[str, Any] | None = None, **ratelimit: Any
) -> NexusSettings:
    """Settings with only Redis configured, plus ``redis`` and ``ratelimit`` overrides."""
    return NexusSettings.load(
        redis={"url": url, "namespace": namespace, **(redis or {})},
        ratelimit=ratelimit,
        log={"level": "warning", "format": "console"},
    )
