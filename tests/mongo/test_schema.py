"""ensure_schema / inspect_schema: the exact commands real MongoDB needs, and idempotency."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import WriteError
from structlog.testing import capture_logs

from nexus_store.errors import ConfigurationError
from nexus_store.mongo._layout import (
    AUDIT_CHAIN_LINKS,
    AUDIT_ENTRY_FIELDS,
    AUDIT_LEFT_FIELD,
    AUDIT_TREE_FIELD,
)
from nexus_store.mongo.audit.chain import HASHED_FIELDS
from nexus_store.mongo.audit.model import AuditEntry
from nexus_store.mongo.schema import check_time_series_support, ensure_schema, inspect_schema
from tests.support import CommandRecorder

DAY = 86_400


def _indexes(recorder: CommandRecorder, collection: str) -> list[dict[str, Any]]:
    return [
        index
        for body in recorder.named("createIndexes")
        if body["createIndexes"] == collection
        for index in body["indexes"]
    ]


def test_audit_fields_are_listed_once_for_model_hash_and_validator() -> None:
    model = AuditEntry.model_fields
    assert {name: field.required for name, field in AUDIT_ENTRY_FIELDS.items()} == {
        name: model[name].is_required() for name in model
    }
    assert set(HASHED_FIELDS) == set(AUDIT_ENTRY_FIELDS) - {
        *AUDIT_CHAIN_LINKS,
        AUDIT_TREE_FIELD,
        AUDIT_LEFT_FIELD,
    }


async def test_first_run_creates_validated_collections_and_indexes(
    mongo_stack, open_backends, recorder: CommandRecorder
) -> None:
    settings = mongo_stack.settings(audit={"retention_days": 365})
    backends = await open_backends(settings, recorder)
    changes = await ensure_schema(backends.mongo, settings)
    events, audit = settings.events.collection, settings.audit.collection
    assert [(c.collection, c.action) for c in changes] == [
        (events, "create_collection"),
        (events, "create_indexes"),
        (audit, "create_collection"),
        (audit, "create_indexes"),
        (f"{audit}_checkpoints", "create_collection"),
        (f"{audit}_checkpoints", "create_indexes"),
        # the sequencer lease: init creates it, since the app's role may not create collections
        (f"{audit}_lease", "create_collection"),
    ]
    create = next(body for body in recorder.named("create") if body["create"] == events)
    assert create["validationLevel"] == "strict"
    assert create["validationAction"] == "error"
    schema = create["validator"]["$jsonSchema"]
    assert schema["required"] == ["event_id", "name", "ts", "properties", "context"]
    assert schema["anyOf"] == [{"required": ["user_id"]}, {"required": ["anonymous_id"]}]
    assert schema["properties"]["ts"] == {"bsonType": "date"}
    assert _indexes(recorder, events) == [
        {"key": {"event_id": 1}, "name": "event_id_unique", "unique": True},
        {"key": {"ts": 1}, "name": "ts_ttl", "expireAfterSeconds": 90 * DAY},
        {"key": {"name": 1, "ts": 1}, "name": "name_ts"},
        {"key": {"user_id": 1, "ts": 1}, "name": "user_id_ts"},
        {"key": {"session_id": 1, "ts": 1}, "name": "session_id_ts"},
    ]
    audit_indexes = _indexes(recorder, audit)
    assert {"key": {"seq": 1}, "name": "seq_unique", "unique": True} in audit_indexes
    assert {
        "key": {"expires_at": 1},
        "name": "expires_at_ttl",
        "expireAfterSeconds": 0,
    } in audit_indexes
    assert {
        "key": {"idempotency_key": 1},
        "name": "idempotency_key_unique",
        "unique": True,
        "partialFilterExpression": {"idempotency_key": {"$exists": True}},
    } in audit_indexes
    # a second run creates nothing (validators are re-sent only where the server hides them)
    recorder.clear()
    again = await ensure_schema(backends.mongo, settings)
    assert not recorder.named("create") and not recorder.named("createIndexes")
    assert {c.action for c in again} <= {"update_validator"}


async def test_dry_run_changes_nothing(mongo_stack, open_backends, recorder) -> None:
    settings = mongo_stack.settings()
    backends = await open_backends(settings, recorder)
    planned = await ensure_schema(backends.mongo, settings, dry_run=True)
    assert {c.action for c in planned} == {"create_collection", "create_indexes"}
    assert not recorder.named("create") and not recorder.named("createIndexes")
    names = await backends.mongo.db.list_collection_names()
    assert settings.events.collection not in names
    applied = await ensure_schema(backends.mongo, settings)
    assert applied == planned


async def test_changed_ttl_becomes_collmod_not_a_rebuild(
    mongo_stack, open_backends, recorder
) -> None:
    backends = await open_backends(mongo_stack.settings(), recorder)
    await ensure_schema(backends.mongo, mongo_stack.settings())
    recorder.clear()
    shorter = mongo_stack.settings(events={"retention_days": 30})
    problems = await inspect_schema(backends.mongo, shorter)
    assert [
        p.problem
        for p in problems
        if p.collection == shorter.events.collection and p.problem != "validator_mismatch"
    ] == ["ttl_mismatch"]
    changes = await ensure_schema(backends.mongo, shorter)
    assert [c.detail for c in changes if c.action == "update_ttl"] == [
        f"ts_ttl: expireAfterSeconds {90 * DAY} -> {30 * DAY}"
    ]
    assert {
        "collMod": shorter.events.collection,
        "index": {"keyPattern": {"ts": 1}, "expireAfterSeconds": 30 * DAY},
    } in recorder.named("collMod")
    assert not recorder.named("dropIndexes") and not recorder.named("createIndexes")


async def test_audit_retention_off_drops_only_the_ttl_index(
    mongo_stack, open_backends, recorder
) -> None:
    with_retention = mongo_stack.settings(audit={"retention_days": 30})
    backends = await open_backends(with_retention, recorder)
    await ensure_schema(backends.mongo, with_retention)
    recorder.clear()
    forever = mongo_stack.settings(audit={"retention_days": None})
    await ensure_schema(backends.mongo, forever)
    drops = recorder.named("dropIndexes")
    assert len(drops) == 1 and drops[0]["dropIndexes"] == forever.audit.collection
    keys = [
        tuple(index["key"])
        async for index in await backends.mongo.db[forever.audit.collection].list_indexes()
    ]
    assert ("expires_at",) not in keys and ("seq",) in keys


async def test_time_series_option(mongo_stack, open_backends, recorder) -> None:
    settings = mongo_stack.settings(events={"time_series": True, "retention_days": 7})
    backends = await open_backends(settings, recorder)
    await ensure_schema(backends.mongo, settings)
    create = next(
        body for body in recorder.named("create") if body["create"] == settings.events.collection
    )
    assert create["timeseries"] == {"timeField": "ts", "granularity": "seconds"}
    assert create["expireAfterSeconds"] == 7 * DAY
    assert "validator" not in create  # MongoDB refuses validators on time-series collections
    assert not any(index.get("unique") for index in _indexes(recorder, settings.events.collection))


async def test_audit_role_command(mongo_stack, open_backends, recorder, unique) -> None:
    settings = mongo_stack.settings(audit={"role_name": f"nexusAudit_{unique}"})
    backends = await open_backends(settings, recorder)
    await ensure_schema(backends.mongo, settings)  # auto-detect: the substitute reports no roles
    assert recorder.named("rolesInfo")
    if not recorder.named("createRole"):
        recorder.clear()
        changes = await ensure_schema(backends.mongo, settings, manage_roles=True)
        assert [c.action for c in changes if "role" in c.action] == ["create_role"]
    database, audit = settings.mongo.database, settings.audit.collection
    assert recorder.named("createRole")[-1] == {
        "createRole": f"nexusAudit_{unique}",
        "privileges": [
            {
                "resource": {"db": database, "collection": audit},
                "actions": ["find", "insert", "listIndexes"],
            },
            {
                "resource": {"db": database, "collection": f"{audit}_checkpoints"},
                "actions": ["find", "insert", "listIndexes"],
            },
            {
                "resource": {"db": database, "collection": f"{audit}_lease"},
                "actions": ["find", "insert", "update", "listIndexes"],
            },
            {"resource": {"db": database, "collection": ""}, "actions": ["listCollections"]},
        ],
        "roles": [],
    }


@pytest.mark.real_mongodb
async def test_real_server_role_validator_and_idempotency(mongo_stack, open_backends, recorder):
    settings = mongo_stack.settings(
        audit={"role_name": f"nexusAudit_{mongo_stack.settings().audit.collection}"}
    )
    backends = await open_backends(settings, recorder)
    db = backends.mongo.db
    try:
        await ensure_schema(backends.mongo, settings)
        assert await ensure_schema(backends.mongo, settings) == []
        assert await inspect_schema(backends.mongo, settings) == []
        info = await db.command({"rolesInfo": settings.audit.role_name, "showPrivileges": True})
        actions = {frozenset(p["actions"]) for p in info["roles"][0]["privileges"]}
        assert actions == {
            frozenset({"find", "insert", "listIndexes"}),
            frozenset({"find", "insert", "update", "listIndexes"}),
            frozenset({"listCollections"}),
        }
        with pytest.raises(WriteError):  # the validator is enforced
            await db[settings.events.collection].insert_one({"name": "no ids", "ts": 1})
        moved = mongo_stack.settings(
            audit={"role_name": settings.audit.role_name, "collection": "x_au"}
        )
        recorder.clear()
        changes = await ensure_schema(backends.mongo, moved)
        assert "update_role" in [c.action for c in changes]
        assert recorder.named("updateRole")
    finally:
        await db.command({"dropRole": settings.audit.role_name})


async def test_inspect_reports_missing_schema(mongo_stack, open_backends) -> None:
    settings = mongo_stack.settings()
    backends = await open_backends(settings)
    problems = await inspect_schema(backends.mongo, settings)
    assert {(p.collection, p.problem) for p in problems} == {
        (settings.events.collection, "missing_collection"),
        (settings.audit.collection, "missing_collection"),
        (f"{settings.audit.collection}_checkpoints", "missing_collection"),
        (f"{settings.audit.collection}_lease", "missing_collection"),
    }
    await ensure_schema(backends.mongo, settings)
    remaining = await inspect_schema(backends.mongo, settings)
    assert {p.problem for p in remaining} <= {"validator_mismatch"}


@pytest.mark.parametrize(
    ("version", "refused"),
    [("5.0.26", True), ("6.0.14", True), ("7.0.0", False), ("8.0.4", False), ("unknown", False)],
)
def test_time_series_mode_needs_mongodb_7(mongo_stack, version: str, refused: bool) -> None:
    """Erasure deletes by user_id, not the metaField: MongoDB allows that from 7.0."""
    time_series = mongo_stack.settings(events={"time_series": True})
    if refused:
        with pytest.raises(ConfigurationError) as caught:
            check_time_series_support(time_series, version)
        assert caught.value.setting == "events.time_series"
        assert version in str(caught.value) and "7.0" in str(caught.value)
    else:
        check_time_series_support(time_series, version)
    check_time_series_support(mongo_stack.settings(), "5.0.0")  # a plain collection: any


async def test_init_checks_the_version_before_a_time_series_collection(
    mongo_stack, open_backends, recorder
) -> None:
    settings = mongo_stack.settings(events={"time_series": True})
    backends = await open_backends(settings, recorder)
    with capture_logs() as logs:
        await ensure_schema(backends.mongo, settings, dry_run=True)
    names = [name for name, _ in recorder.commands]
    assert names.index("buildInfo") < names.index("listCollections")
    version = await backends.mongo.server_version()
    if version == "unknown":  # the substitute reports none: allowed, and said so
        assert any(log["event"] == "mongo_version_unknown" for log in logs)


async def test_health_without_schema_read_privileges_warns_and_checks_names(
    mongo_stack, open_backends, recorder, monkeypatch
) -> None:
    """An application role older than 01-roles.js (no listCollections action): readiness
    does not fail; the collections are still checked by name, with the form of
    listCollections that needs no privilege."""
    from pymongo.errors import OperationFailure

    from nexus_store import NexusStore
    from nexus_store.mongo import schema

    settings = mongo_stack.settings()
    await ensure_schema((await open_backends(settings)).mongo, settings)

    async def refused(*args: Any) -> Any:  # the server's answer to this user
        raise OperationFailure("not authorized on nexus to execute command", code=13)

    monkeypatch.setattr(schema, "_collections", refused)
    backends = await open_backends(settings, recorder)
    problems = await inspect_schema(backends.mongo, settings)
    assert [(p.collection, p.problem) for p in problems] == [
        (settings.mongo.database, "not_authorized")
    ]
    assert "listCollections" in problems[0].detail
    (names_only,) = recorder.named("listCollections")
    assert names_only["nameOnly"] is True and names_only["authorizedCollections"] is True

    async with NexusStore(settings) as store:
        checks = (await store.health()).to_dict()["checks"]
    for key in ("mongo:indexes", "mongo:validators"):
        assert checks[key][0]["status"] == "warn", checks[key]
        assert "may not run listCollections" in checks[key][0]["output"]
