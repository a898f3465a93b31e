"""The demo workload behind ``nexus-store demo``: a small team app through every route.

    from nexus_store.cli.demo.workload import run_demo

    async with NexusStore.from_env() as store:
        report = await run_demo(store, users=5)
        for route in report.routes:
            print(route.kind, route.backend, route.location, route.count)

It signs up ``users`` people in an organization with one project and a few tasks
(PostgreSQL), tracks their analytics events and records audit entries (MongoDB), logs them
in, caches the project summary, rate-limits an API key, queues welcome emails and publishes
a task update (Redis). Every record carries a run tag, so runs never collide; nothing is
deleted afterwards (the audit log is append-only by design).

Sections are independent: one that fails is reported in ``failures`` and the others still
run. The schema must exist (``nexus-store init``; the ``demo`` command runs it first).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nexus_store.cli._common import json_ready
from nexus_store.errors import BackendUnavailableError, ValidationError
from nexus_store.health import describe_failure

if TYPE_CHECKING:
    from nexus_store.store import NexusStore

__all__ = ["DemoReport", "OperationTiming", "RouteUsage", "run_demo"]

_MAX_USERS = 1000
# "!" marks a hash no password matches (as in Django): demo users cannot log in.
_UNUSABLE_PASSWORD_HASH = "!" + "x" * 40
_REALTIME_WAIT = 5.0  # seconds for our own published message to come back
Progress = Callable[[str, str, str], None]  # (status, section, detail)


@dataclass(slots=True)
class RouteUsage:
    """How many records of one kind went where, and the time spent writing them."""

    kind: str
    backend: str
    location: str
    count: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class OperationTiming:
    """Calls of one SDK operation and their total time."""

    name: str
    count: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class DemoReport:
    """What :func:`run_demo` did: per route, per operation, and anything that failed."""

    run_tag: str
    routes: list[RouteUsage]
    operations: list[OperationTiming] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runTag": self.run_tag,
            "durationMs": round(self.seconds * 1000, 1),
            "routes": [
                {
                    "kind": r.kind,
                    "backend": r.backend,
                    "location": r.location,
                    "records": r.count,
                    "durationMs": round(r.seconds * 1000, 2),
                }
                for r in self.routes
            ],
            "operations": [
                {"name": op.name, "count": op.count, "durationMs": round(op.seconds * 1000, 2)}
                for op in self.operations
            ],
            "findings": self.findings,
            "failures": self.failures,
        }


class _Recorder:
    """Times each operation and credits its records to a route kind."""

    def __init__(self, report: DemoReport) -> None:
        self._report = report
        self._routes = {route.kind: route for route in report.routes}
        self._operations: dict[str, OperationTiming] = {}

    async def __call__(
        self, operation: str, call: Awaitable[Any], *, kind: str | None = None, records: int = 1
    ) -> Any:
        started = time.perf_counter()
        result = await call
        elapsed = time.perf_counter() - started
        timing = self._operations.get(operation)
        if timing is None:
            timing = self._operations[operation] = OperationTiming(operation)
            self._report.operations.append(timing)
        timing.count += 1
        timing.seconds += elapsed
        if kind is not None:
            route = self._routes[kind]
            route.count += records
            route.seconds += elapsed
        return result


async def run_demo(
    store: NexusStore, *, users: int = 5, progress: Progress | None = None
) -> DemoReport:
    """Run the workload against ``store`` and return what went where, with timings."""
    if not 1 <= users <= _MAX_USERS:
        raise ValidationError("users", f"must be between 1 and {_MAX_USERS}")
    tag = uuid.uuid4().hex[:8]
    report = DemoReport(tag, [RouteUsage(r.kind, r.backend, r.location) for r in store.routes()])
    record = _Recorder(report)
    state = _State(tag, [f"demo-{tag}-user-{i}" for i in range(users)])

    @asynccontextmanager
    async def section(name: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:  # a demo section reports its failure and the rest go on
            report.failures.append(f"{name}: {describe_failure(exc)}")
            if progress:
                progress("failed", name, describe_failure(exc))
        else:
            if progress:
                progress("done", name, f"{time.perf_counter() - started:.2f} s")

    started = time.perf_counter()
    for name, run in _SECTIONS:
        async with section(name):
            await run(store, record, state, report)
    report.seconds = time.perf_counter() - started
    return report


@dataclass(slots=True)
class _State:
    tag: str
    user_ids: list[str]
    project_id: str | None = None
    task_ids: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


async def _entities(
    store: NexusStore, record: _Recorder, state: _State, report: DemoReport
) -> None:
    from nexus_store.postgres.models import Organization, OrganizationMember, Project, Task, User

    entities = store.entities
    org = await record(
        "entities.create",
        entities.create(Organization, name=f"Demo {state.tag}", slug=f"demo-{state.tag}"),
        kind="entity",
    )
    created = []
    for i in range(len(state.user_ids)):
        user = await record(
            "entities.create",
            entities.create(
                User,
                email=f"user{i}.{state.tag}@example.com",
                username=f"u{i}_{state.tag}",
                password_hash=_UNUSABLE_PASSWORD_HASH,
                full_name=f"Demo User {i}",
            ),
            kind="entity",
        )
        await record(
            "entities.create",
            entities.create(
                OrganizationMember,
                organization_id=org.id,
                user_id=user.id,
                role="owner" if i == 0 else "member",
            ),
            kind="entity",
        )
        created.append(user)
    state.user_ids = [str(user.id) for user in created]
    project = await record(
        "entities.create",
        entities.create(Project, organization_id=org.id, owner_id=created[0].id, name="Launch"),
        kind="entity",
    )
    state.project_id = str(project.id)
    for i, user in enumerate(created):
        for title in ("write the spec", "ship it"):
            task = await record(
                "entities.create",
                entities.create(
                    Task, project_id=project.id, assignee_id=user.id, title=f"{title} #{i}"
                ),
                kind="entity",
            )
            state.task_ids.append(str(task.id))
    done = await record(
        "entities.update",
        entities.update(Task, state.task_ids[0], status="done", completed_at=datetime.now(UTC)),
    )
    page = await record(
        "entities.list", entities.list(Task, where={"project_id": project.id}, limit=100)
    )
    report.findings["tasksInProject"] = len(page.items)
    report.findings["firstTaskStatus"] = done.status


async def _events(store: NexusStore, record: _Recorder, state: _State, report: DemoReport) -> None:
    events = store.events
    for user_id in state.user_ids:
        await record("events.track", events.track("signup", user_id=user_id), kind="event")
        for path in ("/", "/projects", "/tasks"):
            await record(
                "events.track",
                events.track(
                    "page_view", user_id=user_id, properties={"path": path, "run": state.tag}
                ),
                kind="event",
            )
    for i, task_id in enumerate(state.task_ids):
        await record(
            "events.track",
            events.track(
                "task_created",
                user_id=state.user_ids[i % len(state.user_ids)],
                properties={"task_id": task_id, "run": state.tag},
            ),
            kind="event",
        )
    # flush() waits for MongoDB as long as it takes; the demo waits as long as the store's
    # close would (events.close_timeout), then reports the section as failed.
    bound = store.settings.events.close_timeout
    try:
        async with asyncio.timeout(bound):
            await record("events.flush", events.flush())
    except TimeoutError:
        raise BackendUnavailableError(
            "mongo",
            f"events not stored within events.close_timeout={bound} s "
            f"(last error: {events.stats().last_error or 'none'})",
        ) from None
    top = await record(
        "events.top_events", events.top_events(start=state.started, end=datetime.now(UTC), limit=5)
    )
    report.findings["topEvents"] = {count.name: count.count for count in top}
    writer_stats = json_ready(events.stats())
    report.findings["eventWriter"] = {k: v for k, v in writer_stats.items() if k != "lastError"}


async def _audit(store: NexusStore, record: _Recorder, state: _State, report: DemoReport) -> None:
    audit = store.audit
    entries = []
    for user_id in state.user_ids:
        entries.append(
            await record(
                "audit.record",
                audit.record("system", "create", "user", user_id, after={"run": state.tag}),
                kind="audit",
            )
        )
    if state.task_ids:
        entries.append(
            await record(
                "audit.record",
                audit.record(
                    f"user:{state.user_ids[0]}",
                    "update",
                    "task",
                    state.task_ids[0],
                    before={"status": "todo"},
                    after={"status": "done"},
                    reason="demo",
                ),
                kind="audit",
            )
        )
    if not entries:
        return
    first, last = entries[0], entries[-1]
    verified = await record("audit.verify", audit.verify(first.seq, last.seq))
    report.findings["auditChain"] = (
        f"verified {verified.checked} entries"
        if verified.ok
        else f"broken at seq {verified.first_broken_seq}: {verified.reason}"
    )
    if not verified.ok:
        raise RuntimeError(report.findings["auditChain"])


async def _sessions(
    store: NexusStore, record: _Recorder, state: _State, report: DemoReport
) -> None:
    sessions = store.sessions
    tokens = []
    for user_id in state.user_ids:
        tokens.append(
            await record(
                "sessions.create",
                sessions.create(user_id, {"role": "member", "run": state.tag}),
                kind="session",
            )
        )
    for token in tokens:
        await record("sessions.get", sessions.get(token))
    await record("sessions.revoke", sessions.revoke(tokens[-1]))
    report.findings["sessionsAfterLogout"] = sum(
        [await sessions.get_or_none(token) is not None for token in tokens]
    )


async def _cache(store: NexusStore, record: _Recorder, state: _State, report: DemoReport) -> None:
    loads = 0

    async def project_summary() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        return {"project": state.project_id, "tasks": len(state.task_ids)}

    key = f"demo:{state.tag}:project-summary"
    for _ in range(3):
        await record(
            "cache.get_or_set",
            store.cache.get_or_set(key, project_summary, ttl=60),
            kind="cache",
            records=0,
        )
    await record(
        "cache.set", store.cache.set(f"demo:{state.tag}:greeting", "hello", ttl=60), kind="cache"
    )
    # get_or_set stores the value once, on the first (missing) call.
    _credit(report, "cache", loads)
    report.findings["cacheLoaderCalls"] = f"{loads} load for 3 reads"


async def _rate_limit(
    store: NexusStore, record: _Recorder, state: _State, report: DemoReport
) -> None:
    allowed = refused = 0
    for _ in range(7):
        result = await record(
            "limiter.hit",
            store.limiter.hit(f"demo:{state.tag}:api-key", "5/minute"),
            kind="ratelimit",
        )
        allowed += result.allowed
        refused += not result.allowed
    report.findings["rateLimit5PerMinute"] = f"{allowed} allowed, {refused} refused of 7"


async def _queue(store: NexusStore, record: _Recorder, state: _State, report: DemoReport) -> None:
    queue, name = store.queue, f"demo-{state.tag}-emails"
    for user_id in state.user_ids:
        await record(
            "queue.enqueue",
            queue.enqueue(name, {"template": "welcome", "user_id": user_id}),
            kind="queue",
        )
    deliveries = await record(
        "queue.consume", queue.consume(name, "mailer", "worker-1", count=len(state.user_ids))
    )
    await record("queue.ack", queue.ack(name, "mailer", *(d.id for d in deliveries)))
    stats = await queue.stats(name)
    report.findings["queue"] = (
        f"{len(deliveries)} delivered and acked, {stats.groups['mailer'].pending} pending"
    )


async def _realtime(
    store: NexusStore, record: _Recorder, state: _State, report: DemoReport
) -> None:
    channel = f"demo-{state.tag}-project"
    async with store.realtime.subscribe(channel) as messages:
        receivers = await record(
            "realtime.publish",
            store.realtime.publish(
                channel, {"event": "task.updated", "task_id": state.task_ids[:1]}
            ),
            kind="realtime",
        )
        async with asyncio.timeout(_REALTIME_WAIT):
            received = await anext(messages)
    report.findings["realtime"] = (
        f"published to {channel}: {receivers} subscriber(s), received {received.message['event']}"
    )


def _credit(report: DemoReport, kind: str, records: int) -> None:
    for route in report.routes:
        if route.kind == kind:
            route.count += records


_SectionRun = Callable[["NexusStore", _Recorder, _State, DemoReport], Awaitable[None]]
_SECTIONS: tuple[tuple[str, _SectionRun], ...] = (
    ("entities (PostgreSQL)", _entities),
    ("events (MongoDB)", _events),
    ("audit (MongoDB)", _audit),
    ("sessions (Redis)", _sessions),
    ("cache (Redis)", _cache),
    ("rate limit (Redis)", _rate_limit),
    ("queue (Redis)", _queue),
    ("realtime (Redis)", _realtime),
)
