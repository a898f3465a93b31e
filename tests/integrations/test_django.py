"""The Django integration with Django's own test client and settings (configured here, no
project skeleton), against real Redis: rate-limit middleware, health views, the session
backend on ``store.sessions``, and the blocking store they share."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from http_sfv import List

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings
from nexus_store.errors import BackendUnavailableError, ValidationError
from nexus_store.integrations import django as integration
from tests.support import FAST_FAILURE, assert_health_json, require_redis_server

TOKEN = re.compile(r"[0-9a-f]{4}\.[A-Za-z0-9_-]{43}")


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello")


def counter(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(str(request.session["n"]))


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    request.session["_auth_user_id"] = request.GET["user"]
    return HttpResponse("ok")


urlpatterns = [
    path("hello", hello),
    path("counter", counter),
    path("login", login),
    *integration.health_urls(),
]


def _api_key(request: HttpRequest) -> str:
    return "api:" + request.headers.get("X-Api-Key", "none")


def _strict_api_key(request: HttpRequest) -> str:
    return "api:" + request.headers["X-Api-Key"]  # KeyError without the header: a bug


DJANGO_SETTINGS: dict[str, Any] = {
    "SECRET_KEY": "test-only",
    "ALLOWED_HOSTS": ["testserver"],
    "ROOT_URLCONF": __name__,
    "MIDDLEWARE": [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "nexus_store.integrations.django.RateLimitMiddleware",
    ],
    "SESSION_ENGINE": "nexus_store.integrations.django",
    "NEXUS_RATELIMIT": {"limits": "10000/hour", "exempt": ["/health/live", "/health/ready"]},
}


@pytest.fixture(scope="module")
def django_settings(stack: Stack) -> Iterator[NexusSettings]:
    """Django configured once per process (another module may have done it: everything this
    module relies on is overridden here); each test's store follows NEXUS_STORE."""
    redis_only = stack.only("redis").settings()
    if not settings.configured:
        settings.configure(**DJANGO_SETTINGS, NEXUS_STORE=redis_only)
        django.setup()
    try:
        with override_settings(**DJANGO_SETTINGS, NEXUS_STORE=redis_only):
            yield redis_only
    finally:
        integration.close_blocking_store()


def _sf_list(value: str) -> list[tuple[Any, dict[str, Any]]]:
    parsed = List()
    parsed.parse(value.encode("ascii"))
    return [(item.value, dict(item.params)) for item in parsed]


def test_middleware_headers_on_every_response_and_exact_429(
    django_settings: NexusSettings, unique: str
) -> None:
    config = {"limits": "3/hour;100/day", "key": f"{__name__}._api_key", "names": ["h", "d"]}
    with override_settings(NEXUS_RATELIMIT=config):
        client = Client(headers={"X-Api-Key": unique})
        responses = [client.get("/hello") for _ in range(5)]
        missing = client.get("/no-such-page")
    assert [response.status_code for response in responses] == [200, 200, 200, 429, 429]
    assert missing.status_code == 429  # a 404 would be counted too: it is a request
    for response in [*responses, missing]:
        policies = _sf_list(response["RateLimit-Policy"])
        assert policies == [("h", {"q": 3, "w": 3600}), ("d", {"q": 100, "w": 86400})]
        ((name, params),) = _sf_list(response["RateLimit"])
        assert name == "h"
        if response.status_code == 429:
            assert params == {"r": 0, "t": int(response["Retry-After"])}
            assert response["Content-Type"] == "application/json"
        else:
            assert not response.has_header("Retry-After")
    assert [_sf_list(r["RateLimit"])[0][1]["r"] for r in responses[:3]] == [2, 1, 0]


def test_middleware_refuses_bad_configuration_at_start(django_settings: NexusSettings) -> None:
    bad = override_settings(NEXUS_RATELIMIT={"limits": "3/fortnight"})
    with bad, pytest.raises(ValidationError) as caught:
        Client().get("/hello")
    assert caught.value.field == "limits"


def test_a_key_callable_that_raises_is_a_validation_error_and_a_500(
    django_settings: NexusSettings, unique: str
) -> None:
    config = {"limits": "100/hour", "key": f"{__name__}._strict_api_key"}
    with override_settings(NEXUS_RATELIMIT=config):
        with pytest.raises(ValidationError) as caught:  # what Django's handler logs
            Client().get("/hello")
        # Django's own handling of an exception in a middleware: a 500, never a 429.
        answered = Client(raise_request_exception=False).get("/hello")
        keyed = Client(headers={"X-Api-Key": unique}).get("/hello")
    assert caught.value.field == "key" and "_strict_api_key raised KeyError" in str(caught.value)
    assert isinstance(caught.value.__cause__, KeyError)
    assert answered.status_code == 500 and not answered.has_header("RateLimit")
    assert keyed.status_code == 200 and keyed.has_header("RateLimit")


def test_health_views(django_settings: NexusSettings) -> None:
    client = Client()
    for url in ("/health/live", "/health/ready"):
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/health+json"
        assert response["Cache-Control"] == "no-store"
        assert not response.has_header("RateLimit")  # exempt
        assert_health_json(response.json())


def test_sessions_live_in_the_store(django_settings: NexusSettings) -> None:
    client = Client()
    assert [client.get("/counter").content for _ in range(3)] == [b"1", b"2", b"3"]
    token = client.cookies["sessionid"].value
    assert TOKEN.fullmatch(token)
    portal = integration.blocking_store()
    stored = portal.call(lambda store: store.sessions.get(token))
    assert stored.data == {"n": 3} and stored.user_id.startswith("django-anonymous:")

    # Logging in replaces the key and files the session under the Django user.
    assert client.get("/login", {"user": "42"}).status_code == 200
    new_token = client.cookies["sessionid"].value
    assert new_token != token
    assert portal.call(lambda store: store.sessions.get_or_none(token)) is None
    assert portal.call(lambda store: store.sessions.get(new_token)).user_id == "django:42"
    assert client.get("/counter").content == b"4"  # the data came along

    # Revoked in the store (everywhere for user 42): the next request starts afresh.
    assert portal.call(lambda store: store.sessions.revoke_all("django:42")) == 1
    assert client.get("/counter").content == b"1"
    assert Client(cookies={"sessionid": "nonsense"}).get("/counter").content == b"1"


def test_blocking_store_times_out_and_closes_within_bounds(
    django_settings: NexusSettings,
) -> None:
    portal = integration.BlockingStore(django_settings)
    try:

        async def slow(_: object) -> None:
            await asyncio.sleep(30)

        started = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            portal.call(slow, timeout=0.2)
        assert time.monotonic() - started < 5
    finally:
        started = time.monotonic()
        portal.close(timeout=5)
        assert time.monotonic() - started < 6


def test_redis_outage_is_503_with_retry_after(django_settings: NexusSettings) -> None:
    require_redis_server()
    redis = servers.RedisProcess().start()
    outage_settings = Stack.located(redis_url=redis.url, redis_namespace="django").settings(
        redis=FAST_FAILURE, ratelimit={"fail_mode": "fail_closed", "recheck_interval": 0.5}
    )
    integration.close_blocking_store()
    try:
        with override_settings(NEXUS_STORE=outage_settings):
            client = Client()
            assert client.get("/hello").status_code == 200
            redis.stop()
            refused = client.get("/hello")
            ready = client.get("/health/ready")
    finally:
        integration.close_blocking_store()
        redis.cleanup()
    assert refused.status_code == 503
    assert int(refused["Retry-After"]) >= 1
    assert not refused.has_header("RateLimit")
    assert ready.status_code == 503 and ready.json()["status"] == "fail"
