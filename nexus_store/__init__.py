"""nexus-store: one async storage SDK over PostgreSQL, MongoDB and Redis.

    from nexus_store import NexusStore

    async with NexusStore.from_env() as store:
        await store.events.track("page_view", user_id="u1", properties={"path": "/"})

Importing this package imports no database driver; each backend loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nexus_store._version import __version__ as __version__
from nexus_store.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    NexusStoreError,
    NotFoundError,
    QueueError,
    RateLimitExceeded,
    StoreClosedError,
    TamperDetected,
    ValidationError,
)

if TYPE_CHECKING:
    from nexus_store.mongo.audit.model import AuditEntry, AuditRecord
    from nexus_store.mongo.events.model import Event
    from nexus_store.postgres.models import Base
    from nexus_store.redis.cache import cached
    from nexus_store.redis.ratelimit.decorator import rate_limit
    from nexus_store.redis.sessions import NewSession
    from nexus_store.settings import NexusSettings
    from nexus_store.store import NexusStore


__all__ = [
    "AuditEntry",
    "AuditRecord",
    "BackendUnavailableError",
    "Base",
    "ConfigurationError",
    "ConflictError",
    "Event",
    "IntegrityError",
    "NewSession",
    "NexusSettings",
    "NexusStore",
    "NexusStoreError",
    "NotFoundError",
    "QueueError",
    "RateLimitExceeded",
    "StoreClosedError",
    "TamperDetected",
    "ValidationError",
    "cached",
    "rate_limit",
]

_LAZY = {
    "NexusStore": "nexus_store.store",
    "NexusSettings": "nexus_store.settings",
    "Base": "nexus_store.postgres.models",
    "Event": "nexus_store.mongo.events.model",
    "AuditRecord": "nexus_store.mongo.audit.model",
    "AuditEntry": "nexus_store.mongo.audit.model",
    "NewSession": "nexus_store.redis.sessions",
    "cached": "nexus_store.redis.cache",
    "rate_limit": "nexus_store.redis.ratelimit.decorator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nexus_store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
