"""The ``NexusStore`` facade: one object, every backend, every sub-API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

from nexus_store._errors import describe
from nexus_store.connections import BackendName, Backends
from nexus_store.errors import (
    BackendUnavailableError,
    NexusStoreError,
    StoreClosedError,
    ValidationError,
)
from nexus_store.log import get_logger, set_slow_threshold
from nexus_store.routing import ROUTES, Route, RouteSpec
from nexus_store.settings import NexusSettings

if TYPE_CHECKING:
    from pathlib import Path

    from nexus_store.approvals.service import Approvals
    from nexus_store.backup.service import Backup
    from nexus_store.health import HealthChecks, HealthReport
    from nexus_store.mongo.audit.log import AuditLog
    from nexus_store.mongo.events.service import Events
    from nexus_store.outbox.relay import OutboxRelay
    from nexus_store.postgres.repository import EntityRepository
    from nexus_store.privacy.service import Privacy
    from nexus_store.redis.cache import Cache
    from nexus_store.redis.queue import Queue
    from nexus_store.redis.ratelimit.limiter import RateLimiter
    from nexus_store.redis.realtime import Realtime
    from nexus_store.redis.sessions import SessionStore

__all__ = ["NexusStore"]

_log = get_logger("nexus_store.store")
_API = TypeVar("_API")


@runtime_checkable
class _Closing(Protocol):
    """A sub-API holding buffers or tasks: the store calls ``aclose()`` when it closes."""

    async def aclose(self) -> None: ...


class _Routed(Protocol):
    """A sub-API that a route reaches: ``NexusStore.put`` hands it the record."""

    async def put(self, record: Any) -> Any: ...


class NexusStore:
    """One storage interface; each kind of record goes to the store that suits it.

        async with NexusStore.from_env() as store:
            user = await store.entities.create(User, email="ada@example.com", username="ada")
            await store.events.track("signup", user_id=str(user.id))
            await store.audit.record("system", "create", "user", str(user.id))
            token = await store.sessions.create(str(user.id), {"role": "admin"})
            print(store.routes())

    Sub-APIs: ``entities`` (PostgreSQL), ``events`` and ``audit`` (MongoDB), ``sessions``,
    ``cache``, ``limiter``, ``realtime`` and ``queue`` (Redis), ``outbox`` (entity changes
    relayed from PostgreSQL to the MongoDB audit log) and ``privacy`` (one user's data
    exported from every store), ``approvals`` (changes applied once approved). Each is built
    on first use.
    """

    def __init__(self, settings: NexusSettings | None = None) -> None:
        self.settings = settings if settings is not None else NexusSettings.load()
        set_slow_threshold(self.settings.log.slow_threshold_ms)
        self.backends = Backends(self.settings)
        self._started: dict[str, object] = {}
        self._put_routes: dict[type, RouteSpec] = {}
        self._closed = False

    @classmethod
    def from_env(cls, config_file: str | Path | None = None, **overrides: Any) -> NexusStore:
        """Settings from the environment (and ``config_file`` or NEXUS_CONFIG)."""
        return cls(NexusSettings.load(config_file=config_file, **overrides))

    def __repr__(self) -> str:
        return f"NexusStore(backends={self.backends.configured()!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, ping_timeout: float | None = None) -> dict[str, str | None]:
        """Create every configured backend and ping them concurrently.

        An unreachable backend is logged, not raised: its sub-APIs raise
        :class:`BackendUnavailableError` when used, and the others keep working. A backup
        restore that was committed but not finished (its process killed) is finished first,
        on the reachable backends (:meth:`finish_restore`). Returns ``{backend: None | error}``.
        """
        timeout = ping_timeout if ping_timeout is not None else self.settings.health.timeout

        async def ping(name: BackendName) -> str | None:
            try:
                backend = self.backends.get(name)
                await asyncio.wait_for(backend.ping(), timeout)
            except Exception as exc:
                _log.warning("backend_unreachable", backend=name, error=describe(exc))
                return describe(exc)
            return None

        names = self.backends.configured()
        results = await asyncio.gather(*(ping(name) for name in names))
        found: dict[str, str | None] = dict(zip(names, results, strict=True))
        try:
            await self.finish_restore([name for name in names if found[name] is None])
        except BackendUnavailableError as exc:  # like an unreachable backend: its calls raise
            _log.warning("restore_not_checked", error=describe(exc))
        return found

    async def finish_restore(self, reachable: list[BackendName] | None = None) -> bool:
        """Finish a restore that was committed but not switched over everywhere (its process
        was killed), so that nothing reads some stores restored and others not; returns
        whether there was one. Run by :meth:`connect`, :meth:`health` and ``init``.

        Raises :class:`BackupError` when the restore needs a store that is not reachable.
        """
        from nexus_store.backup._pending import finish

        return await finish(self.backends, reachable) is not None

    async def close(self) -> None:
        """Flush buffered writes, then close every backend, even those that failed."""
        if self._closed:
            return
        self._closed = True
        for name, api in reversed(list(self._started.items())):
            if not isinstance(api, _Closing):
                continue
            try:
                await api.aclose()
            except Exception as exc:
                _log.error("subapi_close_failed", api=name, error=describe(exc))
        await self.backends.close()

    # -- sub-APIs --------------------------------------------------------------------------

    def _start(self, name: str, build: Callable[[Backends], _API]) -> _API:
        if self._closed:
            raise StoreClosedError(name)
        api = build(self.backends)
        self._started[name] = api
        return api

    def started(self, name: str) -> object | None:
        """The sub-API ``name`` if something already used it, else None (never builds one).

        Health checks use it to report the event writer without starting one.
        """
        return self._started.get(name)

    # Each sub-API module is imported on first use: it loads its backend's driver.

    @cached_property
    def entities(self) -> EntityRepository:
        from nexus_store.postgres.repository import EntityRepository

        return self._start("entities", EntityRepository)

    @cached_property
    def events(self) -> Events:
        from nexus_store.mongo.events.service import Events

        return self._start("events", Events)

    @cached_property
    def audit(self) -> AuditLog:
        from nexus_store.mongo.audit.log import AuditLog

        return self._start("audit", AuditLog)

    @cached_property
    def sessions(self) -> SessionStore:
        from nexus_store.redis.sessions import SessionStore

        return self._start("sessions", SessionStore)

    @cached_property
    def cache(self) -> Cache:
        from nexus_store.redis.cache import Cache

        return self._start("cache", Cache)

    @cached_property
    def limiter(self) -> RateLimiter:
        from nexus_store.redis.ratelimit.limiter import RateLimiter

        return self._start("limiter", RateLimiter)

    @cached_property
    def realtime(self) -> Realtime:
        from nexus_store.redis.realtime import Realtime

        return self._start("realtime", Realtime)

    @cached_property
    def queue(self) -> Queue:
        from nexus_store.redis.queue import Queue

        return self._start("queue", Queue)

    @cached_property
    def outbox(self) -> OutboxRelay:
        from nexus_store.outbox.relay import OutboxRelay

        return self._start("outbox", OutboxRelay)

    @cached_property
    def approvals(self) -> Approvals:
        from nexus_store.approvals.service import Approvals

        return self._start("approvals", Approvals)

    @cached_property
    def privacy(self) -> Privacy:
        from nexus_store.privacy.service import Privacy

        return self._start("privacy", Privacy)

    @cached_property
    def backup(self) -> Backup:
        from nexus_store.backup.service import Backup

        return self._start("backup", Backup)

    # -- routing ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The routing table with each kind's backend and its location there.

        Each configured backend says where it puts a kind; an unconfigured one has no
        location (``"not configured"``).
        """
        configured = self.backends.configured()
        return [
            Route(
                spec.kind,
                spec.backend,
                self._location(spec) if spec.backend in configured else "not configured",
                spec.api,
                spec.record_type,
                spec.description,
            )
            for spec in ROUTES
        ]

    def _location(self, spec: RouteSpec) -> str:
        match spec.backend:
            case "postgres":
                return self.backends.postgres.location()
            case "mongo":
                collection: str = getattr(self.settings, spec.api).collection
                return self.backends.mongo.location(collection)
            case "redis":
                if spec.redis_area is None:
                    raise ValueError(f"route {spec.kind!r} names no Redis area")
                return self.backends.redis.location(spec.redis_area)

    async def put(self, record: Any) -> Any:
        """Store ``record`` where its kind belongs and return what that store returns.

        An entity goes to PostgreSQL, an ``Event`` to MongoDB events, an ``AuditRecord`` to
        the audit log, a ``NewSession`` to Redis (returning the token)...
        """
        spec = self._route_for(type(record))
        api: _Routed = getattr(self, spec.api)
        return await api.put(record)

    def _route_for(self, record_type: type) -> RouteSpec:
        spec = self._put_routes.get(record_type)
        if spec is None:
            for candidate in ROUTES:
                if issubclass(record_type, candidate.resolve_type()):
                    spec = candidate
                    break
            else:
                kinds = ", ".join(route.kind for route in ROUTES)
                raise ValidationError(
                    "record", f"{record_type.__name__} has no route; routable kinds: {kinds}"
                )
            self._put_routes[record_type] = spec
        return spec

    # -- operations ------------------------------------------------------------------------

    @cached_property
    def health_checks(self) -> HealthChecks:
        """The application's own checks, run by :meth:`health` beside the built-in ones:
        ``store.health_checks.add("jobs:depth", check, probe="readiness")``."""
        from nexus_store.health import HealthChecks

        return HealthChecks()

    async def health(self, *, probe: str = "readiness") -> HealthReport:
        """The ``application/health+json`` report of every configured backend, and of the
        application's checks in :attr:`health_checks`."""
        from nexus_store._readiness import readiness_checks
        from nexus_store.health import check_health

        report = check_health(
            self, probe=probe, readiness=readiness_checks(), custom=self.health_checks
        )
        if probe != "readiness":  # liveness does no I/O
            return await report
        # A readiness probe also finishes a restore whose process was killed after its
        # commit, alongside the checks so that the report still comes within one timeout.
        done, _ = await asyncio.gather(report, self._finish_restore_within_timeout())
        return done

    async def _finish_restore_within_timeout(self) -> None:
        try:
            # Each step can run again; a store it needs that is down or hanging is what
            # its own check reports.
            async with asyncio.timeout(self.settings.health.timeout):
                await self.finish_restore()
        except (NexusStoreError, TimeoutError) as exc:
            _log.error("restore_not_finished", error=describe(exc))
