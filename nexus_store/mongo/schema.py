"""MongoDB collections, validators, indexes and the audit role, declared once, in code.

``nexus-store init`` calls :func:`ensure_schema`; ``nexus-store health`` calls
:func:`inspect_schema`.

    changes = await ensure_schema(store.backends.mongo, store.settings, dry_run=True)
    for change in changes:
        print(change.collection, change.action, change.detail)

:func:`ensure_schema` is idempotent: it creates what is missing and reconciles what drifted
without dropping data. A changed ``events.retention_days`` becomes a ``collMod`` of the TTL
index (never a drop and rebuild); ``audit.retention_days = None`` drops the audit TTL index
so nothing expires. An index whose partial filter changed is dropped and created again, for
the audit log under its sequencer lease (no append runs in between), since ``collMod``
cannot change a partial filter. Where the server manages roles, it creates (or updates) a role
that may only ``find`` and ``insert`` in the audit collections (and update the lease).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pymongo.errors import OperationFailure

from nexus_store._errors import describe
from nexus_store.errors import ConfigurationError
from nexus_store.log import get_logger
from nexus_store.mongo._layout import (
    AUDIT_ENTRY_FIELDS,
    EVENT_ID_MAX_LENGTH,
    EVENT_NAME_MAX_LENGTH,
    checkpoint_collection,
    lease_collection,
)
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from nexus_store.mongo.client import MongoBackend
    from nexus_store.settings import NexusSettings

__all__ = [
    "CollectionSpec",
    "IndexSpec",
    "SchemaChange",
    "SchemaProblem",
    "audit_role_privileges",
    "check_time_series_support",
    "collection_specs",
    "ensure_schema",
    "inspect_schema",
]

_log = get_logger("nexus_store.mongo.schema")
_DAY = 86_400
_UNAUTHORIZED = 13
_UNSUPPORTED = (59, _UNAUTHORIZED, 115)  # CommandNotFound, Unauthorized, CommandNotSupported
_NOT_AUTHORIZED_DETAIL = (
    "this user may not run {command}: {what} not checked (grant {command} as "
    "mongo/init/01-roles.js does)"
)
# Deleting from a time-series collection by a field that is not its metaField (erasure by
# user_id) needs MongoDB 7.0.
_TIME_SERIES_ERASURE_VERSION = (7, 0)
# The audit role's actions on each audit collection: read, append, and list the indexes for
# the health report. Never update or remove.
_AUDIT_ACTIONS = ("find", "insert", "listIndexes")
_REBUILD_LEASE_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """One change :func:`ensure_schema` made (or, with ``dry_run``, would make)."""

    collection: str
    action: str  # create_collection, update_validator, create_index, update_ttl, ...
    detail: str
    command: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """A difference between the declared schema and the server, found by inspection."""

    collection: str
    problem: str  # missing_collection, missing_index, ttl_mismatch, index_options, ...
    detail: str


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index, identified by its key fields (all ascending)."""

    keys: tuple[str, ...]
    unique: bool = False
    expire_after_seconds: int | None = None
    partial_filter: Mapping[str, Any] | None = None

    @property
    def name(self) -> str:
        suffix = "_ttl" if self.expire_after_seconds is not None else ""
        return "_".join(self.keys) + ("_unique" if self.unique else "") + suffix

    def document(self) -> dict[str, Any]:
        index: dict[str, Any] = {"key": dict.fromkeys(self.keys, 1), "name": self.name}
        if self.unique:
            index["unique"] = True
        if self.expire_after_seconds is not None:
            index["expireAfterSeconds"] = self.expire_after_seconds
        if self.partial_filter is not None:
            index["partialFilterExpression"] = dict(self.partial_filter)
        return index


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    name: str
    validator: Mapping[str, Any] | None  # None: the server allows none (time series)
    indexes: tuple[IndexSpec, ...]
    # keys of TTL indexes that must not exist (retention switched off)
    forbidden_ttl: tuple[tuple[str, ...], ...] = ()
    timeseries: Mapping[str, Any] | None = None
    expire_after_seconds: int | None = None  # collection-level, time-series only
    # the audit sequencer lease's collection: index rebuilds hold the lease
    lease: str | None = None


