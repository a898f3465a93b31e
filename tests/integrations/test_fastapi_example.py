"""The example FastAPI app (``examples/fastapi_app``) on two real uvicorn worker processes,
driven by httpx over real HTTP, against real Redis (a private redis-server that the outage
test stops), PostgreSQL and MongoDB.

The exactness claim: however 50 concurrent clients spread over the two processes, an API key
gets exactly its quota (20 a day: no unit comes back during the test) with the fixed window
and with GCRA, because the count lives in one Lua script on Redis, not in a process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_sfv import List

from devstack import servers
from devstack.stack import Stack
from tests.support import FAST_FAILURE, assert_health_json, require_redis_server, run_cli

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"
QUOTA = 20
CLIENTS = 50


class Example:
    def __init__(self, app: servers.UvicornProcess, redis: servers.RedisProcess) -> None:
        self.app, self.redis = app, redis

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.app.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.app.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = self.get("/health/ready")
                if last.status_code == 200:
                    return
                last = last.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"the example never became ready: {last!r}\n{self.app.log}")


@pytest.fixture(scope="module")
def example(stack: Stack) -> Iterator[Example]:
    require_redis_server()
    redis = servers.RedisProcess().start()
    env = stack.environment(
        redis={"url": redis.url, **FAST_FAILURE},
        ratelimit={"fail_mode": "fail_closed", "recheck_interval": 0.5},
    )
    env |= {
        "NEXUS_LOG__LEVEL": "warning",
        "EXAMPLE_GLOBAL_LIMITS": "100000/hour",
        "EXAMPLE_QUOTA_LIMITS": f"{QUOTA}/day",
    }
    app = servers.UvicornProcess("app:app", app_dir=EXAMPLE, env=env, workers=2)
    try:
        init = run_cli("init", "-f", "json", env=env)  # schema, indexes: readiness passes
        assert init.returncode == 0, init.output
        app.start()
        example = Example(app, redis)
        example.wait_ready()
        yield example
    finally:
        app.cleanup()
        redis.cleanup()


def _sf_list(value: str) -> list[tuple[object, dict[str, object]]]:
    parsed = List()
    parsed.parse(value.encode("ascii"))
    return [(item.value, dict(item.params)) for item in parsed]


def _assert_rate_limit_headers(response: httpx.Response) -> None:
    """The draft's headers, parsed. The middleware and a route's dependency each add their
    policy and report (field lines that combine into one List, under distinct names); on a
    429 the refusing report has ``r=0`` and ``t`` equal to ``Retry-After``."""
    policies = dict(_sf_list(response.headers["RateLimit-Policy"]))
    reported = _sf_list(response.headers["RateLimit"])
    assert len(reported) == len(policies)
    for name, params in reported:
        assert name in policies and set(params) == {"r", "t"}
        assert 0 <= params["r"] <= policies[name]["q"]  # type: ignore[operator]
    if response.status_code == 429:
        retry_after = int(response.headers["Retry-After"])
        assert retry_after >= 1
        assert any(params == {"r": 0, "t": retry_after} for _, params in reported)
    else:
        assert "Retry-After" not in response.headers


async def _clients_on_both_workers(url: str) -> list[httpx.AsyncClient]:
    """CLIENTS clients, each holding one kept-alive connection, on both worker processes: a
    worker that accepts faster may take every new connection, so connections are reopened
    until both workers hold some (each client's worker is read from ``/items``)."""
    clients: list[httpx.AsyncClient] = []
    workers: dict[int, set[int]] = {}
    for _ in range(20):
        while len(clients) < CLIENTS:
            clients.append(httpx.AsyncClient(base_url=url, timeout=60))
        answers = await asyncio.gather(*(client.get("/items") for client in clients))
        workers = {}
        for index, answer in enumerate(answers):
            workers.setdefault(answer.json()["worker"], set()).add(index)
        if len(workers) == 2 and min(len(held) for held in workers.values()) >= CLIENTS // 5:
            return clients
        crowded = max(workers.values(), key=len)
        for index in sorted(crowded, reverse=True)[: CLIENTS // 3]:
            await clients.pop(index).aclose()
    for client in clients:
        await client.aclose()
    raise AssertionError(f"connections never reached both workers: {workers}")


@pytest.mark.parametrize("strategy", ["fixed_window", "gcra"])
async def test_exact_quota_per_key_under_50_concurrent_clients(
    example: Example, strategy: str
) -> None:
    api_key = f"key-{uuid.uuid4().hex[:10]}"
    other_key = f"key-{uuid.uuid4().hex[:10]}"
    clients = await _clients_on_both_workers(example.app.url)

    async def client(number: int) -> list[httpx.Response]:
        key = other_key if number == 0 else api_key
        http = clients[number]
        return [await http.get(f"/quota/{strategy}", headers={"X-Api-Key": key}) for _ in "ab"]

    try:
        batches = await asyncio.gather(*(client(number) for number in range(CLIENTS)))
    finally:
        for http in clients:
            await http.aclose()
    responses = [response for batch in batches for response in batch]
    own = responses[2:]  # client 0 used the other key
    statuses = [response.status_code for response in own]
    assert statuses.count(200) == QUOTA, statuses
    assert statuses.count(429) == len(own) - QUOTA
    assert [response.status_code for response in responses[:2]] == [200, 200]
    for response in responses:
        _assert_rate_limit_headers(response)
    quota_name = f"{QUOTA}/86400s"
    remaining = sorted(
        dict(_sf_list(r.headers["RateLimit"]))[quota_name]["r"]  # type: ignore[index]
        for r in own
        if r.is_success
    )
    assert remaining == list(range(QUOTA))  # each unit handed out once, none twice


def test_headers_on_every_response(example: Example) -> None:
    for response in (
        example.get("/items", params={"q": "x"}),
        example.get("/no-such-route"),
        example.get("/me"),
    ):
        assert response.status_code in (200, 401, 404)
        _assert_rate_limit_headers(response)
        policy = _sf_list(response.headers["RateLimit-Policy"])
        assert policy == [("100000/3600s", {"q": 100000, "w": 3600})]
    assert "RateLimit" not in example.get("/health/live").headers  # probes are exempt


def test_a_limit_checked_in_code_is_answered_by_the_handlers(example: Example) -> None:
    user = uuid.uuid4().hex[:8]
    responses = [example.get(f"/reports/{user}") for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 429]
    refused = responses[2]
    assert refused.json()["detail"] == "rate limit 2/day exceeded"
    assert _sf_list(refused.headers["RateLimit"])[0] == (
        "2/86400s",
        {"r": 0, "t": int(refused.headers["Retry-After"])},
    )


def test_sessions_answer_401_for_bad_tokens(example: Example) -> None:
    token = example.post("/login", params={"user": "ada"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    me = example.get("/me", headers=bearer)
    assert (me.status_code, me.json()["user"]) == (200, "ada")
    assert example.get("/me", cookies={"session": token}).status_code == 200
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic eA=="}):
        refused = example.get("/me", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert example.post("/logout", headers=bearer).json() == {"revoked": True}
    assert example.get("/me", headers=bearer).status_code == 401  # revoked


def test_health_routes(example: Example) -> None:
    for path in ("/health/live", "/health/ready"):
        response = example.get(path)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/health+json"
        assert response.headers["Cache-Control"] == "no-store"
        body = response.json()
        assert body["status"] in ("pass", "warn")
        assert_health_json(body)


def test_metrics_route_serves_the_sdk_metrics_to_prometheus(example: Example) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    example.get("/items")  # at least one limiter decision in some worker
    response = example.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "RateLimit" not in response.headers  # scrapes are exempt from the global limit
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"db_client_operation_duration_seconds", "nexus_store_limiter_decisions"} <= families


def test_redis_outage_is_503_never_429_then_recovers(example: Example) -> None:
    example.redis.stop()
    try:
        for path in ("/quota/gcra", "/items", "/reports/outage"):
            response = example.get(path, headers={"X-Api-Key": "outage"})
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) >= 1
            assert "RateLimit" not in response.headers  # nothing is known of what is left
        ready = example.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "fail"
        assert example.get("/health/live").status_code == 200  # liveness has no datastore
    finally:
        example.redis.start()
    deadline = time.monotonic() + 30
    while example.get("/items").status_code != 200:
        assert time.monotonic() < deadline, "no recovery after Redis came back"
        time.sleep(0.3)
    assert example.get("/quota/gcra", headers={"X-Api-Key": "after"}).status_code == 200
