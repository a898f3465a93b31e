"""The answer rules both integrations share (``integrations/_http.py``), with a real outage:
Redis on a closed port, ``fail_closed``."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.integrations._http import OutageLog, RateLimitRule, rate_limit_answer
from tests.support import FAST_FAILURE

SECRET = "s3cret-Pa55"
RECHECK = 0.3


async def test_an_outage_is_a_503_logged_once_per_recheck_interval() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{servers.closed_port()}"
    settings = Stack.located(redis_url=url, redis_namespace="http").settings(
        redis=FAST_FAILURE, ratelimit={"fail_mode": "fail_closed", "recheck_interval": RECHECK}
    )
    rule: RateLimitRule[str] = RateLimitRule("5/second;50/minute", key=str)
    outages = OutageLog()
    async with NexusStore(settings) as store:
        with capture_logs() as logged:
            answers = []
            for _ in range(5):
                result = await store.limiter.hit("client:a", rule.limits)
                answers.append(rate_limit_answer(result, rule, outages, "/search"))
            await asyncio.sleep(RECHECK + 0.2)  # the limiter asks Redis again, and fails again
            result = await store.limiter.hit("client:a", rule.limits)
            answers.append(rate_limit_answer(result, rule, outages, "/search"))
    for answer in answers:
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "1"
        assert "RateLimit" not in answer.headers  # no quota is known, so none is claimed
        assert answer.headers["RateLimit-Policy"] == '"5/1s";q=5;w=1, "50/60s";q=50;w=60'
        assert answer.body == b'{"status":503,"detail":"rate limiter unavailable; retry later"}'
    refusals = [entry for entry in logged if entry["event"] == "ratelimit_unavailable_refused"]
    assert len(refusals) == 2, logged  # one per failed attempt to reach Redis, not per request
    assert refusals[0]["path"] == "/search" and refusals[0]["status"] == 503
    assert SECRET not in repr(logged)
