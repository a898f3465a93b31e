"""Redis backend: sessions, cache, rate limits, realtime and queues.

``close_default_store()`` closes the connections of the standalone ``@cached`` and
``@rate_limit`` decorators (see ``docs/redis.md``).
"""

from nexus_store.redis._default_store import close_default_store

__all__ = ["close_default_store"]
