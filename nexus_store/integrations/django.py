"""Django integration (extra ``django``): rate-limit middleware, health views and a session
backend on ``store.sessions``, for Django's synchronous views.

    # settings.py
    NEXUS_STORE = {"redis": {"url": "redis://127.0.0.1:6379"}}   # NexusSettings overrides
    NEXUS_RATELIMIT = {"limits": "100/minute", "exempt": ["/health/live", "/health/ready"]}
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "nexus_store.integrations.django.RateLimitMiddleware",
        ...
    ]
    SESSION_ENGINE = "nexus_store.integrations.django"           # sessions in store.sessions

    # urls.py
    from nexus_store.integrations.django import health_urls
    urlpatterns = [*health_urls(), ...]                          # /health/live, /health/ready

Django views are synchronous and the store is asynchronous: :class:`BlockingStore` owns one
:class:`NexusStore` on a background event-loop thread (a blocking portal, like anyio's) and
runs the store's coroutines there for the calling thread. :func:`blocking_store` is the one
the middleware, views and sessions share, built on first use from ``settings.NEXUS_STORE``
(overrides of :class:`NexusSettings`, on top of the ``NEXUS_*`` environment); it is closed at
interpreter exit, or by :func:`close_blocking_store` (bounded by its timeout). The rate
limiter has its own blocking twin (``hit_sync``) and does not go through the portal.

The middleware answers as the ASGI one does (:mod:`nexus_store.integrations._http`): the
draft's ``RateLimit-Policy``/``RateLimit`` headers on every response, 429 with
``Retry-After`` on a refusal, 503 with ``Retry-After`` and a log line when Redis is
unreachable under ``fail_closed``.

Sessions: a token of ``store.sessions`` is the session key (the cookie). A session is filed
under the user ``django:<user pk>`` once Django has logged someone in (the key is replaced at
that moment, as ``cycle_key`` would), so ``store.sessions.revoke_all("django:42")`` logs user
42 out everywhere; an anonymous session is filed under a user of its own. The expiry is set
when the session is created (``SESSION_COOKIE_AGE`` or ``set_expiry`` before the first save)
and slides with ``sessions.sliding``; Redis expires sessions itself, so ``clearsessions`` has
nothing to do.
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from django.conf import settings as django_settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.module_loading import import_string

from nexus_store._errors import describe
from nexus_store.errors import BackendUnavailableError, ConfigurationError, NotFoundError
from nexus_store.integrations._http import (
    Answer,
    OutageLog,
    RateLimitRule,
    health_answer,
    rate_limit_answer,
)
from nexus_store.log import get_logger
from nexus_store.settings import NexusSettings
from nexus_store.store import NexusStore

__all__ = [
    "BlockingStore",
    "RateLimitMiddleware",
    "SessionStore",
    "blocking_store",
    "client_address",
    "close_blocking_store",
    "health_liveness",
    "health_readiness",
    "health_urls",
]

T = TypeVar("T")
_log = get_logger("nexus_store.integrations")


class BlockingStore:
    """One :class:`NexusStore` owned by a background event-loop thread; :meth:`call` runs a
    coroutine of it from any other thread and waits for its result.

        portal = BlockingStore(NexusSettings.load())
        session = portal.call(lambda store: store.sessions.get_or_none(token))
        portal.close()
    """

    def __init__(self, settings: NexusSettings | None = None, *, timeout: float = 30.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nexus-store-portal", daemon=True
        )
        self._thread.start()
        self._closed = False
        self.store: NexusStore = self._wait(lambda: self._open(settings), timeout)

    @staticmethod
    async def _open(settings: NexusSettings | None) -> NexusStore:
        # Built on the loop thread, so that every pool the store creates belongs to its loop.
        store = NexusStore(settings)
        await store.connect()
        return store

    def call(
        self, function: Callable[[NexusStore], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """Run ``function(store)`` on the store's loop and return its result. Waiting longer
        than ``timeout`` seconds raises :class:`BackendUnavailableError` (the coroutine is
        cancelled). Must not be called from the store's own loop thread."""
        store = self.store
        return self._wait(lambda: function(store), timeout)

    def _wait(self, make: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        if threading.current_thread() is self._thread:
            raise ConfigurationError("BlockingStore.call from its own event-loop thread")

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise BackendUnavailableError(
                "store", f"no answer within {timeout} s on the store's event loop"
            ) from None

    def close(self, timeout: float = 10.0) -> None:
        """Close the store and stop its thread, waiting at most ``timeout`` seconds in all."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self.store.close(), self._loop).result(timeout)
        except (FutureTimeout, Exception) as exc:
            # Often at interpreter exit: report it, and stop the loop below either way.
            _log.warning("blocking_store_close_failed", error=describe(exc))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()


class _Shared:
    """The process's shared :class:`BlockingStore`, built on first use."""

    portal: BlockingStore | None = None
    lock = threading.Lock()


def blocking_store() -> BlockingStore:
    """The :class:`BlockingStore` shared by this module's middleware, views and sessions,
    built on first use from ``settings.NEXUS_STORE`` (a dict of setting overrides, or a
    :class:`NexusSettings`)."""
    with _Shared.lock:
        if _Shared.portal is None:
            configured = getattr(django_settings, "NEXUS_STORE", None) or {}
            settings = (
                configured
                if isinstance(configured, NexusSettings)
                else NexusSettings.load(**configured)
            )
            _Shared.portal = BlockingStore(settings)
            atexit.register(close_blocking_store)
        return _Shared.portal


def close_blocking_store(timeout: float = 10.0) -> None:
    """Close the shared :class:`BlockingStore` (the next use builds a new one)."""
    with _Shared.lock:
        portal, _Shared.portal = _Shared.portal, None
    if portal is not None:
        portal.close(timeout)


def _response(answer: Answer) -> HttpResponse:
    response = HttpResponse(
        answer.body, status=answer.status or 200, content_type=answer.media_type
    )
    for name, value in answer.headers.items():
        response[name] = value
    return response


# -- rate limiting ------------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The default rate-limit key: ``REMOTE_ADDR`` (behind a proxy, pass your own ``key``
    reading the header your proxy sets)."""
    return f"client:{request.META.get('REMOTE_ADDR') or 'unknown'}"


class RateLimitMiddleware:
    """Rate-limits every request by ``settings.NEXUS_RATELIMIT``: ``limits`` (required),
    ``key`` (a callable taking the request, or its dotted path; default
    :func:`client_address`), ``cost``, ``strategy``, ``names``, ``legacy`` and ``exempt``
    (paths), as :class:`~nexus_store.integrations._http.RateLimitRule` takes them."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        config = dict(getattr(django_settings, "NEXUS_RATELIMIT", None) or {})
        if "limits" not in config:
            raise ConfigurationError(
                "set NEXUS_RATELIMIT = {'limits': '100/minute', ...} in Django's settings",
                setting="NEXUS_RATELIMIT",
            )
        key = config.pop("key", client_address)
        self.rule: RateLimitRule[HttpRequest] = RateLimitRule(
            key=import_string(key) if isinstance(key, str) else key, **config
        )
        self._outages = OutageLog()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rule = self.rule
        if request.path in rule.exempt:
            return self.get_response(request)
        key = rule.key_of(request)
        limiter = blocking_store().store.limiter
        result = limiter.hit_sync(key, rule.limits, cost=rule.cost, strategy=rule.strategy)
        answer = rate_limit_answer(result, rule, self._outages, request.path)
        if answer.status is not None:
            return _response(answer)
        response = self.get_response(request)
        for name, value in answer.headers.items():
            response[name] = value
        return response


