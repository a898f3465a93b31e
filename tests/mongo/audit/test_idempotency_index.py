"""The idempotency-key index: filtered by ``$exists`` (which an equality lookup can use),
an old ``$type`` one reported by health and rebuilt by init under the sequencer lease.

nx-27017 keeps no partial filters, so the planning is checked on the listIndexes answer real
MongoDB gives, and the rebuild end to end on a real server."""

from __future__ import annotations

import pytest

from nexus_store.mongo.schema import (
    _index_changes,
    _index_problems,
    collection_specs,
    ensure_schema,
    inspect_schema,
)
from tests.support import CommandRecorder

OLD_FILTER = {"idempotency_key": {"$type": "string"}}
NEW_FILTER = {"idempotency_key": {"$exists": True}}


def _audit_spec(settings):
    return next(
        spec for spec in collection_specs(settings) if spec.name == settings.audit.collection
    )


def _server_indexes(spec, partial_filter):
    """listIndexes as real MongoDB answers it for a collection built by an older release."""
    found = {index.keys: index.document() for index in spec.indexes}
    found[("idempotency_key",)] = {
        "key": {"idempotency_key": 1},
        "name": "idempotency_key_unique",
        "unique": True,
        "partialFilterExpression": partial_filter,
    }
    return found


def test_the_declared_index_filters_on_exists(mongo_stack) -> None:
    spec = _audit_spec(mongo_stack.settings())
    index = next(index for index in spec.indexes if index.keys == ("idempotency_key",))
    assert index.unique and dict(index.partial_filter or {}) == NEW_FILTER


def test_health_reports_the_old_type_filter(mongo_stack) -> None:
    spec = _audit_spec(mongo_stack.settings())
    problems = _index_problems(spec, _server_indexes(spec, OLD_FILTER))
    assert [(p.problem, p.detail.split(":")[0]) for p in problems] == [
        ("index_options", "idempotency_key_unique")
    ]
    assert _index_problems(spec, _server_indexes(spec, NEW_FILTER)) == []


def test_init_plans_drop_then_create(mongo_stack) -> None:
    settings = mongo_stack.settings()
    spec = _audit_spec(settings)
    changes = _index_changes(spec, _server_indexes(spec, OLD_FILTER))
    assert [change.action for change in changes] == ["drop_index", "create_indexes"]
    assert changes[0].command == {
        "dropIndexes": settings.audit.collection,
        "index": "idempotency_key_unique",
    }
    assert changes[1].command["indexes"] == [
        {
            "key": {"idempotency_key": 1},
            "name": "idempotency_key_unique",
            "unique": True,
            "partialFilterExpression": NEW_FILTER,
        }
    ]
    assert spec.lease == f"{settings.audit.collection}_lease"


@pytest.mark.real_mongodb
async def test_real_server_migrates_under_the_lease_and_serves_lookups(
    mongo_stack, open_backends
) -> None:
    recorder = CommandRecorder()
    settings = mongo_stack.settings()
    backends = await open_backends(settings, recorder)
    await ensure_schema(backends.mongo, settings, manage_roles=False)
    entries = backends.mongo.db[settings.audit.collection]
    await entries.drop_index("idempotency_key_unique")
    await entries.create_index(
        "idempotency_key",
        unique=True,
        partialFilterExpression=OLD_FILTER,
        name="idempotency_key_unique",
    )
    problems = await inspect_schema(backends.mongo, settings)
    assert any(p.problem == "index_options" for p in problems)
    recorder.clear()
    await ensure_schema(backends.mongo, settings, manage_roles=False)
    names = [name for name, _ in recorder.commands]
    lease = names.index("findAndModify")
    assert lease < names.index("dropIndexes") < names.index("createIndexes")
    found = [index async for index in await entries.list_indexes()]
    keyed = next(index for index in found if index["name"] == "idempotency_key_unique")
    assert keyed["partialFilterExpression"] == NEW_FILTER
    plan = await entries.find({"idempotency_key": "outbox:1"}).explain()
    assert "IXSCAN" in str(plan["queryPlanner"]["winningPlan"])
