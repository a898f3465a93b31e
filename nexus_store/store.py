"""The ``NexusStore`` facade: one object, every backend, every sub-API."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import structlog

from nexus_store._errors import describe
from nexus_store.connections import Backends, import_path
from nexus_store.errors import ConfigurationError, ValidationError
from nexus_store.log import configure_logging, get_logger
from nexus_store.routing import ROUTES, Route, RouteSpec
from nexus_store.settings import NexusSettings

if TYPE_CHECKING:
    from pathlib import Path

    from nexus_store.health import HealthReport
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

# sub-API attribute -> class path; each class takes a ``Backends`` and may define ``aclose()``.
_SUBAPIS: dict[str, str] = {
    "entities": "nexus_store.postgres.repository:EntityRepository",
    "events": "nexus_store.mongo.events.service:Events",
    "audit": "nexus_store.mongo.audit.log:AuditLog",
    "sessions": "nexus_store.redis.sessions:SessionStore",
    "cache": "nexus_store.redis.cache:Cache",
    "limiter": "nexus_store.redis.ratelimit.limiter:RateLimiter",
    "realtime": "nexus_store.redis.realtime:Realtime",
    "queue": "nexus_store.redis.queue:Queue",
    "outbox": "nexus_store.outbox.relay:OutboxRelay",
    "privacy": "nexus_store.privacy.service:Privacy",
}



class NexusStore:
    """One storage interface; each kind of record goes to the store that suits it.

        async with NexusStore.from_env() as store:
            user = await store.entities.create(User, email="ada@example.com", username="ada")
            await store.events.track("signup", user_id=str(user.id))
            await store.audit.record("system", "create", "user", str(user.id))
            token = await store.sessions.create(str(user.id), {"role": "admin"})
            print(store.routes())

    Sub-APIs: ``entities`` (PostgreSQL), ``events`` and ``audit`` (MongoDB), ``sessions``,
    ``cache``, ``limiter``, ``realtime`` and ``queue`` (Redis). Each is built on first use.
    """

    def __init__(self, settings: NexusSettings | None = None) -> None:
        self.settings = settings if settings is not None else NexusSettings.load()
        if not structlog.is_configured():
            configure_logging(self.settings.log)
        self.backends = Backends(self.settings)
        self._apis: dict[str, Any] = {}
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
        :class:`BackendUnavailableError` when used, and the others keep working. Returns
        ``{backend: None | error}``.
        """
        timeout = ping_timeout if ping_timeout is not None else self.settings.health.timeout

        async def ping(name: str) -> str | None:
            try:
                backend = getattr(self.backends, name)
                await asyncio.wait_for(backend.ping(), timeout)
            except Exception as exc:
                _log.warning("backend_unreachable", backend=name, error=describe(exc))
                return describe(exc)
            return None

        names = self.backends.configured()
        results = await asyncio.gather(*(ping(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        """Flush buffered writes, then close every backend, even those that failed."""
        if self._closed:
            return
        self._closed = True
        for name, api in reversed(list(self._apis.items())):
            closer = getattr(api, "aclose", None)
            if closer is None:
                continue
            try:
                await closer()
            except Exception as exc:
                _log.error("subapi_close_failed", api=name, error=describe(exc))
        await self.backends.close()

    # -- sub-APIs --------------------------------------------------------------------------

    def _api(self, name: str) -> Any:
        api = self._apis.get(name)
        if api is None:
            if self._closed:
                raise ConfigurationError(f"this NexusStore is closed; {name} is not available")
            api = import_path(_SUBAPIS[name])(self.backends)
            self._apis[name] = api
        return api

    def started(self, name: str) -> Any | None:
        """The sub-API ``name`` if something already used it, else None (never builds one).

        Health checks use it to report the event writer without starting one.
        """
        return self._apis.get(name)

    @property
    def entities(self) -> EntityRepository:
        return self._api("entities")  # type: ignore[no-any-return]

    @property
    def events(self) -> Events:
        return self._api("events")  # type: ignore[no-any-return]

    @property
    def audit(self) -> AuditLog:
        return self._api("audit")  # type: ignore[no-any-return]

    @property
    def sessions(self) -> SessionStore:
        return self._api("sessions")  # type: ignore[no-any-return]

    @property
    def cache(self) -> Cache:
        return self._api("cache")  # type: ignore[no-any-return]

    @property
    def limiter(self) -> RateLimiter:
        return self._api("limiter")  # type: ignore[no-any-return]

    @property
    def realtime(self) -> Realtime:
        return self._api("realtime")  # type: ignore[no-any-return]

    @property
    def queue(self) -> Queue:
        return self._api("queue")  # type: ignore[no-any-return]

    @property
    def outbox(self) -> OutboxRelay:
        return self._api("outbox")  # type: ignore[no-any-return]

    @property
    def privacy(self) -> Privacy:
        return self._api("privacy")  # type: ignore[no-any-return]

    # -- routing ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The routing table with each kind's backend and its location there."""
        return [
            Route(
                spec.kind,
                spec.backend,
                self._location(spec),
                spec.api,
                spec.record_type,
                spec.description,
            )
            for spec in ROUTES
        ]

    def _location(self, spec: RouteSpec) -> str:
        settings = self.settings
        if spec.backend == "postgres":
            url = settings.postgres.url
            database = urlsplit(url.get_secret_value()).path.lstrip("/") if url else "?"
            return f"database {database}"
        if spec.backend == "mongo":
            section = getattr(settings, spec.api)
            return f"{settings.mongo.database}.{section.collection}"
        area = "ratelimit" if spec.api == "limiter" else spec.api
        if settings.redis.cluster:
            return f"cluster prefix {settings.redis.namespace}:{area}:"
        return f"db {getattr(settings.redis.databases, area)}"

    async def put(self, record: Any) -> Any:
        """Store ``record`` where its kind belongs and return what that store returns.

        An entity goes to PostgreSQL, an ``Event`` to MongoDB events, an ``AuditRecord`` to
        the audit log, a ``NewSession`` to Redis (returning the token)...
        """
        spec = self._route_for(type(record))
        return await self._api(spec.api).put(record)

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

    async def health(self, *, probe: str = "readiness") -> HealthReport:
        """The ``application/health+json`` report of every configured backend."""
        from nexus_store.health import check_health

        return await check_health(self, probe=probe)
