"""Analytics events: the :class:`Event` model, the buffered writer and server-side queries.

event_id = await store.events.track("signup", user_id="u1", properties={"plan": "pro"})
await store.events.flush()
"""

from nexus_store.mongo.events.model import Event
from nexus_store.mongo.events.queries import EventCount, FunnelStep, IntervalCount, TimelinePage
from nexus_store.mongo.events.writer import EventStore, WriterStats

__all__ = [
    "Event",
    "EventCount",
    "EventStore",
    "FunnelStep",
    "IntervalCount",
    "TimelinePage",
    "WriterStats",
]
