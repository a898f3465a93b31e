"""A FastAPI app whose rate-limit key callables raise (the application's bug), served by
uvicorn in ``test_asgi.py``: the middleware and the ``RateLimit`` dependency raise the
decorator's ``ValidationError`` naming ``key``, which the server answers 500 and logs with its
cause, since ``add_exception_handlers`` maps only what the client or an outage caused."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from starlette.requests import Request

from nexus_store.integrations.asgi import (
    RateLimit,
    RateLimitMiddleware,
    add_exception_handlers,
    client_address,
    lifespan,
)

BROKEN_BY_MIDDLEWARE = "/middleware-key"


def api_key(request: Request) -> str:
    return "api-key:" + request.headers["x-api-key"]  # KeyError without the header


def middleware_key(request: Request) -> str:
    if request.scope["path"] == BROKEN_BY_MIDDLEWARE:
        return api_key(request)
    return client_address(request)


app = FastAPI(lifespan=lifespan())
app.add_middleware(RateLimitMiddleware, limits="1000/hour", key=middleware_key)
add_exception_handlers(app)


@app.get("/dependency-key", dependencies=[Depends(RateLimit("1000/hour", key=api_key))])
async def dependency_key() -> dict[str, bool]:
    return {"ok": True}


@app.get(BROKEN_BY_MIDDLEWARE)
async def broken_by_middleware() -> dict[str, bool]:
    return {"ok": True}
