"""Databases on the private cluster initialised by postgres/init/*.sql, and their role URLs."""

from __future__ import annotations

import os
import subprocess

import psycopg

from devstack import servers
from tests.support import REPO_ROOT

INIT = REPO_ROOT / "postgres" / "init"
# Trust authentication on the private cluster: the passwords only make the roles LOGIN.
ROLE_PASSWORDS = {
    "NEXUS_MIGRATOR_PASSWORD": "migr-pw-1",
    "NEXUS_APP_PASSWORD": "app-pw-2",
    "NEXUS_READONLY_PASSWORD": "ro-pw-3",
}


def initialised_database(private_cluster: tuple[str, str], name: str) -> str:
    """Create database ``name`` on the private cluster and run postgres/init/*.sql in it (the
    roles are cluster-wide: a second database finds them made); returns the server URL."""
    primary, _ = private_cluster
    server = primary.rsplit("/", 1)[0]
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    bin_path = servers.postgres_bindir()
    assert bin_path is not None
    for script in sorted(INIT.glob("*.sql")):
        subprocess.run(
            [
                *(str(bin_path / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"),
                *("-d", f"{server}/{name}", "-f", str(script)),
            ],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, **ROLE_PASSWORDS},
        )
    return server


def role_url(server: str, database: str, role: str) -> str:
    """The URL of ``role`` (nexus_migrator, nexus_app, nexus_readonly) on ``database``."""
    password = ROLE_PASSWORDS[f"NEXUS_{role.removeprefix('nexus_').upper()}_PASSWORD"]
    return f"{server.replace('postgres@', f'{role}:{password}@')}/{database}"