def _string(max_length: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"bsonType": "string"}
    if max_length is not None:
        spec["maxLength"] = max_length
    return spec


def _events_spec(settings: NexusSettings) -> CollectionSpec:
    events = settings.events
    ttl = events.retention_days * _DAY
    validator = {
        "$jsonSchema": {
            "bsonType": "object",
            "required": ["event_id", "name", "ts", "properties", "context"],
            "anyOf": [{"required": ["user_id"]}, {"required": ["anonymous_id"]}],
            "properties": {
                "event_id": _string(EVENT_ID_MAX_LENGTH),
                "name": {"bsonType": "string", "minLength": 1, "maxLength": EVENT_NAME_MAX_LENGTH},
                "user_id": _string(EVENT_ID_MAX_LENGTH),
                "anonymous_id": _string(EVENT_ID_MAX_LENGTH),
                "session_id": _string(EVENT_ID_MAX_LENGTH),
                "ts": {"bsonType": "date"},
                "properties": {"bsonType": "object"},
                "context": {"bsonType": "object"},
            },
        }
    }
    by_time = (
        IndexSpec(("name", "ts")),
        IndexSpec(("user_id", "ts")),
        IndexSpec(("session_id", "ts")),
    )
    if events.time_series:
        # Time-series collections take neither a unique index (event_id deduplication is
        # lost) nor a validator.
        return CollectionSpec(
            events.collection,
            None,
            (IndexSpec(("event_id",)), *by_time),
            timeseries={"timeField": "ts", "granularity": "seconds"},
            expire_after_seconds=ttl,
        )
    return CollectionSpec(
        events.collection,
        validator,
        (
            IndexSpec(("event_id",), unique=True),
            IndexSpec(("ts",), expire_after_seconds=ttl),
            *by_time,
        ),
    )


def _audit_specs(settings: NexusSettings) -> list[CollectionSpec]:
    audit = settings.audit
    entry_validator = {
        "$jsonSchema": {
            "bsonType": "object",
            "required": [name for name, field in AUDIT_ENTRY_FIELDS.items() if field.required],
            "properties": {name: field.schema for name, field in AUDIT_ENTRY_FIELDS.items()},
        }
    }
    ttl = IndexSpec(("expires_at",), expire_after_seconds=0)
    retention = (ttl,) if audit.retention_days is not None else ()
    entries = CollectionSpec(
        audit.collection,
        entry_validator,
        (
            IndexSpec(("seq",), unique=True),
            IndexSpec(("actor", "seq")),
            IndexSpec(("resource_type", "resource_id", "seq")),
            IndexSpec(("ts",)),
            IndexSpec(
                ("idempotency_key",),
                unique=True,
                # $exists, not $type: the planner uses a partial index only for queries
                # provably inside its filter, and an equality proves $exists, not $type
                partial_filter={"idempotency_key": {"$exists": True}},
            ),
            *retention,
        ),
        forbidden_ttl=() if retention else (ttl.keys,),
        lease=lease_collection(settings),
    )
    checkpoints = CollectionSpec(
        checkpoint_collection(settings),
        {
            "$jsonSchema": {
                "bsonType": "object",
                "required": ["seq", "hash", "ts", "signature"],
                # a checkpoint copies these from its entry and signs them
                "properties": {
                    **{
                        name: AUDIT_ENTRY_FIELDS[name].schema
                        for name in ("seq", "hash", "ts", "expires_at")
                    },
                    "signature": AUDIT_ENTRY_FIELDS["hash"].schema,
                    "frontier": AUDIT_ENTRY_FIELDS["tree"].schema,  # Merkle compact range
                },
            }
        },
        (IndexSpec(("seq",), unique=True),),
    )
    # Created here, not by the first append: on a server with authorization, an insert that
    # creates its collection needs createCollection, which the application's role lacks.
    lease = CollectionSpec(lease_collection(settings), None, ())
    return [entries, checkpoints, lease]


