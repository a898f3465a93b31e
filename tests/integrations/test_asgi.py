"""The ASGI integration on plain Starlette (FastAPI is not needed), on a real uvicorn server
and a private redis-server that the test stops: named policies, the opt-in legacy headers,
and the exception handlers' 429 and 503 for a limit checked in code; and, on FastAPI, key
callables that raise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_sfv import List
from starlette.applications import Starlette
from starlette.requests import Request

from devstack import servers
from devstack.stack import Stack
from nexus_store.errors import ConfigurationError, ValidationError
from nexus_store.integrations.asgi import RateLimitMiddleware, get_store
from tests.support import FAST_FAILURE, require_redis_server

pytestmark = pytest.mark.redis_server


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[servers.UvicornProcess, servers.RedisProcess]]:
    require_redis_server()
    redis = servers.RedisProcess().start()
    env = Stack.located(redis_url=redis.url, redis_namespace="asgi").environment(
        redis=FAST_FAILURE, ratelimit={"fail_mode": "fail_closed", "recheck_interval": 0.5}
    )
    env["NEXUS_LOG__LEVEL"] = "warning"
    app = servers.UvicornProcess(
        "_starlette_app:app", app_dir=Path(__file__).parent, env=env, workers=1
    )
    try:
        app.start()
        yield app, redis
    finally:
        app.cleanup()
        redis.cleanup()


@pytest.fixture(scope="module")
def keyed(
    served: tuple[servers.UvicornProcess, servers.RedisProcess],
) -> Iterator[servers.UvicornProcess]:
    _, redis = served
    env = Stack.located(redis_url=redis.url, redis_namespace="asgi-keys").environment()
    app = servers.UvicornProcess(
        "_fastapi_keys:app", app_dir=Path(__file__).parent, env=env, workers=1
    )
    try:
        app.start()
        yield app
    finally:
        app.cleanup()


def _sf_list(value: str) -> list[tuple[object, dict[str, object]]]:
    parsed = List()
    parsed.parse(value.encode("ascii"))
    return [(item.value, dict(item.params)) for item in parsed]


def test_named_policies_and_legacy_headers(
    served: tuple[servers.UvicornProcess, servers.RedisProcess],
) -> None:
    app, _ = served
    response = httpx.get(app.url + "/hello", timeout=30)
    assert response.status_code == 200
    assert _sf_list(response.headers["RateLimit-Policy"]) == [
        ("hourly", {"q": 1000, "w": 3600}),
        ("daily", {"q": 10000, "w": 86400}),
    ]
    ((name, params),) = _sf_list(response.headers["RateLimit"])
    assert name == "hourly" and params["r"] == int(response.headers["RateLimit-Remaining"])
    assert response.headers["RateLimit-Limit"] == "1000"
    assert int(response.headers["RateLimit-Reset"]) >= 1


def test_handlers_answer_checks_in_code_then_outages(
    served: tuple[servers.UvicornProcess, servers.RedisProcess],
) -> None:
    app, redis = served
    with httpx.Client(base_url=app.url, timeout=30) as http:
        assert http.get("/checked", params={"user": "a"}).status_code == 200
        refused = http.get("/checked", params={"user": "a"})
        assert refused.status_code == 429
        assert refused.json() == {"status": 429, "detail": "rate limit 1/day exceeded"}
        assert int(refused.headers["Retry-After"]) >= 1
        redis.stop()
        try:
            outage = http.get("/checked", params={"user": "b"})
            assert outage.status_code == 503  # BackendUnavailableError: not a 429, not a 500
            assert outage.headers["Retry-After"] == "1"
            assert outage.json()["detail"] == "redis unavailable; retry later"
            assert http.get("/hello").status_code == 503  # the middleware, same rule
        finally:
            redis.start()


def test_a_key_callable_that_raises_is_a_validation_error_answered_500(
    keyed: servers.UvicornProcess,
) -> None:
    for path in ("/dependency-key", "/middleware-key"):
        # One connection each: the server closes the one a 500 was answered on.
        broken = httpx.get(keyed.url + path, timeout=30)
        # The application's bug, not the client's and not an outage: 500, no headers.
        assert broken.status_code == 500, (path, broken.text)
        assert "RateLimit" not in broken.headers
        good = httpx.get(keyed.url + path, headers={"X-Api-Key": "k1"}, timeout=30)
        assert good.status_code == 200 and "RateLimit" in good.headers
    # The server logged the decorator's typed error, chained from what the key raised.
    log = keyed.log
    for key in ("api_key", "middleware_key"):
        assert f"ValidationError: key: the key callable {key} raised KeyError" in log, log
    assert "direct cause" in log and "KeyError: 'x-api-key'" in log


def test_bad_middleware_arguments_fail_at_start() -> None:
    app = Starlette()
    for bad, field in (
        ({"limits": "5/fortnight"}, "limits"),
        ({"limits": "5/second", "cost": 6}, "cost"),
        ({"limits": "5/second;9/minute", "names": ["only-one"]}, "policy_name"),
        ({"limits": "5/second", "strategy": "leaky"}, "strategy"),
    ):
        with pytest.raises(ValidationError) as caught:
            RateLimitMiddleware(app, **bad)  # type: ignore[arg-type]
        assert caught.value.field == field


async def test_no_lifespan_is_a_configuration_error() -> None:
    scope = {"type": "http", "app": Starlette(), "headers": [], "path": "/"}
    with pytest.raises(ConfigurationError, match="lifespan"):
        get_store(Request(scope))


def test_importing_nexus_store_imports_no_framework() -> None:
    code = (
        "import sys, nexus_store, nexus_store.integrations;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'django', 'fastapi')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
