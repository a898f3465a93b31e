"""A FastAPI service on nexus-store, using only ``nexus_store.integrations.asgi``.

Run it (settings come from ``NEXUS_*`` variables or a config file, as for any NexusStore):

    uvicorn app:app --app-dir examples/fastapi_app --workers 2

- every request is rate-limited per client address (``EXAMPLE_GLOBAL_LIMITS``);
- ``/quota/fixed_window`` and ``/quota/gcra`` have their own limit per API key (``X-Api-Key``),
  counted with a fixed window and with GCRA (``EXAMPLE_QUOTA_LIMITS``);
- ``/reports/{user}`` checks a limit in code (2 a day per user; refusals answered by the
  exception handlers);
- ``POST /login`` starts a session, ``GET /me`` needs it (bearer token or cookie),
  ``POST /logout`` ends it;
- ``/health/live`` and ``/health/ready`` are the Kubernetes probes (exempt from the limit).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from nexus_store import NexusStore
from nexus_store.integrations.asgi import (
    RateLimit,
    RateLimitMiddleware,
    SessionAuth,
    add_exception_handlers,
    add_health_routes,
    add_metrics_route,
    get_store,
    lifespan,
)
from nexus_store.redis.sessions import Session

GLOBAL_LIMITS = os.environ.get("EXAMPLE_GLOBAL_LIMITS", "100/second")
QUOTA_LIMITS = os.environ.get("EXAMPLE_QUOTA_LIMITS", "20/day")
# Kubernetes probes and Prometheus scrapes are not rate limited.
UNLIMITED = {"/health/live", "/health/ready", "/metrics"}


def api_key(request: Request) -> str:
    return "api-key:" + request.headers.get("x-api-key", "anonymous")


app = FastAPI(title="nexus-store example", lifespan=lifespan())
app.add_middleware(RateLimitMiddleware, limits=GLOBAL_LIMITS, exempt=UNLIMITED)
add_health_routes(app)
add_metrics_route(app)
add_exception_handlers(app)
current_session = SessionAuth(cookie="session")
Store = Annotated[NexusStore, Depends(get_store)]


@app.get("/items")
async def items(q: str = "") -> dict[str, Any]:
    return {"items": [q] if q else [], "worker": os.getpid()}


@app.get(
    "/quota/fixed_window",
    dependencies=[Depends(RateLimit(QUOTA_LIMITS, key=api_key, strategy="fixed_window"))],
)
async def quota_fixed() -> dict[str, Any]:
    return {"strategy": "fixed_window", "worker": os.getpid()}


@app.get(
    "/quota/gcra", dependencies=[Depends(RateLimit(QUOTA_LIMITS, key=api_key, strategy="gcra"))]
)
async def quota_gcra() -> dict[str, Any]:
    return {"strategy": "gcra", "worker": os.getpid()}


@app.get("/reports/{user}")
async def report(user: str, store: Store) -> dict[str, str]:
    # A limit checked in code: RateLimitExceeded becomes a 429 with its headers, an outage
    # under fail_closed a 503 (add_exception_handlers).
    await store.limiter.check(f"report:{user}", "2/day")
    return {"report": f"for {user}"}


@app.post("/login")
async def login(user: str, store: Store) -> dict[str, str]:
    # A real service checks a password or an identity provider first.
    return {"token": await store.sessions.create(user, {"user": user})}


@app.get("/me")
async def me(session: Annotated[Session, Depends(current_session)]) -> dict[str, Any]:
    return {"user": session.user_id, "data": session.data}


@app.post("/logout")
async def logout(
    request: Request, store: Store, _: Annotated[Session, Depends(current_session)]
) -> dict[str, bool]:
    token = current_session.token(request)
    assert token is not None  # current_session found a live session for it
    return {"revoked": await store.sessions.revoke(token)}
