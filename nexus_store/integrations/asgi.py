"""Starlette and FastAPI integration (extra ``asgi``; FastAPI is not needed, it builds on
Starlette).

    from fastapi import Depends, FastAPI
    from nexus_store.integrations.asgi import (
        RateLimit, RateLimitMiddleware, SessionAuth, add_exception_handlers, add_health_routes,
        lifespan,
    )

    app = FastAPI(lifespan=lifespan())              # opens and closes one NexusStore
    app.add_middleware(RateLimitMiddleware, limits="100/minute", exempt={"/health/live"})
    add_health_routes(app)                          # /health/live, /health/ready
    add_metrics_route(app)                          # /metrics (extra ``prometheus``)
    add_exception_handlers(app)                     # @rate_limit inside endpoints: 429/503
    current_session = SessionAuth()

    @app.get("/search", dependencies=[Depends(RateLimit("5/second"))])
    async def search(q: str, session=Depends(current_session)): ...

- :func:`lifespan` puts the store on ``app.state.nexus_store``; :func:`get_store` is the
  dependency (``store: NexusStore = Depends(get_store)``).
- :class:`RateLimitMiddleware` (every request) and :class:`RateLimit` (one route) key by client
  address unless given ``key=lambda request: ...``; every response carries the draft's
  ``RateLimit-Policy``/``RateLimit`` headers; a refusal is 429 with ``Retry-After``; an outage
  under ``fail_closed`` is 503 with ``Retry-After`` and a log line (see
  :mod:`nexus_store.integrations._http`).
- :class:`SessionAuth` reads a bearer token or a cookie: 401 for a missing, unknown, expired or
  revoked token, 503 when Redis is unreachable.
- :func:`add_health_routes` serves ``await store.health(probe=...)`` as
  ``application/health+json`` with ``Cache-Control: no-store``.
- :func:`add_metrics_route` serves the SDK's metrics to Prometheus
  (:mod:`nexus_store.telemetry.prometheus`; extra ``prometheus``).
"""

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_store.errors import BackendUnavailableError, ConfigurationError, RateLimitExceeded
from nexus_store.integrations._http import (
    Answer,
    OutageLog,
    RateLimitRule,
    error_answer,
    health_answer,
    rate_limit_answer,
)
from nexus_store.redis.ratelimit.limiter import RateLimitResult
from nexus_store.redis.sessions import Session
from nexus_store.store import NexusStore

# FastAPI reads the annotations of the dependencies' __call__ at run time: what they name
# (Request, Response, Session) is imported at run time, and this module does not use
# `from __future__ import annotations`, since FastAPI 0.115 cannot resolve string annotations of
# a callable instance. Only the names below are quoted.
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette

    from nexus_store.settings import NexusSettings

__all__ = [
    "RateLimit",
    "RateLimitMiddleware",
    "SessionAuth",
    "add_exception_handlers",
    "add_health_routes",
    "add_metrics_route",
    "client_address",
    "get_store",
    "lifespan",
]

STATE_KEY = "nexus_store"


def lifespan(
    settings: "NexusSettings | None" = None,
) -> "Callable[[Starlette], Any]":
    """A lifespan for ``Starlette(lifespan=...)``/``FastAPI(lifespan=...)``: opens one
    :class:`NexusStore` per worker process (``settings`` or ``NexusSettings.load()``), puts it
    on ``app.state.nexus_store`` and closes it at shutdown."""

    @asynccontextmanager
    async def run(app: "Starlette") -> AsyncIterator[None]:
        store = NexusStore(settings)
        await store.connect()
        setattr(app.state, STATE_KEY, store)
        try:
            yield
        finally:
            await store.close()

    return run


def _store_of(connection: HTTPConnection) -> NexusStore:
    store = getattr(connection.app.state, STATE_KEY, None)
    if not isinstance(store, NexusStore):
        raise ConfigurationError(
            "no NexusStore on app.state: create the app with "
            "lifespan=nexus_store.integrations.asgi.lifespan()"
        )
    return store


def get_store(request: Request) -> NexusStore:
    """The dependency: ``store: NexusStore = Depends(get_store)``."""
    return _store_of(request)


def client_address(request: Request) -> str:
    """The default rate-limit key: the client's address (``client:127.0.0.1``). Behind a
    proxy, run uvicorn with ``--proxy-headers`` and ``--forwarded-allow-ips`` so that this is
    the real client, or pass your own ``key``."""
    client = request.client
    return f"client:{client.host if client is not None else 'unknown'}"


def _send_answer(answer: Answer) -> Response:
    return Response(answer.body, answer.status or 200, answer.headers, answer.media_type)


