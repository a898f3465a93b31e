"""Alembic environment of nexus-store.

Normally run through ``nexus_store.postgres.migrate`` (``nexus-store init``), which passes an
open connection in ``config.attributes["connection"]`` while holding the advisory lock. Run
by the ``alembic`` command (top-level ``alembic.ini``) it reads NexusSettings from the
environment / NEXUS_CONFIG, connects with the async psycopg engine and takes the same lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from nexus_store.postgres.models import NEXUS_TABLES, Base

config = context.config


# Only nexus-store's own tables, on both sides of a comparison: applications that add models
# on the same Base keep their tables in their own migrations.
def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or name in NEXUS_TABLES


# The generated search columns (revision 0003) and their GIN indexes live in the database
# only: their expression carries the deploy's postgres.search_language, and leaving them off
# the models keeps every entity read from fetching a tsvector.
SEARCH_COLUMN = "search_vector"


def _include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
    if type_ == "column" and name == SEARCH_COLUMN:
        return False
    if type_ == "index" and name is not None and name.endswith(f"_{SEARCH_COLUMN}"):
        return False
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return table is None or table.name in NEXUS_TABLES


def _configure(**kwargs: Any) -> None:
    applied: list[Any] = config.attributes.setdefault("applied", [])
    context.configure(
        target_metadata=Base.metadata,
        include_name=_include_name,
        include_object=_include_object,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=True,
        on_version_apply=lambda *, step, **_: applied.append(step),
        **kwargs,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    from nexus_store.postgres.engine import sqlalchemy_url
    from nexus_store.settings import NexusSettings

    settings = NexusSettings.load()
    config.attributes.setdefault("settings", settings)
    url = (
        sqlalchemy_url(settings.postgres.url) if settings.postgres.url else "postgresql+psycopg://"
    )
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from nexus_store.postgres.migrate import run_locked
    from nexus_store.settings import NexusSettings

    settings = NexusSettings.load()
    config.attributes.setdefault("settings", settings)
    asyncio.run(run_locked(settings, _run_on))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
