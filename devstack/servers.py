"""Finding or starting the real servers the tests and the benchmarks talk to.

Order for each backend: a URL from the environment, a testcontainers container when a
Docker engine answers, then the machine's own services (started when down). MongoDB falls
back to the nx-27017 wire-protocol substitute, started on a free port and stopped by PID.

Also here: private server processes a test may stop and restart (redis-server, nx-27017, a
PostgreSQL primary with a streaming replica, a Redis Cluster), ports that refuse or never
answer, and scratch data (databases, key namespaces) removed after use.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import psycopg
from pymongo import MongoClient

import redis

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379"
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def free_port(highest: int = 65535) -> int:
    """A free loopback port no higher than ``highest``."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port <= highest:
            return port
    raise RuntimeError(f"no free loopback port at or below {highest}")


_RESERVED: list[socket.socket] = []


def closed_port() -> int:
    """A loopback port that refuses connections for the rest of the test run.

    The socket stays bound without listening, so no server started later (by this run or a
    concurrent one) can take the port: a fault-injection URL keeps meaning "nothing there".
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _RESERVED.append(sock)
    return int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that completes TCP handshakes (listen backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield int(listener.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {seconds}s")


def docker_available() -> bool:
    if os.environ.get("NEXUS_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server with rights to create databases."""
    if url := os.environ.get("NEXUS_POSTGRES_URL"):
        yield url
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        if not port_open("127.0.0.1", 5432):
            subprocess.run(POSTGRES_START, shell=True, check=True)
            wait_for_port("127.0.0.1", 5432)
        yield LOCAL_POSTGRES


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    if url := os.environ.get("NEXUS_REDIS_URL"):
        yield url
    elif docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}"
    else:
        if not port_open("127.0.0.1", 6379):
            subprocess.run(REDIS_START, shell=True, check=True)
            wait_for_port("127.0.0.1", 6379)
        yield LOCAL_REDIS


@contextlib.contextmanager
def mongo_server() -> Iterator[tuple[str, bool]]:
    """(URL, is_real_mongodb)."""
    if url := os.environ.get("NEXUS_MONGO_URL"):
        yield url, True
    elif docker_available():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as container:
            yield container.get_connection_url(), True
    else:
        with nx_mongo() as url:
            yield url, False


@contextlib.contextmanager
def nx_mongo() -> Iterator[str]:
    """The pinned nx-27017 substitute on a free port, stopped by its PID afterwards."""
    server = NxProcess(in_memory=True).start()
    try:
        yield server.url
    finally:
        server.cleanup()


class ServerProcess:
    """A private server process on a free loopback port, with its own temporary directory.

    Tests may stop and restart it (fault injection); ``cleanup`` stops it and removes the
    directory. Subclasses give the command line and the URL scheme.
    """

    scheme = ""
    prefix = "nexus-server-"

    def __init__(self, *, highest_port: int = 65535) -> None:
        self.port = free_port(highest_port)
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NxProcess(ServerProcess):
    """nx-27017, in memory or on a file database (data then survives a stop and restart)."""

    scheme = "mongodb"
    prefix = "nexus-nx-"

    def __init__(self, *, in_memory: bool = False) -> None:
        super().__init__()
        self.in_memory = in_memory

    def command(self) -> list[str]:
        executable = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
        database = "memory" if self.in_memory else str(self.dir / "data.db")
        return [
            executable,
            "--db",
            database,
            "--host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--pid-file",
            str(self.dir / "nx.pid"),
            "--log-file",
            str(self.dir / "nx.log"),
        ]


class RedisProcess(ServerProcess):
    """A private redis-server, for fault injection and clusters."""

    scheme = "redis"
    prefix = "nexus-redis-"

    def __init__(self, *extra: str, highest_port: int = 65535) -> None:
        super().__init__(highest_port=highest_port)
        self.extra = extra

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            *self.extra,
        ]


def create_cluster(ports: list[int], seconds: float = 30.0) -> None:
    """Join ``ports`` into a cluster of masters and wait until every slot is served."""
    addresses = [f"127.0.0.1:{port}" for port in ports]
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=seconds,
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        info = subprocess.run(
            ["redis-cli", "-p", str(ports[0]), "cluster", "info"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if "cluster_state:ok" in info:
            return
        time.sleep(0.2)
    raise RuntimeError("Redis Cluster did not reach cluster_state:ok")


@contextlib.contextmanager
def scratch_postgres_database(server_url: str, name: str) -> Iterator[str]:
    """The libpq URL of a new, empty database ``name`` on ``server_url``'s server, dropped
    (with its open connections) afterwards."""
    admin = server_url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_mongo_databases(url: str, names: list[str]) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        for name in names:
            client.drop_database(name)
    finally:
        client.close()


@contextlib.contextmanager
def scratch_mongo_database(url: str, name: str) -> Iterator[str]:
    """``name``, a MongoDB database dropped afterwards."""
    try:
        yield name
    finally:
        drop_mongo_databases(url, [name])


@contextlib.contextmanager
def scratch_redis_namespace(url: str, namespace: str) -> Iterator[str]:
    """``namespace``, a key prefix whose keys are deleted from DBs 0-15 afterwards."""
    try:
        yield namespace
    finally:
        for db in range(16):
            client = redis.Redis.from_url(url, db=db)
            try:
                keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start : start + 500])
            finally:
                client.close()


def postgres_bindir() -> Path | None:
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


def _run_as_postgres(*args: str) -> None:
    as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_server_user, *args], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def postgres_primary_with_replica(bin_path: Path) -> Iterator[tuple[str, str]]:
    """(primary URL, streaming replica URL), both database ``postgres`` on 127.0.0.1.

    Both run from the server binaries (``initdb``, ``pg_basebackup``, ``pg_ctl``) in a
    temporary directory, as the ``postgres`` OS user when run as root, and are stopped by
    their data directories afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="nexus-pg-replica-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    primary, replica = root / "primary", root / "replica"
    primary_port, replica_port = free_port(), free_port()
    started: list[Path] = []

    def start(data: Path, port: int) -> None:
        _run_as_postgres(
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
        _run_as_postgres(
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
        _run_as_postgres(
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
        wait_for_port("127.0.0.1", replica_port)
        yield (
            f"postgresql://postgres@127.0.0.1:{primary_port}/postgres",
            f"postgresql://postgres@127.0.0.1:{replica_port}/postgres",
        )
    finally:
        for data in reversed(started):
            with contextlib.suppress(subprocess.SubprocessError):
                _run_as_postgres(
                    str(bin_path / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"
                )
        shutil.rmtree(root, ignore_errors=True)


class UvicornProcess(ServerProcess):
    """An ASGI app served by uvicorn (``app`` as ``module:attribute`` found in ``app_dir``),
    with ``workers`` processes and ``env`` added to this process's environment; its output
    goes to ``uvicorn.log`` in the server's directory."""

    scheme = "http"
    prefix = "nexus-uvicorn-"

    def __init__(self, app: str, *, app_dir: Path, env: dict[str, str], workers: int = 1) -> None:
        super().__init__()
        self.app, self.app_dir, self.env, self.workers = app, app_dir, env, workers

    @property
    def log(self) -> str:
        path = self.dir / "uvicorn.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", self.app,
            "--app-dir", str(self.app_dir),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--log-level", "warning",
        ]  # fmt: skip

    def start(self) -> Self:
        with (self.dir / "uvicorn.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env={**os.environ, **self.env}, stdout=log, stderr=log
            )
        wait_for_port("127.0.0.1", self.port)
        return self