class RateLimitMiddleware:
    """Rate-limits every HTTP request (pure ASGI: streaming responses pass untouched).

    ``app.add_middleware(RateLimitMiddleware, limits="100/minute", key=..., exempt={...})``;
    the arguments are those of :class:`~nexus_store.integrations._http.RateLimitRule`.
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: str,
        *,
        key: Callable[[Request], str] = client_address,
        cost: int = 1,
        strategy: str | None = None,
        names: Sequence[str] | None = None,
        legacy: bool = False,
        exempt: Collection[str] = (),
    ) -> None:
        self.app = app
        self.rule: RateLimitRule[Request] = RateLimitRule(
            limits, key, cost, strategy, names, legacy, frozenset(exempt)
        )
        self._outages = OutageLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.rule.exempt:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        _, answer = await _decide(request, self.rule, self._outages)
        if answer.status is not None:
            await _send_answer(answer)(scope, receive, send)
            return
        extra = [(name.lower().encode(), value.encode()) for name, value in answer.headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _decide(
    request: Request, rule: RateLimitRule[Request], outages: OutageLog
) -> tuple[RateLimitResult, Answer]:
    key = rule.key_of(request)
    limiter = _store_of(request).limiter
    result = await limiter.hit(key, rule.limits, cost=rule.cost, strategy=rule.strategy)
    # scope["path"], not request.url: building a URL costs more than the check's Python side.
    return result, rate_limit_answer(result, rule, outages, request.scope["path"])


class RateLimit:
    """A route dependency: ``Depends(RateLimit("5/second", key=...))``. It adds the headers to
    the route's response (through FastAPI's injected ``Response``), raises ``HTTPException``
    429 or 503 (with the headers) otherwise, and returns the decision."""

    def __init__(
        self,
        limits: str,
        *,
        key: Callable[[Request], str] = client_address,
        cost: int = 1,
        strategy: str | None = None,
        names: Sequence[str] | None = None,
        legacy: bool = False,
    ) -> None:
        self.rule: RateLimitRule[Request] = RateLimitRule(
            limits, key, cost, strategy, names, legacy
        )
        self._outages = OutageLog()

    async def __call__(self, request: Request, response: Response) -> RateLimitResult:
        result, answer = await _decide(request, self.rule, self._outages)
        if answer.status is not None:
            raise HTTPException(answer.status, answer.detail, answer.headers)
        response.headers.update(answer.headers)
        return result


class SessionAuth:
    """A dependency returning the live :class:`~nexus_store.redis.sessions.Session` of the
    request's bearer token (``Authorization: Bearer <token>``) or, failing that, of the
    ``cookie`` named here. 401 (``WWW-Authenticate: Bearer``) when there is none or it is
    unknown, expired or revoked; 503 when Redis is unreachable."""

    def __init__(self, *, cookie: str | None = "session", bearer: bool = True) -> None:
        self.cookie = cookie
        self.bearer = bearer

    def token(self, request: Request) -> str | None:
        if self.bearer:
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        if self.cookie is not None:
            return request.cookies.get(self.cookie) or None
        return None

    async def __call__(self, request: Request) -> Session:
        token = self.token(request)
        session = None
        if token is not None:
            try:
                session = await _store_of(request).sessions.get_or_none(token)
            except BackendUnavailableError:
                unavailable = "session store unavailable"
                raise HTTPException(503, unavailable, {"Retry-After": "1"}) from None
        if session is None:
            raise HTTPException(401, "no live session", {"WWW-Authenticate": "Bearer"})
        return session


def add_health_routes(
    app: "Starlette", *, liveness: str = "/health/live", readiness: str = "/health/ready"
) -> None:
    """Serve the liveness and readiness reports (GET) at these paths."""

    def endpoint(probe: str) -> Callable[[Request], Any]:
        async def health(request: Request) -> Response:
            report = await _store_of(request).health(probe=probe)
            return _send_answer(health_answer(report))

        return health

    app.add_route(liveness, endpoint("liveness"), methods=["GET"], include_in_schema=False)
    app.add_route(readiness, endpoint("readiness"), methods=["GET"], include_in_schema=False)


def add_metrics_route(
    app: "Starlette", path: str = "/metrics", *, registry: "CollectorRegistry | None" = None
) -> None:
    """Serve nexus-store's metrics (and the rest of ``registry``, prometheus-client's default
    one unless given) in Prometheus' text format at ``path`` (GET)."""
    from starlette.routing import Route

    from nexus_store.telemetry.prometheus import metrics_app

    metrics = metrics_app() if registry is None else metrics_app(registry)
    # A Route, not a Mount: a Mount would answer /metrics with a redirect to /metrics/.
    app.router.routes.append(Route(path, metrics, methods=["GET"], include_in_schema=False))


def add_exception_handlers(app: "Starlette") -> None:
    """Answer :class:`RateLimitExceeded` escaping an endpoint (``@rate_limit``,
    ``store.limiter.check``) with 429 and its headers, and :class:`BackendUnavailableError`
    with 503 and ``Retry-After``: an outage is never a 429 and never a 500."""

    async def exceeded(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RateLimitExceeded)
        detail = f"rate limit {exc.limit} exceeded"
        return _send_answer(error_answer(429, detail, dict(exc.headers())))

    async def unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BackendUnavailableError)
        detail = f"{exc.backend} unavailable; retry later"
        return _send_answer(error_answer(503, detail, {"Retry-After": "1"}))

    app.add_exception_handler(RateLimitExceeded, exceeded)
    app.add_exception_handler(BackendUnavailableError, unavailable)