def collection_specs(settings: NexusSettings) -> list[CollectionSpec]:
    """Every MongoDB collection nexus-store uses, as configured."""
    return [_events_spec(settings), *_audit_specs(settings)]


def audit_role_privileges(settings: NexusSettings) -> list[dict[str, Any]]:
    """What the application needs on the audit collections, nothing else.

    ``find`` + ``insert`` (append-only: no update, no remove) and ``listIndexes`` on the
    entries and their checkpoints; ``find``, ``insert``, ``update`` and ``listIndexes`` on the
    sequencer lease (one document, no audit data); and ``listCollections`` on the database: the
    health report's schema checks read the collections' validators and indexes. The same grants
    are in ``mongo/init/01-roles.js``; ``tests/mongo/test_privileges.py`` derives them
    from the commands a full workload sends.
    """
    database = settings.mongo.database
    return [
        *(
            {"resource": {"db": database, "collection": name}, "actions": list(_AUDIT_ACTIONS)}
            for name in (settings.audit.collection, checkpoint_collection(settings))
        ),
        {
            "resource": {"db": database, "collection": lease_collection(settings)},
            "actions": ["find", "insert", "update", "listIndexes"],
        },
        {"resource": {"db": database, "collection": ""}, "actions": ["listCollections"]},
    ]


def check_time_series_support(settings: NexusSettings, server_version: str) -> None:
    """Refuse ``events.time_series`` on a server that cannot erase a user's events there.

    ``delete_user`` deletes by ``user_id``, which is not the time-series metaField; MongoDB
    allows that only from 7.0. A server that reports no version is given the benefit of the
    doubt (logged).
    """
    if not settings.events.time_series:
        return
    parts = server_version.split(".")[:2]
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        _log.warning("mongo_version_unknown", version=server_version, needed="7.0")
        return
    if (int(parts[0]), int(parts[1])) < _TIME_SERIES_ERASURE_VERSION:
        raise ConfigurationError(
            f"events.time_series needs MongoDB 7.0 or later (the server is {server_version}): "
            "erasing a user's events deletes by user_id, which a time-series collection allows "
            "only from 7.0; set events.time_series = false or upgrade the server",
            setting="events.time_series",
        )


# -- reading the server's state ------------------------------------------------------------


