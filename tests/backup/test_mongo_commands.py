"""What the MongoDB restore sends, recorded with PyMongo command monitoring: the part a real
server would act on and the nx-27017 substitute does not (see docs/backup.md, Limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pymongo import monitoring

from devstack.stack import Stack
from nexus_store.backup.service import Backup
from nexus_store.connections import Backends
from nexus_store.mongo.client import MongoBackend


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, event.database_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def named(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        return [(db, body) for command, db, body in self.sent if command == name]


async def test_restore_stages_then_renames_on_admin_with_drop_target(
    archives: dict[str, Path], target_stack: Stack
) -> None:
    settings = target_stack.settings()
    commands = _Commands()
    backends = Backends(settings)
    backends._mongo = MongoBackend(settings.mongo, event_listeners=[commands])
    try:
        await Backup(backends).restore(archives["plain"], only="mongo")
    finally:
        await backends.close()
    database = settings.mongo.database
    created = [body["create"] for _, body in commands.named("create")]
    assert created and all("__nxr_" in name for name in created)
    # Indexes are built on the staged collection, with the archived options (the TTL).
    events_indexes = [
        index
        for _, body in commands.named("createIndexes")
        if body["createIndexes"].startswith("events__nxr_")
        for index in body["indexes"]
    ]
    assert any(index.get("expireAfterSeconds") == 90 * 86400 for index in events_indexes)
    assert any(index.get("unique") for index in events_indexes)
    # The switch: one renameCollection per collection, on admin, replacing the target.
    renames = [body for db, body in commands.named("renameCollection") if db == "admin"]
    assert sorted(body["to"] for body in renames) == sorted(
        f"{database}.{name}" for name in ("events", "audit_log", "audit_log_checkpoints")
    )
    assert all(body["dropTarget"] is True for body in renames)
    assert all(body["renameCollection"].startswith(f"{database}.") for body in renames)
    # No inserts ever go to a target collection directly.
    inserted = {body["insert"] for _, body in commands.named("insert")}
    assert inserted and all("__nxr_" in name for name in inserted)
