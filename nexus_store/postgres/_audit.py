"""Which entity writes emit a change record, and the record each one emits.

A write made with ``audit=True`` (or to a model whose ``AuditPolicy`` is enabled, or to a
table in ``outbox.audited_tables``) inserts its change record into the ``outbox`` table in
the write's own transaction; the relay copies it to the audit log (see
:mod:`nexus_store.outbox`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from nexus_store.errors import ValidationError
from nexus_store.outbox.changes import Action, Change, policy_for
from nexus_store.postgres._model import ModelInfo

__all__ = ["AuditPlan", "Audits"]


@dataclass(frozen=True)
class AuditPlan:
    """How an audited write finds its change record. ``lock`` selects the row's before-image
    FOR UPDATE in the write's transaction; a hard delete returns it instead."""

    info: ModelInfo[Any]
    action: Action
    lock: Any = None

    def change(self, before: Sequence[Any] | None, after: Sequence[Any] | None) -> Change | None:
        names = [column.name for column in self.info.columns]
        old = None if before is None else dict(zip(names, before, strict=True))
        new = None if after is None else dict(zip(names, after, strict=True))
        key = (new or old or {}).get(self.info.key.name)
        action: Action = self.action
        if action == "upsert":
            action = "create" if old is None else "update"
        return Change.of(self.info.model, action, key, old, new)


class Audits:
    """The audit decisions of one repository."""

    def __init__(self, audited_tables: Collection[str]) -> None:
        # Tables audited without audit=True (the outbox.audited_tables setting).
        self._audited_tables = frozenset(audited_tables)

    def enabled(self, info: ModelInfo[Any], audit: bool | None) -> bool:
        """``audit`` if given, else the model's policy."""
        if audit is None:
            return policy_for(info.model, self._audited_tables).enabled
        if not isinstance(audit, bool):
            raise ValidationError("audit", "must be True, False or None (the model's policy)")
        return audit

    def plan(
        self, info: ModelInfo[Any], audit: bool | None, action: Action, *row: Any
    ) -> AuditPlan | None:
        """The audit plan of a write, or None when it is not audited.

        ``row``: conditions selecting the changed row, whose before-image is then locked and
        read first; without them the statement itself returns it (a hard delete).
        """
        if not self.enabled(info, audit):
            return None
        lock = select(*info.columns).where(*row).with_for_update() if row else None
        return AuditPlan(info, action, lock)
