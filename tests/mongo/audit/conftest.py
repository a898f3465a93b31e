"""Fixtures of the audit tests: a schema-ready AuditLog per call, and its raw collections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from nexus_store.mongo.audit.log import AuditLog
from nexus_store.mongo.schema import ensure_schema
from tests.support import CommandRecorder

MakeAudit = Callable[..., Awaitable[AuditLog]]


@pytest.fixture
def make_audit(mongo_stack, open_backends) -> MakeAudit:
    """``await make_audit(recorder=None, **audit_settings)``: an AuditLog on this test's
    collections (schema applied once); each call is an independent writer (own client)."""

    async def build(recorder: CommandRecorder | None = None, **audit: Any) -> AuditLog:
        settings = mongo_stack.settings(audit=audit)
        backends = await open_backends(settings, recorder)
        await ensure_schema(backends.mongo, settings, manage_roles=False)
        return AuditLog(backends)

    return build


@pytest.fixture
def raw() -> Callable[..., Any]:
    """``raw(log, "entries" | "checkpoints")``: the collection as someone with database
    access sees it (plain driver, no SDK checks)."""

    def collection(log: AuditLog, name: str = "entries") -> Any:
        found = log._entries if name == "entries" else log._checkpoints
        return found.with_options(write_concern=None)

    return collection
