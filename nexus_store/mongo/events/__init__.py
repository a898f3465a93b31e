"""Analytics events: the :class:`Event` model and ``store.events`` (:class:`Events`), which
writes through a buffered :class:`EventWriter` and queries through :class:`EventQueries`.

event_id = await store.events.track("signup", user_id="u1", properties={"plan": "pro"})
await store.events.flush()
"""

from nexus_store.mongo.events.model import Event
from nexus_store.mongo.events.queries import (
    EventCount,
    EventQueries,
    FunnelStep,
    IntervalCount,
    TimelinePage,
)
from nexus_store.mongo.events.service import Events
from nexus_store.mongo.events.writer import EventWriter, WriterStats

__all__ = [
    "Event",
    "EventCount",
    "EventQueries",
    "EventWriter",
    "Events",
    "FunnelStep",
    "IntervalCount",
    "TimelinePage",
    "WriterStats",
]
