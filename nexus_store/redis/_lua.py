"""Lua scripts: one loader for the ``.lua`` files, one runner that sends them.

    SESSION_GET = load_lua("session_get")
    lua = LuaRunner(backends.redis, "sessions")
    row = await lua.run(SESSION_GET, [session_key], ["1"])

:func:`load_lua` reads ``<name>.lua`` files shipped next to the code (joined in order when
there are several) into a :class:`LuaScript`: source and SHA-1. A runner sends EVALSHA; after
NOSCRIPT (a new, restarted or flushed server) it loads the script with SCRIPT LOAD and sends
it once more. :class:`LuaRunner` runs scripts on one area's asyncio client,
:class:`SyncLuaRunner` on its blocking client, by the same rules. A redis-py failure leaves a
runner as the SDK's error (:meth:`RedisBackend.translate`, the original chained): this is
where script errors are wrapped, for every script of the Redis layer.

On a standalone server the command is sent with redis-py's connection API (borrow from the
area's pool, send, read, give back), which skips the client's per-command machinery: retry
closures, OpenTelemetry hooks and command dispatch, 7-8 us of a 60 us rate-limit check.
redis-py drops a connection whose reply was not read, whatever the error; a connection that
broke or timed out hands the command to the client, whose retry policy (``redis.retries``)
applies as for any command. A cluster client routes the command itself.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Protocol

import redis.asyncio
import redis.asyncio.connection
import redis.exceptions

import redis

if TYPE_CHECKING:
    from nexus_store.redis.client import RedisBackend
    from nexus_store.redis.names import Area

__all__ = ["LuaRunner", "LuaScript", "SyncLuaRunner", "load_lua"]

# What the client's retry policy (``redis.retries``) covers: a connection that broke or timed
# out after it was handed over (redis-py has already dropped it).
_RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
Arg = str | int | float | bytes


# The parts of redis-py the runners use whose signatures redis-py leaves unannotated, as
# the runners call them (a client, pool or connection matches these structurally).
class _AsyncCommands(Protocol):
    async def execute_command(self, *args: Arg) -> Any: ...


class _AsyncPool(Protocol):
    async def get_connection(self) -> redis.asyncio.connection.AbstractConnection: ...

    async def release(self, connection: redis.asyncio.connection.AbstractConnection) -> None: ...


class _Commands(Protocol):
    def execute_command(self, *args: Arg) -> Any: ...


class _Sender(Protocol):
    def send_command(self, *args: Arg) -> None: ...


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's ``source`` and ``sha`` (its SHA-1, what EVALSHA sends)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"


@functools.cache
def load_lua(*names: str, package: str = "nexus_store.redis") -> LuaScript:
    """The script made of ``<name>.lua`` of ``package`` for each of ``names``, in order."""
    here = files(package)
    source = "\n".join(here.joinpath(f"{name}.lua").read_text("utf-8") for name in names)
    return LuaScript(names[0], source)


class LuaRunner:
    """Runs scripts on the asyncio client of one area (created on first use)."""

    def __init__(self, backend: RedisBackend, area: Area) -> None:
        self._backend = backend
        self._area = area
        self._client: redis.asyncio.Redis | None = None
        self._pool: _AsyncPool | None = None  # None on a cluster

    @property
    def client(self) -> redis.asyncio.Redis:
        """The area's asyncio client, for the commands of the caller that are not scripts."""
        return self._client or self._connect()

    @property
    def _commands(self) -> _AsyncCommands:
        return self.client

    def _connect(self) -> redis.asyncio.Redis:
        client = self._backend.client(self._area)
        if isinstance(client, redis.asyncio.Redis):
            self._pool = client.connection_pool
        self._client = client
        return client

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The reply of ``script`` run with ``keys`` and ``args``."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                pool = self._pool
                if pool is not None:  # the fast path, inline: this is every script's hot path
                    connection = await pool.get_connection()
                    try:
                        await connection.send_command(*command)
                        return await connection.read_response()
                    except _RETRYABLE:
                        pass  # sent again below, under the client's retry policy
                    finally:
                        await pool.release(connection)
                return await self._commands.execute_command(*command)
            except redis.exceptions.NoScriptError:
                await self.client.script_load(script.source)
                return await self._commands.execute_command(*command)
        except self._backend.errors as exc:
            raise self._backend.translate(exc) from exc


class SyncLuaRunner:
    """Runs scripts on the blocking client of one area (created on first use)."""

    def __init__(self, backend: RedisBackend, area: Area) -> None:
        self._backend = backend
        self._area = area
        self._client: redis.Redis | None = None
        self._pool: redis.ConnectionPool | None = None  # None on a cluster

    @property
    def client(self) -> redis.Redis:
        """The area's blocking client, for the commands of the caller that are not scripts."""
        return self._client or self._connect()

    @property
    def _commands(self) -> _Commands:
        return self.client

    def _connect(self) -> redis.Redis:
        client = self._backend.sync_client(self._area)
        if isinstance(client, redis.Redis):
            self._pool = client.connection_pool
        self._client = client
        return client

    def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The reply of ``script`` run with ``keys`` and ``args``."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                pool = self._pool
                if pool is not None:  # the fast path, inline: this is every script's hot path
                    connection = pool.get_connection()
                    try:
                        sender: _Sender = connection
                        sender.send_command(*command)
                        return connection.read_response()
                    except _RETRYABLE:
                        pass  # sent again below, under the client's retry policy
                    finally:
                        pool.release(connection)
                return self._commands.execute_command(*command)
            except redis.exceptions.NoScriptError:
                self.client.script_load(script.source)
                return self._commands.execute_command(*command)
        except self._backend.errors as exc:
            raise self._backend.translate(exc) from exc
