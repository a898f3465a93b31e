"""A private PostgreSQL primary with a streaming replica on loopback ports, for tests.

Both run from the server binaries (``initdb``, ``pg_basebackup``, ``pg_ctl``) in a temporary
directory, as the ``postgres`` OS user when the tests run as root, and are stopped by their
data directories afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests import _servers


def bindir() -> Path | None:
    """The server binaries' directory, or None when a private cluster cannot be started."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")  # the server refuses to run as root
        except KeyError:
            return None
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_basebackup").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(*args: str) -> None:
    subprocess.run([*_as_server_user(), *args], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def primary_with_replica(bin_path: Path) -> Iterator[tuple[str, str]]:
    """Yield (primary URL, replica URL), both database ``postgres`` on 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="nexus-pg-replica-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    primary, replica = root / "primary", root / "replica"
    primary_port, replica_port = _servers.free_port(), _servers.free_port()
    started: list[Path] = []

    def start(data: Path, port: int) -> None:
        _run(
            str(bin_path / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / f"{data.name}.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=40 -c shared_buffers=16MB",
            "start",
        )
        started.append(data)

    try:
        _run(
            str(bin_path / "initdb"),
            "-D",
            str(primary),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        start(primary, primary_port)
        _run(
            str(bin_path / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary_port),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        start(replica, replica_port)
        _servers.wait_for_port("127.0.0.1", replica_port)
        yield (
            f"postgresql://postgres@127.0.0.1:{primary_port}/postgres",
            f"postgresql://postgres@127.0.0.1:{replica_port}/postgres",
        )
    finally:
        for data in reversed(started):
            with contextlib.suppress(subprocess.SubprocessError):
                _run(str(bin_path / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
