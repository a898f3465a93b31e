"""A separate OS process hammering one standalone ``@rate_limit`` decorator.

    python -m tests.redis.ratelimit._decorator_worker KEY STRATEGY THREADS CALLS START_AT

Configured from the environment only (NEXUS_REDIS_URL, NEXUS_REDIS__NAMESPACE), like an
application would be. Waits until the wall-clock START_AT so that both processes contend,
then prints how many calls passed (and any unexpected error) as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from nexus_store.errors import RateLimitExceeded
from nexus_store.redis.ratelimit import rate_limit


def main() -> None:
    key, strategy, threads, calls, start_at = sys.argv[1:6]
    passed: list[int] = []
    failures: list[str] = []

    @rate_limit("100/hour", key=lambda: key, strategy=strategy)
    def work() -> None:
        passed.append(1)

    def client() -> None:
        for _ in range(int(calls)):
            try:
                work()
            except RateLimitExceeded:
                pass
            except Exception as exc:  # reported to the test, which fails with it
                failures.append(repr(exc))

    workers = [threading.Thread(target=client) for _ in range(int(threads))]
    time.sleep(max(0.0, float(start_at) - time.time()))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    print(json.dumps({"passed": len(passed), "failures": failures[:5]}))


if __name__ == "__main__":
    main()
