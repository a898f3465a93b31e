"""postgres/init/*.sql on a private cluster: the app role reads and writes rows, no DDL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from devstack import servers
from nexus_store import NexusSettings
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import User
from nexus_store.postgres.repository import EntityRepository
from tests.support import REPO_ROOT, user_values

pytestmark = pytest.mark.slow

INIT = REPO_ROOT / "postgres" / "init"
PASSWORDS = {
    "NEXUS_MIGRATOR_PASSWORD": "migr-pw-1",
    "NEXUS_APP_PASSWORD": "app-pw-2",
    "NEXUS_READONLY_PASSWORD": "ro-pw-3",
}


@pytest.fixture(scope="module")
def roles_database(private_cluster: tuple[str, str]) -> Iterator[str]:
    """A database on the private cluster initialised by postgres/init/*.sql."""
    primary, _ = private_cluster
    server = primary.rsplit("/", 1)[0]
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("CREATE DATABASE nexus_roles")
    bin_path = servers.postgres_bindir()
    assert bin_path is not None
    for script in sorted(INIT.glob("*.sql")):
        subprocess.run(
            [
                str(bin_path / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                f"{server}/nexus_roles",
                "-f",
                str(script),
            ],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, **PASSWORDS},
        )
    yield server


def _url(server: str, role: str, password_env: str) -> str:
    return f"{server.replace('postgres@', f'{role}:{PASSWORDS[password_env]}@')}/nexus_roles"


async def test_roles_separate_migrations_from_the_app(roles_database: str) -> None:
    migrator = _url(roles_database, "nexus_migrator", "NEXUS_MIGRATOR_PASSWORD")
    app = _url(roles_database, "nexus_app", "NEXUS_APP_PASSWORD")
    readonly = _url(roles_database, "nexus_readonly", "NEXUS_READONLY_PASSWORD")

    result = await migrate.upgrade(NexusSettings.load(postgres={"url": migrator}))
    assert result.after == ["0001"]

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
