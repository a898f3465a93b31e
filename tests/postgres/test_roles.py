"""postgres/init/*.sql on a private cluster: the app role reads and writes rows, no DDL."""

from __future__ import annotations

import psycopg
import pytest

from nexus_store import NexusSettings
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import User
from nexus_store.postgres.repository import EntityRepository
from tests.postgres._roles import initialised_database, role_url
from tests.support import user_values

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def roles_database(private_cluster: tuple[str, str]) -> str:
    """A database on the private cluster initialised by postgres/init/*.sql."""
    return initialised_database(private_cluster, "nexus_roles")


def _url(server: str, role: str) -> str:
    return role_url(server, "nexus_roles", role)


async def test_roles_separate_migrations_from_the_app(roles_database: str) -> None:
    migrator = _url(roles_database, "nexus_migrator")
    app = _url(roles_database, "nexus_app")
    readonly = _url(roles_database, "nexus_readonly")

    result = await migrate.upgrade(NexusSettings.load(postgres={"url": migrator}))
    assert result.after == [revision.revision for revision in migrate.history() if revision.is_head]

    backend = PostgresBackend(NexusSettings.load(postgres={"url": app}).postgres)
    try:
        repo = EntityRepository(backend)
        user = await repo.create(User, **user_values())
        assert (await repo.get(User, user.id)).id == user.id
        await repo.delete(User, user.id, soft=False)
    finally:
        await backend.close()

    with psycopg.connect(app, autocommit=True) as conn:
        for ddl in (
            "CREATE TABLE intruder (x int)",
            "DROP TABLE users",
            "ALTER TABLE users ADD COLUMN x int",
            "TRUNCATE users",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(ddl)
    with psycopg.connect(readonly, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO roles (name) VALUES ('x')")
