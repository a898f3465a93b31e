"""The PostgreSQL migrations check reads revisions without Alembic; Alembic is the oracle."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.postgres import migrate
from nexus_store.postgres.health import heads_of, migration_heads


def _script(directory: Path, revision: str, down: object, annotated: bool = True) -> None:
    kind = ": str" if annotated else ""
    down_kind = ": str | tuple[str, ...] | None" if annotated else ""
    (directory / f"{revision}_step.py").write_text(
        textwrap.dedent(
            f'''\
            """step {revision}"""
            revision{kind} = {revision!r}
            down_revision{down_kind} = {down!r}
            branch_labels = None
            depends_on = None


            def upgrade() -> None:
                pass


            def downgrade() -> None:
                pass
            '''
        )
    )


def _alembic_heads(location: Path) -> list[str]:
    return sorted(ScriptDirectory(str(location)).get_heads())


def test_shipped_heads_are_alembics() -> None:
    alembic = sorted(revision.revision for revision in migrate.history() if revision.is_head)
    assert migration_heads() == alembic and alembic


def test_branches_and_merges_give_alembics_heads(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "__init__.py").write_text("")
    _script(versions, "a1", None)
    _script(versions, "b2", "a1", annotated=False)
    assert heads_of(tmp_path) == _alembic_heads(tmp_path) == ["b2"]

    _script(versions, "c3", "a1")  # a second branch from a1
    assert heads_of(tmp_path) == _alembic_heads(tmp_path) == ["b2", "c3"]

    _script(versions, "d4", ("b2", "c3"), annotated=False)  # merged
    assert heads_of(tmp_path) == _alembic_heads(tmp_path) == ["d4"]


@pytest.fixture
def scratch_stack(stack: Stack) -> Iterator[Stack]:
    name = f"nexus_health_{uuid.uuid4().hex[:10]}"
    with servers.scratch_postgres_database(stack.postgres_url, name) as url:
        yield stack.only("postgres").merged(postgres={"url": url})


def _alembic_current(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return sorted(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


async def _migrations_check(stack: Stack) -> dict[str, object]:
    async with NexusStore(stack.settings()) as store:
        result: dict[str, object] = (await store.health()).to_dict()["checks"][
            "postgres:migrations"
        ][0]
    return result


async def test_current_revision_is_read_as_alembic_reads_it(scratch_stack: Stack) -> None:
    settings = scratch_stack.settings()
    empty = await _migrations_check(scratch_stack)
    assert empty["status"] == "fail" and "nexus-store init" in str(empty["output"])
    assert _alembic_current(scratch_stack.postgres_url) == []

    await migrate.upgrade(settings)
    at_head = await _migrations_check(scratch_stack)
    current = _alembic_current(scratch_stack.postgres_url)
    assert at_head["status"] == "pass" and "output" not in at_head
    assert at_head["observedValue"] == ", ".join(current) == ", ".join(migration_heads())

    # A revision this release does not ship (a newer release migrated, or a stray stamp).
    with psycopg.connect(scratch_stack.postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'zz99'")
    unknown = await _migrations_check(scratch_stack)
    assert _alembic_current(scratch_stack.postgres_url) == ["zz99"]
    assert unknown["status"] == "warn" and unknown["observedValue"] == "zz99"
