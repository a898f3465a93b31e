"""A committed restore, finished by whoever comes next: the restore itself, or any process
that opens the store (``NexusStore.connect``).

A restore stages everything first (a new PostgreSQL database, MongoDB collections and Redis
keys under temporary names), then commits in one atomic step that writes its *plan* (what is
staged where) into the target:

- with PostgreSQL in the restore: the rename transaction that makes the staged database the
  target (the plan was written into the staged database just before), so the target database
  either is the old one without a plan or the restored one with it;
- otherwise one MongoDB document (``nexus_restore`` collection), or one Redis key.

Finishing is driven by the plan alone (no archive needed) and every step is idempotent:
MongoDB collections are renamed (or, time series, copied) into place, Redis areas replaced
by the staged keys; the plan is removed last. Until then every ``connect`` finishes it first,
so an application that opens the store never sees some stores restored and others not.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from pymongo.errors import OperationFailure, PyMongoError

from nexus_store._errors import describe
from nexus_store.backup import _mongo, _postgres, _redis
from nexus_store.backup._pause import pause
from nexus_store.errors import BackendUnavailableError, BackupError
from nexus_store.log import get_logger

if TYPE_CHECKING:
    from nexus_store.connections import Backends
    from nexus_store.redis.names import Area

__all__ = ["commit", "committed", "finish"]

_log = get_logger("nexus_store.backup")
_MONGO_RECORD = "nexus_restore"
_UNAUTHORIZED = 13
_REDIS_RECORD_AREA: Area = "sessions"


class _Record(Protocol):
    async def read(self) -> dict[str, Any] | None: ...
    async def write(self, plan: dict[str, Any]) -> None: ...
    async def clear(self) -> None: ...
    async def close(self) -> None: ...


class _MongoRecord:
    def __init__(self, backends: Backends) -> None:
        self._records = backends.mongo.db[_MONGO_RECORD]

    async def read(self) -> dict[str, Any] | None:
        try:
            found = await self._records.find_one({"_id": "pending"})
        except OperationFailure as exc:
            if exc.code != _UNAUTHORIZED:
                raise
            # An application role without find on it; a restore (which needs a wider role
            # anyway) could write it: docs/backup.md says to grant it.
            _log.warning("restore_record_unreadable", collection=_MONGO_RECORD)
            return None
        return None if found is None else dict(orjson.loads(found["plan"]))

    async def write(self, plan: dict[str, Any]) -> None:
        document = {"_id": "pending", "plan": orjson.dumps(plan).decode()}
        await self._records.replace_one({"_id": "pending"}, document, upsert=True)

    async def clear(self) -> None:
        await self._records.delete_one({"_id": "pending"})

    async def close(self) -> None:
        return None


class _RedisRecord:
    def __init__(self, backends: Backends) -> None:
        self._backend = backends.redis
        self._client = backends.redis.client(_REDIS_RECORD_AREA)
        self._key = _redis.record_key(backends.redis)

    async def read(self) -> dict[str, Any] | None:
        with self._backend.unavailable():
            found = await self._client.get(self._key)
        return None if found is None else dict(orjson.loads(found))

    async def write(self, plan: dict[str, Any]) -> None:
        with self._backend.unavailable():
            await self._client.set(self._key, orjson.dumps(plan))

    async def clear(self) -> None:
        with self._backend.unavailable():
            await self._client.delete(self._key)

    async def close(self) -> None:
        return None


async def commit(backends: Backends, plan: dict[str, Any], staged_database: str | None) -> None:
    """The commit point of a restore: the database switch when PostgreSQL is restored, else
    writing the plan where :func:`_record` looks (PostgreSQL first: an application's role
    needs no MongoDB or Redis rights beyond its own for this)."""
    target = (
        _postgres.PostgresTarget.from_settings(backends.settings)
        if "postgres" in backends.configured()
        else None
    )
    if "postgres" in plan["stores"]:
        assert target is not None and staged_database is not None
        await _postgres.commit(target, staged_database, plan)
    elif target is not None and await _postgres.exists(target, target.database):
        await _postgres.write_record(target, plan)
    elif "mongo" in backends.configured():
        try:
            await _MongoRecord(backends).write(plan)
        except PyMongoError as exc:
            raise BackendUnavailableError("mongo", describe(exc)) from None
    else:
        await _RedisRecord(backends).write(plan)


async def _record(backends: Backends, usable: Collection[str]) -> _Record | None:
    """The pending plan's record, if there is one, looking only in ``usable`` stores: the
    target PostgreSQL database when it exists, else MongoDB, else Redis (as :func:`commit`
    chose)."""
    if "postgres" in usable:
        target = _postgres.PostgresTarget.from_settings(backends.settings)
        if await _postgres.settled(backends.postgres, target.database):
            return None
        database_exists, found = await _postgres.PendingRecord.open(target)
        if database_exists:
            return found
    for candidate in (
        _MongoRecord(backends) if "mongo" in usable else None,
        _RedisRecord(backends) if "redis" in usable else None,
    ):
        if candidate is not None:
            return candidate if await candidate.read() is not None else None
    return None


async def committed(backends: Backends) -> bool:
    """Whether a committed restore is waiting (its staged copies must then stay)."""
    record = await _record(backends, backends.configured())
    if record is None:
        return False
    try:
        return await record.read() is not None
    finally:
        await record.close()


async def finish(
    backends: Backends, reachable: Collection[str] | None = None
) -> dict[str, Any] | None:
    """Finish the committed restore found in the stores, if any; returns its plan.

    ``reachable``: the backends to look in (default: every configured one). Raises
    BackupError when a store the plan needs is not configured or not reachable, and the
    backends' errors when one fails: the plan stays, and the next attempt starts over.
    """
    usable = list(backends.configured() if reachable is None else reachable)
    try:
        record = await _record(backends, usable)
        if record is None:
            return None
        try:
            plan = await record.read()
            if plan is None:  # finished by another process meanwhile
                return None
            _log.info("restore_finishing", restore=plan["id"], stores=plan["stores"])
            pause("committed")
            missing = [s for s in plan["stores"] if s not in usable]
            if missing:
                raise BackupError(
                    f"restore {plan['id']} is committed and needs {', '.join(missing)} to "
                    "finish, which is not configured or not reachable"
                )
            if "postgres" in plan["stores"]:
                await _postgres.drop_replaced(
                    _postgres.PostgresTarget.from_settings(backends.settings)
                )
            if "mongo" in plan:
                await _mongo.publish(backends.mongo, plan["mongo"])
            if "redis" in plan:
                areas = _redis.areas_from(plan["redis"]["areas"])
                if not plan["redis"].get("published"):
                    plan["redis"]["written"] = await _redis.publish(
                        backends.redis, plan["id"], areas
                    )
                    plan["redis"]["published"] = True
                    await record.write(plan)  # the staged keys may go now
                await _redis.discard_staged(backends.redis, areas, plan["id"])
            await record.clear()
            _log.info("restore_finished", restore=plan["id"])
            return plan
        finally:
            await record.close()
    except PyMongoError as exc:
        raise BackendUnavailableError("mongo", describe(exc)) from None
