"""Rate-limited requests per second through the ASGI integration's middleware, against a
hand-written middleware that a user would write instead: the same Starlette app, the raw
GCRA script by EVALSHA on a default redis-py asyncio client, and the two draft headers
formatted by hand.

    python -m bench.run --only integrations --repeats 3

Requests are ASGI calls in process (no HTTP server, no sockets but Redis's), so the figure
is the integration's own cost per request: key extraction, the check, the decision's
headers. Every request passes (the limit is far above the load). 32 tasks, one pool.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.harness import Pair, async_rate
from bench.scenarios.redis_ratelimit import AMOUNT, LIMIT, RAW_GCRA
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.integrations.asgi import STATE_KEY, RateLimitMiddleware

BURSTS = 20
CALLS = 640  # per burst, over all tasks
TASKS = 32


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


class _HandWritten:
    """What an application writes without the integration: raw EVALSHA, headers by hand."""

    def __init__(self, app: ASGIApp, client: redis.asyncio.Redis, sha: str, prefix: str) -> None:
        self.app, self.client, self.sha, self.prefix = app, client, sha, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = f"{self.prefix}:{scope['client'][0]}"
        allowed, remaining, _, retry = await self.client.evalsha(
            self.sha, 1, key, AMOUNT, 1_000_000, 1
        )
        extra = [
            (b"ratelimit-policy", f'"default";q={AMOUNT};w=1'.encode()),
            (b"ratelimit", f'"default";r={remaining};t=1'.encode()),
        ]
        if not allowed:
            await PlainTextResponse("refused", 429, {"Retry-After": str(retry)})(
                scope, receive, send
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _request(app: ASGIApp) -> Any:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def request(task: int) -> None:
        statuses: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"",
            "headers": [(b"host", b"bench")], "client": (f"10.0.0.{task}", 5000),
            "server": ("bench", 80),
        }  # fmt: skip
        await app(scope, receive, send)
        assert statuses == [200], statuses

    return request


async def scenarios(env: Stack) -> list[Pair]:
    store = NexusStore(env.settings())
    sdk_app = _app()
    sdk_app.add_middleware(RateLimitMiddleware, limits=LIMIT)
    setattr(sdk_app.state, STATE_KEY, store)  # what lifespan() does at start-up

    database = env.settings().redis.databases.ratelimit
    raw_client = redis.asyncio.Redis.from_url(env.redis_url, db=database, max_connections=TASKS)
    raw_app = _app()
    prefix = f"{env.redis_namespace}:asgi-raw"

    async def setup() -> None:
        sha = await raw_client.script_load(RAW_GCRA)
        raw_app.add_middleware(_HandWritten, client=raw_client, sha=sha, prefix=prefix)
        await _request(sdk_app)(0)
        await _request(raw_app)(0)

    async def teardown() -> None:
        await store.close()
        await raw_client.aclose()

    return [
        Pair(
            "ASGI rate-limited request, in process, 32 tasks",
            "requests/s",
            async_rate(_request(sdk_app), CALLS, TASKS),
            async_rate(_request(raw_app), CALLS, TASKS),
            target="report",
            raw_label="hand-written middleware, raw EVALSHA GCRA",
            bursts=BURSTS,
            setup=setup,
            teardown=teardown,
        )
    ]