async def _collections(db: AsyncDatabase[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cursor = await db.list_collections()
    return {info["name"]: dict(info) async for info in cursor}


async def _indexes(
    db: AsyncDatabase[dict[str, Any]], name: str
) -> dict[tuple[str, ...], dict[str, Any]]:
    cursor = await db[name].list_indexes()
    return {tuple(info["key"]): dict(info) async for info in cursor}


def _same_options(spec: IndexSpec, found: Mapping[str, Any]) -> bool:
    partial = found.get("partialFilterExpression")
    return bool(found.get("unique", False)) == spec.unique and (
        spec.partial_filter is None or partial is None or dict(partial) == dict(spec.partial_filter)
    )


def _only_filter_differs(spec: IndexSpec, found: Mapping[str, Any]) -> bool:
    """Same uniqueness, another partial filter: a rebuild that loses no constraint."""
    return bool(found.get("unique", False)) == spec.unique and spec.partial_filter is not None


def _ttl_of(found: Mapping[str, Any]) -> int | None:
    value = found.get("expireAfterSeconds")
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class _IndexDrift:
    """How the server's index on ``index.keys`` differs from the declared ``index``."""

    # missing; options: unique/partial differ (needs a rebuild); ttl: expireAfterSeconds
    # differs; unwanted_ttl: a TTL index that retention switched off forbids
    kind: Literal["missing", "options", "ttl", "unwanted_ttl"]
    index: IndexSpec
    found: Mapping[str, Any]  # the server's index ({} when missing)


def _index_drift(
    spec: CollectionSpec, found: dict[tuple[str, ...], dict[str, Any]]
) -> list[_IndexDrift]:
    """Every index of ``spec`` that the server lacks or holds differently, in spec order."""
    drift = []
    for index in spec.indexes:
        present = found.get(index.keys)
        if present is None:
            drift.append(_IndexDrift("missing", index, {}))
        elif not _same_options(index, present):
            drift.append(_IndexDrift("options", index, present))
        elif _ttl_of(present) != index.expire_after_seconds:
            drift.append(_IndexDrift("ttl", index, present))
    for keys in spec.forbidden_ttl:
        present = found.get(keys)
        if present is not None and _ttl_of(present) is not None:
            drift.append(_IndexDrift("unwanted_ttl", IndexSpec(keys), present))
    return drift


# -- ensure ---------------------------------------------------------------------------------


async def ensure_schema(
    backend: MongoBackend,
    settings: NexusSettings,
    *,
    dry_run: bool = False,
    manage_roles: bool | None = None,
) -> list[SchemaChange]:
    """Create or reconcile every collection, validator, index and the audit role.

    Returns the changes made (or, with ``dry_run``, the changes it would make). With
    ``manage_roles=None`` the audit role is managed only where the server reports roles
    (``rolesInfo``); ``True`` forces it, ``False`` skips it.
    """
    changes: list[SchemaChange] = []
    if settings.events.time_series:
        check_time_series_support(settings, await backend.server_version())
    with operation(backend, "schema.ensure") as op, backend.unavailable():
        db = backend.db
        existing = await _collections(db)
        for spec in collection_specs(settings):
            changes += await _ensure_collection(db, spec, existing.get(spec.name), dry_run)
        if manage_roles is not False:
            changes += await _ensure_role(db, settings, dry_run, force=manage_roles is True)
        op.note(changes=len(changes))
    return changes


async def _run(
    db: AsyncDatabase[dict[str, Any]], change: SchemaChange, dry_run: bool
) -> SchemaChange:
    if not dry_run:
        await db.command(change.command)
        _log.info(
            "mongo_schema_change",
            collection=change.collection,
            action=change.action,
            detail=change.detail,
        )
    return change


async def _ensure_collection(
    db: AsyncDatabase[dict[str, Any]],
    spec: CollectionSpec,
    info: dict[str, Any] | None,
    dry_run: bool,
) -> list[SchemaChange]:
    found = {} if info is None else await _indexes(db, spec.name)
    planned = [*_collection_changes(spec, info), *_index_changes(spec, found)]
    if dry_run or spec.lease is None or not any(c.action == "drop_index" for c in planned):
        return [await _run(db, change, dry_run) for change in planned]
    from nexus_store.mongo.audit._sequencer import SequencerLease

    # Between the drop and the create no unique index guards idempotency keys: hold the
    # lease, which every appender waits for, over both.
    lease = SequencerLease(db[spec.lease], _REBUILD_LEASE_SECONDS)
    await lease.acquire()
    try:
        return [await _run(db, change, dry_run) for change in planned]
    finally:
        await lease.release()


def _collection_changes(spec: CollectionSpec, info: dict[str, Any] | None) -> list[SchemaChange]:
    validation: dict[str, Any] = {}
    if spec.validator is not None:
        validation = {
            "validator": dict(spec.validator),
            "validationLevel": "strict",
            "validationAction": "error",
        }
    if info is None:
        command: dict[str, Any] = {"create": spec.name}
        kind = "collection"
        if spec.timeseries is not None:
            command["timeseries"] = dict(spec.timeseries)
            command["expireAfterSeconds"] = spec.expire_after_seconds
            kind = "time-series collection"
        detail = f"{kind} with $jsonSchema validator" if validation else kind
        return [SchemaChange(spec.name, "create_collection", detail, {**command, **validation})]
    changes = []
    options = info.get("options", {})
    if validation and options.get("validator") != validation["validator"]:
        command = {"collMod": spec.name, **validation}
        changes.append(
            SchemaChange(spec.name, "update_validator", "set the $jsonSchema validator", command)
        )
    expire = spec.expire_after_seconds
    if spec.timeseries is not None and options.get("expireAfterSeconds") != expire:
        command = {"collMod": spec.name, "expireAfterSeconds": expire}
        changes.append(
            SchemaChange(spec.name, "update_ttl", f"expireAfterSeconds={expire}", command)
        )
    return changes


def _index_changes(
    spec: CollectionSpec, found: dict[tuple[str, ...], dict[str, Any]]
) -> list[SchemaChange]:
    changes = []
    missing = []
    drops = []
    command: dict[str, Any]
    for drift in _index_drift(spec, found):
        index, present = drift.index, drift.found
        if drift.kind == "missing":
            missing.append(index)
        elif drift.kind == "options" and _only_filter_differs(index, present):
            # collMod cannot change a partial filter: drop and create (under the lease)
            command = {"dropIndexes": spec.name, "index": present["name"]}
            detail = f"{present['name']}: partial filter -> {dict(index.partial_filter or {})}"
            changes.append(SchemaChange(spec.name, "drop_index", detail, command))
            missing.append(index)
        elif drift.kind == "options":
            # Changing uniqueness needs a rebuild; init never drops data-bearing indexes.
            _log.warning(
                "mongo_index_conflict",
                collection=spec.name,
                index=index.name,
                found=describe(RuntimeError(str(present))),
            )
        elif drift.kind == "ttl":
            command = {
                "collMod": spec.name,
                "index": {
                    "keyPattern": dict.fromkeys(index.keys, 1),
                    "expireAfterSeconds": index.expire_after_seconds,
                },
            }
            detail = (
                f"{index.name}: expireAfterSeconds {_ttl_of(present)} -> "
                f"{index.expire_after_seconds}"
            )
            changes.append(SchemaChange(spec.name, "update_ttl", detail, command))
        else:
            command = {"dropIndexes": spec.name, "index": present["name"]}
            detail = f"{present['name']} (retention is off)"
            drops.append(SchemaChange(spec.name, "drop_ttl_index", detail, command))
    if missing:
        command = {"createIndexes": spec.name, "indexes": [index.document() for index in missing]}
        names = ", ".join(index.name for index in missing)
        changes.append(SchemaChange(spec.name, "create_indexes", names, command))
    return changes + drops


async def _roles_info(db: AsyncDatabase[dict[str, Any]], role: str) -> list[dict[str, Any]] | None:
    """The role's description list, or None when the server does not report roles."""
    try:
        reply = await db.command(
            {"rolesInfo": {"role": role, "db": db.name}, "showPrivileges": True}
        )
    except OperationFailure as exc:
        if exc.code in _UNSUPPORTED:
            return None
        raise
    roles = reply.get("roles")
    return list(roles) if isinstance(roles, list) else None


def _privilege_set(privileges: list[dict[str, Any]]) -> set[tuple[str, str, frozenset[str]]]:
    return {
        (
            str(item["resource"].get("db")),
            str(item["resource"].get("collection")),
            frozenset(item["actions"]),
        )
        for item in privileges
    }


async def _ensure_role(
    db: AsyncDatabase[dict[str, Any]], settings: NexusSettings, dry_run: bool, *, force: bool
) -> list[SchemaChange]:
    role = settings.audit.role_name
    privileges = audit_role_privileges(settings)
    roles = await _roles_info(db, role)
    if roles is None and not force:
        _log.info(
            "mongo_roles_unsupported",
            role=role,
            detail="the server does not report roles; create the audit role by hand",
        )
        return []
    if roles:
        current = roles[0].get("privileges", [])
        if _privilege_set(current) == _privilege_set(privileges) and not roles[0].get("roles"):
            return []
        command: dict[str, Any] = {"updateRole": role, "privileges": privileges, "roles": []}
        action = "update_role"
    else:
        command = {"createRole": role, "privileges": privileges, "roles": []}
        action = "create_role"
    change = SchemaChange(
        settings.audit.collection, action, f"{role}: find+insert (and index listing) only", command
    )
    try:
        return [await _run(db, change, dry_run)]
    except OperationFailure as exc:
        if exc.code not in _UNSUPPORTED:
            raise
        _log.warning("mongo_role_not_created", role=role, error=describe(exc))
        return []


# -- inspect --------------------------------------------------------------------------------


async def inspect_schema(backend: MongoBackend, settings: NexusSettings) -> list[SchemaProblem]:
    """What differs between the declared schema and the server (empty when all is well).

    A user without the ``listCollections`` or ``listIndexes`` action (an application role
    older than ``mongo/init/01-roles.js``) still gets the collections checked, by name
    (``nameOnly`` + ``authorizedCollections`` needs no privilege), and a ``not_authorized``
    problem saying what went unchecked, instead of a failure.
    """
    problems: list[SchemaProblem] = []
    with backend.unavailable():
        db = backend.db
        try:
            existing = await _collections(db)
        except OperationFailure as exc:
            if exc.code != _UNAUTHORIZED:
                raise
            return await _inspect_names_only(db, settings)
        for spec in collection_specs(settings):
            info = existing.get(spec.name)
            if info is None:
                problems.append(
                    SchemaProblem(spec.name, "missing_collection", "run `nexus-store init`")
                )
                continue
            validator = info.get("options", {}).get("validator")
            if spec.validator is not None and validator != spec.validator:
                problems.append(
                    SchemaProblem(
                        spec.name,
                        "validator_mismatch",
                        "the server reports a different or no validator",
                    )
                )
            expire = info.get("options", {}).get("expireAfterSeconds")
            if spec.timeseries is not None and expire != spec.expire_after_seconds:
                problems.append(
                    SchemaProblem(
                        spec.name,
                        "ttl_mismatch",
                        f"expireAfterSeconds: server {expire}, "
                        f"settings {spec.expire_after_seconds}",
                    )
                )
            try:
                found = await _indexes(db, spec.name)
            except OperationFailure as exc:
                if exc.code != _UNAUTHORIZED:
                    raise
                detail = _NOT_AUTHORIZED_DETAIL.format(command="listIndexes", what="indexes")
                problems.append(SchemaProblem(spec.name, "not_authorized", detail))
                continue
            problems += _index_problems(spec, found)
    return problems


async def _inspect_names_only(
    db: AsyncDatabase[dict[str, Any]], settings: NexusSettings
) -> list[SchemaProblem]:
    names = set(await db.list_collection_names(authorizedCollections=True))
    detail = _NOT_AUTHORIZED_DETAIL.format(
        command="listCollections", what="validators, TTLs and indexes"
    )
    return [
        *(
            SchemaProblem(spec.name, "missing_collection", "run `nexus-store init`")
            for spec in collection_specs(settings)
            if spec.name not in names
        ),
        SchemaProblem(settings.mongo.database, "not_authorized", detail),
    ]


def _index_problems(
    spec: CollectionSpec, found: dict[tuple[str, ...], dict[str, Any]]
) -> list[SchemaProblem]:
    problems = []
    for drift in _index_drift(spec, found):
        index, present = drift.index, drift.found
        if drift.kind == "missing":
            problem, detail = "missing_index", index.name
        elif drift.kind == "options":
            problem, detail = "index_options", f"{index.name}: unique/partial options differ"
        elif drift.kind == "ttl":
            problem = "ttl_mismatch"
            detail = (
                f"{index.name}: server {_ttl_of(present)}s, settings {index.expire_after_seconds}s"
            )
        else:
            problem, detail = "ttl_mismatch", f"{present['name']} expires entries; retention is off"
        problems.append(SchemaProblem(spec.name, problem, detail))
    return problems
