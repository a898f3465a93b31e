"""Rate limiting on Redis: ``store.limiter`` and the ``@rate_limit`` decorator.

    from nexus_store.redis.ratelimit import rate_limit

    @rate_limit("10/second;1000/hour", key=lambda user_id: user_id)
    async def fetch_report(user_id: str) -> bytes: ...

See ``docs/ratelimit.md``.
"""

from nexus_store.redis.ratelimit.decorator import default_limiter, rate_limit
from nexus_store.redis.ratelimit.headers import rate_limit_headers
from nexus_store.redis.ratelimit.limiter import RateLimiter, RateLimitHit, RateLimitResult
from nexus_store.redis.ratelimit.limits import RateLimitItem, RateLimits
from nexus_store.redis.ratelimit.parse import parse_limit, parse_limits
from nexus_store.redis.ratelimit.strategies import Strategy, get_strategy

__all__ = [
    "RateLimitHit",
    "RateLimitItem",
    "RateLimitResult",
    "RateLimiter",
    "RateLimits",
    "Strategy",
    "default_limiter",
    "get_strategy",
    "parse_limit",
    "parse_limits",
    "rate_limit",
    "rate_limit_headers",
]
