"""The conventions' connection attributes, read from the masked URLs of every shape."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nexus_store import NexusSettings
from nexus_store.telemetry._endpoint import endpoint_attributes
from tests.support import PASSWORD


def _backend(name: str, **section: Any) -> Any:
    settings = NexusSettings.load(None, **{name: section})
    return SimpleNamespace(name=name, settings=getattr(settings, name))


@pytest.mark.parametrize(
    ("name", "url", "target", "expected"),
    [
        (
            "postgres",
            f"postgresql://app:{PASSWORD}@db.internal/orders",
            "users",
            {
                "db.system.name": "postgresql",
                "db.namespace": "orders",
                "db.collection.name": "users",
                "server.address": "db.internal",
                "server.port": 5432,
            },
        ),
        (
            "mongo",
            f"mongodb://app:{PASSWORD}@m1:27018,m2:27019/?replicaSet=rs0",
            "events",
            {
                "db.system.name": "mongodb",
                "db.namespace": "nexus",
                "db.collection.name": "events",
                "server.address": "m1",
                "server.port": 27018,
            },
        ),
        (
            "mongo",
            f"mongodb+srv://app:{PASSWORD}@cluster0.example.net/",
            None,
            {
                "db.system.name": "mongodb",
                "db.namespace": "nexus",
                "server.address": "cluster0.example.net",
            },
        ),
        (
            "redis",
            f"redis://:{PASSWORD}@[::1]:6380/0",
            "queue",
            {
                "db.system.name": "redis",
                "db.namespace": "4",
                "server.address": "::1",
                "server.port": 6380,
            },
        ),
        (
            "redis",
            "unix:///run/redis.sock",
            "sessions",
            {"db.system.name": "redis", "db.namespace": "0", "server.address": "/run/redis.sock"},
        ),
    ],
)
def test_attributes_of_each_url_shape(
    name: str, url: str, target: str | None, expected: dict[str, Any]
) -> None:
    attributes = endpoint_attributes(_backend(name, url=url), target)
    assert attributes == expected
    assert PASSWORD not in repr(attributes)


def test_the_cache_areas_name_the_cache_server_and_a_cluster_no_database() -> None:
    split = _backend("redis", url="redis://main:6379", cache_url="redis://cache:6390")
    assert endpoint_attributes(split, "cache")["server.address"] == "cache"
    assert endpoint_attributes(split, "sessions")["server.address"] == "main"
    cluster = endpoint_attributes(_backend("redis", url="redis://node:7000", cluster=True), "cache")
    assert "db.namespace" not in cluster
