"""The transactional outbox: rows written with business data, relayed to other stores."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from nexus_store.postgres.models.base import Base, non_negative

__all__ = ["Outbox"]


class Outbox(Base):
    """One message to deliver. ``id`` orders delivery; ``event_id`` is the idempotency key."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(
        unique=True, default=uuid.uuid4, server_default=func.gen_random_uuid()
    )
    topic: Mapped[str] = mapped_column(String(200))
    aggregate_type: Mapped[str | None] = mapped_column(String(100))
    aggregate_id: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    delivered_at: Mapped[datetime | None]
    attempts: Mapped[int] = non_negative(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # The relay scans only what is left to deliver, in order.
        Index("ix_outbox_undelivered", "id", postgresql_where=text("delivered_at IS NULL")),
    )
