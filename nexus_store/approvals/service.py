"""``store.approvals``: changes that need someone else's approval before they are written.

    request = await store.approvals.request(Expense, expense.id, requester="user:ada",
                                            changes={"amount": Decimal("950.00")},
                                            reason="conference trip")
    for waiting in await store.approvals.pending(for_user="user:bob"):
        ...
    done = await store.approvals.approve(request.id, "user:bob")   # status "applied"
    await store.approvals.reject(other.id, "user:bob", reason="over budget")
    await store.approvals.cancel(mine.id, "user:ada")
    expired = await store.approvals.expire_stale()

Each call runs in one PostgreSQL transaction that locks the request row (``FOR UPDATE``), so
two approvers acting at once, or an approval racing a cancel, end in exactly one state: the
later call sees the new status and gets :class:`ConflictError`. The requester can never
approve (four eyes); a request needing N approvals is applied by the N-th distinct approver.
It is applied with the version it was requested against: a row changed in the meantime makes
the request ``conflicted`` and nothing is written. Every transition, and the applied change
of the row, goes to the audit log through the outbox in the same transaction. After the
commit each transition is announced on the Redis Stream queue ``approvals`` (area ``queue``;
skipped when Redis is not configured), for an application to e-mail or push from a consumer.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, exists, false, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nexus_store._errors import describe
from nexus_store.approvals.policy import approval_policy
from nexus_store.errors import ConflictError, NotFoundError, ValidationError
from nexus_store.log import get_logger
from nexus_store.outbox.changes import Action, Change, audit_context, emit, json_safe
from nexus_store.postgres._model import MANAGED_ON_UPDATE, ModelInfo, model_info
from nexus_store.postgres._transaction import Transactions
from nexus_store.postgres._types import column_type
from nexus_store.postgres._writes import bookkeeping
from nexus_store.postgres.models import (
    Base,
    ChangeRequest,
    ChangeRequestApproval,
    Role,
    UserRole,
)

if TYPE_CHECKING:
    from nexus_store.connections import Backends
    from nexus_store.redis.queue import Queue

__all__ = ["NOTIFICATION_QUEUE", "Approvals"]

_log = get_logger("nexus_store.approvals")

NOTIFICATION_QUEUE = "approvals"
DEFAULT_EXPIRY = timedelta(days=7)
MAX_APPROVALS = 100
# What a transition's audit record shows of the request (the requested values themselves
# are audited, redacted by the row's own policy, when the change is applied).
_AUDITED = (
    "resource_type",
    "resource_id",
    "requester",
    "status",
    "required_approvals",
    "approvals_given",
    "decided_by",
    "decision_reason",
    "expected_version",
)


def _actor(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValidationError(field, "must be a non-empty string of at most 200 characters")
    return value


def _reason(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 2000):
        raise ValidationError("reason", "must be a string of at most 2000 characters")
    return value


def _expiry(value: Any) -> timedelta:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError("expires_in", "must be a positive timedelta or number of seconds")
    return value


def _model_for(table: str) -> type[Base]:
    for mapper in Base.registry.mappers:
        if getattr(mapper.local_table, "name", None) == table:
            return mapper.class_
    raise NotFoundError("model of table", table)


class Approvals:
    """The approval workflow over ``change_requests`` (see the module)."""

    def __init__(self, backends: Backends) -> None:
        self._backends = backends
        self._transactions = Transactions(backends.postgres.engine)
        self._info: ModelInfo[ChangeRequest] = model_info(ChangeRequest)
        self._queue: Queue | None = None

    # -- reading -------------------------------------------------------------------------

    async def get(self, request_id: Any) -> ChangeRequest:
        """The request; :class:`NotFoundError` if there is none."""
        info = self._info
        async with self._transactions.writing() as connection:
            row = (
                await connection.execute(select(*info.columns).where(info.where_key(request_id)))
            ).first()
        if row is None:
            raise NotFoundError("ChangeRequest", request_id)
        return info.materialize(row)

    async def pending(
        self, for_user: str | None = None, *, limit: int = 100
    ) -> list[ChangeRequest]:
        """Pending, unexpired requests, oldest first; with ``for_user``, only those that user
        may approve now (not their own, not yet approved by them, in their approvers or role)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValidationError("limit", "must be an integer from 1 to 1000")
        table = self._info.table
        conditions: list[Any] = [table.c.status == "pending", table.c.expires_at > func.now()]
        if for_user is not None:
            user = _actor("for_user", for_user)
            conditions += [
                table.c.requester != user,
                or_(table.c.approvers.is_(None), table.c.approvers.contains([user])),
                or_(table.c.approver_role.is_(None), table.c.approver_role.in_(_roles_of(user))),
                ~exists().where(
                    ChangeRequestApproval.request_id == table.c.id,
                    ChangeRequestApproval.approver == user,
                ),
            ]
        statement = (
            select(*self._info.columns)
            .where(*conditions)
            .order_by(table.c.created_at, table.c.id)
            .limit(limit)
        )
        async with self._transactions.writing() as connection:
            rows = (await connection.execute(statement)).all()
        return self._info.materialize_all(rows)

    # -- asking --------------------------------------------------------------------------

    async def request(
        self,
        model: type[Base],
        id: Any,
        /,
        *,
        requester: str,
        changes: Mapping[str, Any],
        expected_version: int | None = None,
        reason: str | None = None,
        approvals: int | None = None,
        approvers: Sequence[str] | None = None,
        approver_role: str | None = None,
        expires_in: timedelta | float = DEFAULT_EXPIRY,
    ) -> ChangeRequest:
        """Ask for ``changes`` to row ``id`` of ``model``; nothing is written to the row yet.

        ``expected_version`` defaults to the row's version now: the change is applied only
        to that version. ``approvals`` (default: the model's policy, else 1) distinct
        approvers are needed, none of them the requester; ``approvers`` limits who may
        approve, ``approver_role`` requires a role (``roles.name`` of the approver's user id).
        """
        info = model_info(model)
        requester = _actor("requester", requester)
        if not isinstance(changes, Mapping) or not changes:
            raise ValidationError("changes", "give at least one column to change")
        converted = info.rules.values(
            changes, managed=MANAGED_ON_UPDATE, insert=False, prefix="changes."
        )
        if info.key.name in converted:
            raise ValidationError(f"changes.{info.key.name}", "the key cannot be changed")
        policy = approval_policy(model)
        required = approvals if approvals is not None else policy.approvals if policy else 1
        if isinstance(required, bool) or not isinstance(required, int):
            raise ValidationError("approvals", "must be an integer")
        if not 1 <= required <= MAX_APPROVALS:
            raise ValidationError("approvals", f"must be from 1 to {MAX_APPROVALS}")
        role = approver_role
        if role is None and policy is not None:
            role = policy.approver_role
        allowed = None
        if approvers is not None:
            if isinstance(approvers, str) or not isinstance(approvers, Sequence):
                raise ValidationError("approvers", "must be a list of approver ids")
            allowed = sorted({_actor("approvers", approver) for approver in approvers})
            if len(set(allowed) - {requester}) < required:
                raise ValidationError(
                    "approvers", f"fewer than {required} approvers other than the requester"
                )
        expiry = _expiry(expires_in)
        tenant = self._transactions.tenant()
        values: dict[str, Any] = {
            # The scope it is requested in: migration 0005's policy shows it to that tenant only.
            "organization_id": None if tenant is None else uuid.UUID(tenant),
            "resource_type": info.table.name,
            "requester": requester,
            "reason": _reason(reason),
            "required_approvals": required,
            "approvers": allowed,
            "approver_role": _actor("approver_role", role) if role else None,
            "expires_at": func.now() + expiry,
        }
        async with self._transactions.writing() as connection:
            current = (
                await connection.execute(
                    select(*info.columns).where(info.where_key(id), *info.visible(False))
                )
            ).first()
            if current is None:
                raise NotFoundError(model.__name__, id)
            row = dict(zip((c.name for c in info.columns), current, strict=True))
            if expected_version is not None:
                if not info.versioned:
                    raise ValidationError("expected_version", f"{model.__name__} has no version")
                version = info.rules.convert("version", expected_version, "expected_version")
                if row["version"] != version:
                    raise ConflictError(
                        f"{model.__name__} {id} is at version {row['version']}, not {version}",
                        field="version",
                    )
            values |= {
                "resource_id": str(row[info.key.name]),
                "changes": json_safe(converted),
                "before": {name: json_safe(row[name]) for name in converted},
                "expected_version": row["version"] if info.versioned else None,
            }
            created = await self._write(
                connection, insert(self._info.table).values(values), None, "create", requester
            )
        await self._notify("requested", created)
        return created

    # -- deciding ------------------------------------------------------------------------

    async def approve(
        self, request_id: Any, approver: str, /, *, reason: str | None = None
    ) -> ChangeRequest:
        """Add ``approver``'s approval; the last one needed applies the change.

        Returns the request: ``pending`` (more approvals needed), ``applied``, or
        ``conflicted`` (the row changed or vanished since the request; nothing written).
        :class:`ValidationError` (field ``approver``) for the requester or someone not
        allowed to approve; :class:`ConflictError` (field ``status``) if the request is no
        longer pending (or has just expired), (field ``approver``) for a second approval.
        """
        approver = _actor("approver", approver)
        reason = _reason(reason)
        async with self._transactions.writing() as connection:
            request, expired = await self._lock_pending(connection, request_id)
            if not expired:
                await self._check_approver(connection, request, approver)
                await connection.execute(
                    insert(ChangeRequestApproval.__table__).values(  # type: ignore[arg-type]
                        request_id=request.id, approver=approver
                    )
                )
                given = request.approvals_given + 1
                table = self._info.table
                changes: dict[str, Any] = {"approvals_given": given}
                if given >= request.required_approvals:
                    changes |= {
                        "status": "approved",
                        "decided_by": approver,
                        "decision_reason": reason,
                        "decided_at": func.now(),
                    }
                request = await self._write(
                    connection,
                    update(table).where(self._info.where_key(request.id)).values(changes),
                    request,
                    "update",
                    approver,
                )
                if request.status == "approved":
                    applied = await self._apply(connection, request, approver)
                    request = await self._write(
                        connection,
                        update(table)
                        .where(self._info.where_key(request.id))
                        .values(status="applied" if applied else "conflicted"),
                        request,
                        "update",
                        approver,
                    )
        if expired:
            await self._notify("expired", request)
            raise ConflictError(f"change request {request.id} has expired", field="status")
        await self._notify(request.status if request.status != "pending" else "approval", request)
        return request

    async def reject(
        self, request_id: Any, approver: str, /, *, reason: str | None = None
    ) -> ChangeRequest:
        """Refuse the change (by someone allowed to approve it); nothing is written to the row."""
        approver = _actor("approver", approver)
        return await self._decide(request_id, approver, "rejected", _reason(reason), True)

    async def cancel(
        self, request_id: Any, requester: str, /, *, reason: str | None = None
    ) -> ChangeRequest:
        """Withdraw a pending request; only its requester may."""
        requester = _actor("requester", requester)
        return await self._decide(request_id, requester, "cancelled", _reason(reason), False)

    async def expire_stale(self) -> int:
        """Mark every pending request past its ``expires_at`` as ``expired``; how many."""
        table = self._info.table
        async with self._transactions.writing() as connection:
            stale = (
                await connection.execute(
                    select(*self._info.columns)
                    .where(table.c.status == "pending", table.c.expires_at <= func.now())
                    .with_for_update(skip_locked=True)
                )
            ).all()
            expired = [
                await self._write(
                    connection,
                    update(table)
                    .where(self._info.where_key(row.id))
                    .values(status="expired", decided_at=func.now()),
                    self._info.materialize(row),
                    "update",
                    "system",
                )
                for row in stale
            ]
        for request in expired:
            await self._notify("expired", request)
        return len(expired)

    # -- the steps -----------------------------------------------------------------------

    async def _decide(
        self, request_id: Any, actor: str, status: str, reason: str | None, as_approver: bool
    ) -> ChangeRequest:
        async with self._transactions.writing() as connection:
            request, expired = await self._lock_pending(connection, request_id)
            if not expired:
                if as_approver:
                    await self._check_approver(connection, request, actor)
                elif actor != request.requester:
                    raise ValidationError("requester", "only the requester may cancel a request")
                request = await self._write(
                    connection,
                    update(self._info.table)
                    .where(self._info.where_key(request.id))
                    .values(
                        status=status,
                        decided_by=actor,
                        decision_reason=reason,
                        decided_at=func.now(),
                    ),
                    request,
                    "update",
                    actor,
                )
        if expired:
            await self._notify("expired", request)
            raise ConflictError(f"change request {request.id} has expired", field="status")
        await self._notify(status, request)
        return request

    async def _lock_pending(
        self, connection: AsyncConnection, request_id: Any
    ) -> tuple[ChangeRequest, bool]:
        """The request, locked for this transaction; ``True`` if it was found past its
        expiry (then marked expired, committed with the block, and reported by the caller)."""
        info = self._info
        table = info.table
        row = (
            await connection.execute(
                select(*info.columns, table.c.expires_at <= func.now())
                .where(info.where_key(request_id))
                .with_for_update()
            )
        ).first()
        if row is None:
            raise NotFoundError("ChangeRequest", request_id)
        request = info.materialize(row[:-1])
        if request.status != "pending":
            raise ConflictError(
                f"change request {request.id} is {request.status}, not pending", field="status"
            )
        if not row[-1]:
            return request, False
        expired = await self._write(
            connection,
            update(table)
            .where(info.where_key(request.id))
            .values(status="expired", decided_at=func.now()),
            request,
            "update",
            "system",
        )
        return expired, True

    async def _check_approver(
        self, connection: AsyncConnection, request: ChangeRequest, approver: str
    ) -> None:
        if approver == request.requester:
            raise ValidationError("approver", "the requester cannot approve their own request")
        if request.approvers is not None and approver not in request.approvers:
            raise ValidationError("approver", "is not among the request's approvers")
        if request.approver_role is not None:
            has_role = await connection.scalar(
                select(exists(_roles_of(approver).where(Role.name == request.approver_role)))
            )
            if not has_role:
                raise ValidationError("approver", f"needs the role {request.approver_role}")
        already = await connection.scalar(
            select(
                exists().where(
                    ChangeRequestApproval.request_id == request.id,
                    ChangeRequestApproval.approver == approver,
                )
            )
        )
        if already:
            raise ConflictError("this approver has already approved the request", field="approver")

    async def _apply(
        self, connection: AsyncConnection, request: ChangeRequest, approver: str
    ) -> bool:
        """Write the requested change at its expected version; False if the row moved on."""
        model = _model_for(request.resource_type)
        info = model_info(model)
        changes = {
            name: info.rules.convert(
                name, column_type(info.table.c[name].type).from_json(value), f"changes.{name}"
            )
            for name, value in request.changes.items()
        }
        conditions = [info.where_key(request.resource_id), *info.visible(False)]
        if request.expected_version is not None:
            conditions.append(info.table.c.version == request.expected_version)
        before = (
            await connection.execute(select(*info.columns).where(*conditions).with_for_update())
        ).first()
        if before is None:
            return False
        after = (
            await connection.execute(
                update(info.table)
                .where(*conditions)
                .values({**changes, **bookkeeping(info)})
                .returning(*info.columns)
            )
        ).one()
        names = [column.name for column in info.columns]
        with audit_context(approver, reason=f"change request {request.id}"):
            change = Change.of(
                model,
                "update",
                request.resource_id,
                dict(zip(names, before, strict=True)),
                dict(zip(names, after, strict=True)),
            )
        await emit(connection, [change] if change is not None else [])
        return True

    async def _write(
        self,
        connection: AsyncConnection,
        statement: Any,
        before: ChangeRequest | None,
        action: Action,
        actor: str,
    ) -> ChangeRequest:
        """Run one insert/update of a request and emit its transition, in one transaction."""
        info = self._info
        if before is not None:
            statement = statement.values(bookkeeping(info))
        row = (await connection.execute(statement.returning(*info.columns))).one()
        after = info.materialize(row)
        with audit_context(actor):
            change = Change.of(
                ChangeRequest,
                action,
                after.id,
                None if before is None else _audited(before),
                _audited(after) | ({"fields": sorted(after.changes)} if before is None else {}),
            )
        await emit(connection, [change] if change is not None else [])
        return after

    async def _notify(self, event: str, request: ChangeRequest) -> None:
        """Announce a transition on the ``approvals`` stream, after its commit. A Redis
        failure is logged, not raised: the transition is already committed (and audited)."""
        if "redis" not in self._backends.configured():
            return
        if self._queue is None:
            from nexus_store.redis.queue import Queue

            self._queue = Queue(self._backends)
        message = {
            "event": event,
            "requestId": str(request.id),
            "status": request.status,
            "resourceType": request.resource_type,
            "resourceId": request.resource_id,
            "requester": request.requester,
            "approvers": request.approvers,
            "approverRole": request.approver_role,
            "requiredApprovals": request.required_approvals,
            "approvalsGiven": request.approvals_given,
        }
        try:
            await self._queue.enqueue(NOTIFICATION_QUEUE, message)
        except Exception as exc:  # the transition stands; the consumer can poll pending()
            _log.warning("approval_notification_failed", transition=event, error=describe(exc))


def _audited(request: ChangeRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in _AUDITED}


def _roles_of(user: str) -> Select[Any]:
    """The role names of ``user`` when it is a user id (a UUID); none otherwise."""
    try:
        user_id = uuid.UUID(user)
    except ValueError:
        return select(Role.name).where(false())
    return (
        select(Role.name)
        .join(UserRole.__table__, UserRole.role_id == Role.id)
        .where(UserRole.user_id == user_id)
    )
