"""HTTP response headers for a rate-limit decision.

Both header sets are rendered: the IETF draft (``draft-ietf-httpapi-ratelimit-headers``)
``RateLimit-Policy`` / ``RateLimit`` pair, the older and widely deployed
``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` set, and ``Retry-After``
when the call must wait.

    rate_limit_headers(limit=100, window_seconds=60, remaining=50, reset_after=30,
                       retry_after=0)
    # {'RateLimit-Policy': '"default";q=100;w=60', 'RateLimit': '"default";r=50;t=30',
    #  'RateLimit-Limit': '100', 'RateLimit-Remaining': '50', 'RateLimit-Reset': '30'}
"""

from __future__ import annotations

import math

from nexus_store.errors import RateLimitExceeded, ValidationError

__all__ = ["rate_limit_headers"]


def _policy_string(name: str) -> str:
    """``name`` as a structured-field string (RFC 8941 §3.3.3): printable ASCII, quoted."""
    if not name or any(not " " <= char <= "~" for char in name):
        raise ValidationError("policy_name", "must be non-empty printable ASCII")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(value: float) -> int:
    """Whole seconds, rounded up so that a client waiting that long is never early."""
    return max(0, math.ceil(value))


def rate_limit_headers(
    *,
    limit: int,
    window_seconds: float,
    remaining: int,
    reset_after: float,
    retry_after: float,
    policy_name: str = "default",
) -> dict[str, str]:
    """Headers for one decision; ``Retry-After`` only when ``retry_after`` is positive."""
    policy = _policy_string(policy_name)
    remaining = max(0, remaining)
    reset = _seconds(reset_after)
    headers = {
        "RateLimit-Policy": f"{policy};q={limit};w={_seconds(window_seconds)}",
        "RateLimit": f"{policy};r={remaining};t={reset}",
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }
    if retry_after > 0:
        headers["Retry-After"] = str(max(1, _seconds(retry_after)))
    return headers


def _exception_headers(exc: RateLimitExceeded, policy_name: str) -> dict[str, str]:
    return rate_limit_headers(
        limit=exc.amount,
        window_seconds=exc.window_seconds,
        remaining=exc.remaining,
        reset_after=exc.reset_after,
        retry_after=exc.retry_after,
        policy_name=policy_name,
    )


# errors.py imports nothing from the package, so its RateLimitExceeded.headers() is
# rendered from here.
RateLimitExceeded.header_renderer = _exception_headers
