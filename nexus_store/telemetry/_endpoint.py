"""Where an operation runs, as the stable database semantic conventions name it.

Computed from a backend's settings, from the *masked* URL (the password never passes here),
once per (backend, target) and only while telemetry is on.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from nexus_store._secrets import SecretURL
from nexus_store.redis.names import CACHE_AREAS

__all__ = ["SYSTEM_NAMES", "endpoint_attributes"]

#: ``db.system.name`` of each backend.
SYSTEM_NAMES = {"postgres": "postgresql", "mongo": "mongodb", "redis": "redis"}
_DEFAULT_PORTS = {"postgres": 5432, "mongo": 27017, "redis": 6379}


def _server(backend: str, url: SecretURL | None) -> dict[str, str | int]:
    """``server.address`` and ``server.port`` of the first host in ``url``."""
    if url is None:
        return {}
    scheme, _, rest = url.masked.partition("://")
    if scheme == "unix":  # redis over a Unix socket: the path is the address
        return {"server.address": rest.partition("?")[0]}
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    host = netloc.split(",", 1)[0]  # MongoDB seed lists: the first seed
    if host.startswith("["):  # [IPv6]:port
        address, _, port_text = host[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        address, _, port_text = host.partition(":")
    found: dict[str, str | int] = {"server.address": address}
    if port_text.isdigit():
        found["server.port"] = int(port_text)
    elif scheme != "mongodb+srv":  # an SRV record names its own ports
        found["server.port"] = _DEFAULT_PORTS[backend]
    return found


def endpoint_attributes(backend: Any, target: str | None) -> dict[str, str | int]:
    """The conventions' attributes of ``backend`` for ``target``: a PostgreSQL table, a
    MongoDB collection or a Redis area (which names the logical database)."""
    name: str = backend.name
    settings = backend.settings
    attributes: dict[str, str | int] = {"db.system.name": SYSTEM_NAMES[name]}
    match name:
        case "postgres":
            url = settings.url
            database = urlsplit(url.masked).path.lstrip("/") if url is not None else ""
            if database:
                attributes["db.namespace"] = database
            if target is not None:
                attributes["db.collection.name"] = target
        case "mongo":
            url = settings.url
            attributes["db.namespace"] = settings.database
            if target is not None:
                attributes["db.collection.name"] = target
        case _:
            on_cache_server = settings.cache_url is not None and target in CACHE_AREAS
            url = settings.cache_url if on_cache_server else settings.url
            if target is not None and not settings.cluster:  # a cluster has database 0 only
                attributes["db.namespace"] = str(getattr(settings.databases, target))
    attributes.update(_server(name, url))
    return attributes