# -- health -------------------------------------------------------------------------------


def _health(probe: str) -> HttpResponse:
    report = blocking_store().call(lambda store: store.health(probe=probe))
    return _response(health_answer(report))


def health_liveness(request: HttpRequest) -> HttpResponse:
    """The liveness report (no datastore is asked): ``application/health+json``."""
    return _health("liveness")


def health_readiness(request: HttpRequest) -> HttpResponse:
    """The readiness report: 200 for pass and warn, 503 for fail."""
    return _health("readiness")


def health_urls(liveness: str = "health/live", readiness: str = "health/ready") -> list[URLPattern]:
    """URL patterns for both probes (a Prometheus ``metrics`` view belongs next to them)."""
    return [
        path(liveness, health_liveness, name="nexus-health-live"),
        path(readiness, health_readiness, name="nexus-health-ready"),
    ]


# -- sessions -----------------------------------------------------------------------------


def _user_of(data: dict[str, Any]) -> str | None:
    user = data.get("_auth_user_id")  # django.contrib.auth.SESSION_KEY
    return None if user is None else f"django:{user}"


class SessionStore(SessionBase):  # type: ignore[misc]  # Django ships no type hints
    """Django's session backend on ``store.sessions`` (``SESSION_ENGINE =
    "nexus_store.integrations.django"``); see the module docs."""

    _session_key: str | None

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._user: str | None = None  # the store's user of the loaded session

    @staticmethod
    def _portal() -> BlockingStore:
        return blocking_store()

    def load(self) -> dict[str, Any]:
        key = self.session_key
        found = (
            None
            if key is None
            else self._portal().call(lambda store: store.sessions.get_or_none(key))
        )
        if found is None:
            self._session_key = None
            return {}
        self._user = found.user_id
        return dict(found.data)

    def exists(self, session_key: str) -> bool:
        found = self._portal().call(lambda store: store.sessions.get_or_none(session_key))
        return found is not None

    def create(self) -> None:
        self.save(must_create=True)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        data = self._get_session(no_load=must_create)
        wanted = _user_of(data)
        old_key = self.session_key
        if must_create or old_key is None or (wanted is not None and wanted != self._user):
            user = wanted or f"django-anonymous:{secrets.token_hex(12)}"
            ttl = self.get_expiry_age()
            self._session_key = self._portal().call(
                lambda store: store.sessions.create(user, data, ttl=ttl)
            )
            self._user = user
            if old_key is not None and not must_create:
                self.delete(old_key)  # logging in replaces the key, as cycle_key does
            return
        updated = self._portal().call(lambda store: _update(store, old_key, data))
        if not updated:
            raise UpdateError

    def delete(self, session_key: str | None = None) -> None:
        key = session_key if session_key is not None else self.session_key
        if key is None:
            return
        self._portal().call(lambda store: store.sessions.revoke(key))

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis expires sessions itself."""


async def _update(store: NexusStore, token: str, data: dict[str, Any]) -> bool:
    """``store.sessions.update``, False when the session is gone (expired, revoked)."""
    try:
        await store.sessions.update(token, data)
    except NotFoundError:
        return False
    return True
