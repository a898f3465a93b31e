"""A Starlette app (no FastAPI) on the ASGI integration, served by uvicorn in
``test_asgi.py``: legacy headers and named policies on the middleware, and a limit checked in
code whose refusals and outages the exception handlers answer."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nexus_store.integrations.asgi import (
    RateLimitMiddleware,
    add_exception_handlers,
    add_health_routes,
    get_store,
    lifespan,
)


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


async def checked(request: Request) -> JSONResponse:
    await get_store(request).limiter.check("checked:" + request.query_params["user"], "1/day")
    return JSONResponse({"checked": True})


app = Starlette(routes=[Route("/hello", hello), Route("/checked", checked)], lifespan=lifespan())
app.add_middleware(
    RateLimitMiddleware,
    limits="1000/hour;10000/day",
    names=["hourly", "daily"],
    legacy=True,
    exempt={"/checked", "/health/live", "/health/ready"},
)
add_health_routes(app)
add_exception_handlers(app)
