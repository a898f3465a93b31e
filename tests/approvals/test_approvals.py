"""store.approvals on real PostgreSQL and Redis: four eyes, N approvals, expected versions,
audit transitions through the outbox, notifications on the ``approvals`` stream, expiry and
races between deciders."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from nexus_store import NexusStore
from nexus_store.errors import (
    ApprovalRequiredError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from nexus_store.postgres.models import Role, User, UserRole
from tests.approvals.conftest import Expense
from tests.support import tag, user_values


def _outbox(dsn: str, aggregate_id: Any) -> list[tuple[str, dict[str, Any]]]:
    """(aggregate_type, payload) of the outbox rows of one aggregate, in commit order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT aggregate_type, payload FROM outbox WHERE aggregate_id = %s ORDER BY id",
            (str(aggregate_id),),
        ).fetchall()
    return [(kind, payload) for kind, payload in rows]


async def test_an_update_of_a_guarded_field_is_refused_and_writes_nothing(
    store: NexusStore, expense: Expense
) -> None:
    with pytest.raises(ApprovalRequiredError) as refused:
        await store.entities.update(Expense, expense.id, amount=Decimal("999.00"), title="x")
    assert refused.value.fields == ["amount"]
    assert "store.approvals.request" in str(refused.value)
    unchanged = await store.entities.get(Expense, expense.id)
    assert (unchanged.amount, unchanged.title, unchanged.version) == (
        Decimal("100.00"),
        "conference",
        1,
    )
    renamed = await store.entities.update(Expense, expense.id, title="summit")  # not guarded
    assert renamed.version == 2


async def test_two_distinct_approvers_apply_the_change_with_its_audit_trail(
    store: NexusStore, expense: Expense, postgres_dsn: str
) -> None:
    request = await store.approvals.request(
        Expense,
        expense.id,
        requester="user:ada",
        changes={"amount": Decimal("950.00")},
        reason="trip",
    )
    assert (request.status, request.required_approvals, request.expected_version) == (
        "pending",
        2,
        1,
    )
    assert request.changes == {"amount": "950.00"} and request.before == {"amount": "100.00"}
    assert (await store.entities.get(Expense, expense.id)).amount == Decimal("100.00")

    with pytest.raises(ValidationError) as own:
        await store.approvals.approve(request.id, "user:ada")  # four eyes
    assert own.value.field == "approver"
    first = await store.approvals.approve(request.id, "user:bob")
    assert (first.status, first.approvals_given) == ("pending", 1)
    with pytest.raises(ConflictError) as twice:
        await store.approvals.approve(request.id, "user:bob")
    assert twice.value.field == "approver"
    done = await store.approvals.approve(request.id, "user:cy", reason="fine")
    assert (done.status, done.decided_by, done.decision_reason) == ("applied", "user:cy", "fine")

    applied = await store.entities.get(Expense, expense.id)
    assert (applied.amount, applied.version) == (Decimal("950.00"), 2)

    transitions = [
        (payload["actor"], payload["action"], payload["after"].get("status"))
        for kind, payload in _outbox(postgres_dsn, request.id)
    ]
    assert transitions == [
        ("user:ada", "create", "pending"),
        ("user:bob", "update", None),  # approvals_given 0 -> 1
        ("user:cy", "update", "approved"),
        ("user:cy", "update", "applied"),
    ]
    ((kind, change),) = _outbox(postgres_dsn, expense.id)
    assert kind == "test_approval_expenses"
    assert change["actor"] == "user:cy" and change["reason"] == f"change request {request.id}"
    assert change["before"]["amount"] == "100.00" and change["after"]["amount"] == "950.00"


async def test_a_row_changed_meanwhile_makes_the_request_conflicted(
    store: NexusStore, expense: Expense
) -> None:
    request = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(5)}, approvals=1
    )
    await store.entities.update(Expense, expense.id, title="edited meanwhile")  # version 2
    result = await store.approvals.approve(request.id, "user:bob")
    assert result.status == "conflicted"
    current = await store.entities.get(Expense, expense.id)
    assert (current.amount, current.version) == (Decimal("100.00"), 2)
    with pytest.raises(ConflictError):  # stale at request time is refused at once
        await store.approvals.request(
            Expense,
            expense.id,
            requester="user:ada",
            changes={"amount": Decimal(5)},
            expected_version=1,
        )


async def test_reject_and_cancel(store: NexusStore, expense: Expense) -> None:
    rejected = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(1)}
    )
    done = await store.approvals.reject(rejected.id, "user:bob", reason="over budget")
    assert (done.status, done.decision_reason) == ("rejected", "over budget")
    with pytest.raises(ConflictError) as late:
        await store.approvals.approve(rejected.id, "user:cy")
    assert late.value.field == "status"

    withdrawn = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(2)}
    )
    with pytest.raises(ValidationError):
        await store.approvals.cancel(withdrawn.id, "user:bob")  # not the requester
    assert (await store.approvals.cancel(withdrawn.id, "user:ada")).status == "cancelled"
    assert (await store.entities.get(Expense, expense.id)).amount == Decimal("100.00")
    with pytest.raises(NotFoundError):
        await store.approvals.approve(uuid.uuid4(), "user:bob")


