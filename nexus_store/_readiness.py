"""The built-in readiness checks: one list for ``store.health()`` and the exec probe
(``nexus_store.cli._probe``), so that the two reports have the same keys."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nexus_store.health import Checks
    from nexus_store.postgres.health import PostgresSource

__all__ = ["readiness_checks"]


def readiness_checks(postgres: PostgresSource | None = None) -> tuple[Checks, ...]:
    """The builders of the built-in readiness checks; ``postgres`` reads PostgreSQL instead
    of the store's backend (the probe's ``DirectPostgres``). Each backend's checks live with
    the backend and load its driver: they are imported here, on the first health check."""
    from nexus_store.mongo.health import event_writer_checks, mongo_checks
    from nexus_store.postgres.health import postgres_checks
    from nexus_store.redis.health import redis_checks

    postgres_builder = (
        postgres_checks
        if postgres is None
        else functools.partial(postgres_checks, backend=postgres)
    )
    return (postgres_builder, mongo_checks, redis_checks, event_writer_checks)