async def test_bad_requests_are_validation_errors(store: NexusStore, expense: Expense) -> None:
    one = {"amount": Decimal(1)}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"changes": {}}, "changes"),
        ({"changes": {"amount": Decimal(-1)}}, "changes.amount"),
        ({"changes": {"amount": Decimal("NaN")}}, "changes.amount"),
        ({"changes": {"nope": 1}}, "changes.nope"),
        ({"changes": {"id": uuid.uuid4()}}, "changes.id"),
        ({"changes": one, "approvals": 0}, "approvals"),
        (
            {"changes": one, "approvers": ["user:ada"], "approvals": 1},
            "approvers",
        ),
        ({"changes": one, "expires_in": -5}, "expires_in"),
        ({"changes": one, "requester": ""}, "requester"),
    ]
    for extra, field in cases:
        arguments: dict[str, Any] = {"requester": "user:ada", **extra}
        with pytest.raises(ValidationError) as refused:
            await store.approvals.request(Expense, expense.id, **arguments)
        assert refused.value.field == field, extra
    # A refused request writes nothing.
    assert [r for r in await store.approvals.pending() if r.resource_id == str(expense.id)] == []


async def test_approvers_roles_and_pending(store: NexusStore, expense: Expense) -> None:
    finance = await store.entities.create(Role, name=f"finance-{tag()}")
    controller = await store.entities.create(User, **user_values())
    await store.entities.create(UserRole, user_id=controller.id, role_id=finance.id)
    outsider = await store.entities.create(User, **user_values())

    by_role = await store.approvals.request(
        Expense,
        expense.id,
        requester="user:ada",
        changes={"amount": Decimal(7)},
        approvals=1,
        approver_role=finance.name,
    )
    listed = await store.approvals.request(
        Expense,
        expense.id,
        requester="user:ada",
        changes={"title": "named"},
        approvals=1,
        approvers=["user:bob"],
    )
    mine = {r.id for r in await store.approvals.pending(for_user=str(controller.id))}
    assert by_role.id in mine and listed.id not in mine
    bobs = {r.id for r in await store.approvals.pending(for_user="user:bob")}
    assert listed.id in bobs and by_role.id not in bobs
    assert not {by_role.id, listed.id} & {r.id for r in await store.approvals.pending("user:ada")}

    with pytest.raises(ValidationError, match="role"):
        await store.approvals.approve(by_role.id, str(outsider.id))
    with pytest.raises(ValidationError, match="approvers"):
        await store.approvals.approve(listed.id, "user:cy")
    assert (await store.approvals.approve(by_role.id, str(controller.id))).status == "applied"
    # Both were asked against version 1; the first applied made it 2.
    assert (await store.approvals.approve(listed.id, "user:bob")).status == "conflicted"
    current = await store.entities.get(Expense, expense.id)
    assert (current.amount, current.title, current.version) == (Decimal(7), "conference", 2)


async def test_stale_requests_expire(store: NexusStore, expense: Expense) -> None:
    swept = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(3)}, expires_in=0.2
    )
    touched = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(4)}, expires_in=0.2
    )
    fresh = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(5)}
    )
    await asyncio.sleep(0.5)
    with pytest.raises(ConflictError, match="expired"):
        await store.approvals.approve(touched.id, "user:bob")
    assert (await store.approvals.get(touched.id)).status == "expired"  # committed
    assert await store.approvals.expire_stale() >= 1
    assert (await store.approvals.get(swept.id)).status == "expired"
    assert (await store.approvals.get(fresh.id)).status == "pending"
    pending = {r.id for r in await store.approvals.pending()}
    assert fresh.id in pending and swept.id not in pending


async def test_transitions_are_announced_on_the_approvals_stream(
    store: NexusStore, expense: Expense
) -> None:
    request = await store.approvals.request(
        Expense, expense.id, requester="user:ada", changes={"amount": Decimal(8)}, approvals=1
    )
    await store.approvals.approve(request.id, "user:bob")
    group = f"mailers-{tag()}"
    deliveries = await store.queue.consume("approvals", group, "worker", count=1000)
    mine = [d.payload for d in deliveries if d.payload["requestId"] == str(request.id)]
    assert [(m["event"], m["status"]) for m in mine] == [
        ("requested", "pending"),
        ("applied", "applied"),
    ]
    assert mine[0]["requester"] == "user:ada" and mine[0]["requiredApprovals"] == 1


async def test_two_approvers_at_once_apply_the_change_once(
    store: NexusStore, postgres_dsn: str
) -> None:
    for round_ in range(8):
        expense = await store.entities.create(Expense, title=f"race {round_}", amount=Decimal(1))
        request = await store.approvals.request(
            Expense, expense.id, requester="user:ada", changes={"amount": Decimal(2)}, approvals=1
        )
        results = await asyncio.gather(
            store.approvals.approve(request.id, "user:bob"),
            store.approvals.approve(request.id, "user:cy"),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and won[0].status == "applied"
        assert len(lost) == 1 and isinstance(lost[0], ConflictError)
        current = await store.entities.get(Expense, expense.id)
        assert (current.amount, current.version) == (Decimal("2.00"), 2)
        assert len(_outbox(postgres_dsn, expense.id)) == 1  # one applied change


async def test_an_approval_racing_a_cancel_ends_in_exactly_one_state(store: NexusStore) -> None:
    outcomes = set()
    for round_ in range(8):
        expense = await store.entities.create(Expense, title=f"race {round_}", amount=Decimal(1))
        request = await store.approvals.request(
            Expense, expense.id, requester="user:ada", changes={"amount": Decimal(2)}, approvals=1
        )
        calls = [
            store.approvals.approve(request.id, "user:bob"),
            store.approvals.cancel(request.id, "user:ada"),
        ]
        if round_ % 2:
            calls.reverse()
        results = await asyncio.gather(*calls, return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], ConflictError)
        final = await store.approvals.get(request.id)
        assert final.status == won[0].status
        amount = (await store.entities.get(Expense, expense.id)).amount
        assert (final.status, amount) in {
            ("applied", Decimal("2.00")),
            ("cancelled", Decimal("1.00")),
        }
        outcomes.add(final.status)
    assert outcomes  # which side wins is the scheduler's choice; each round has one winner
