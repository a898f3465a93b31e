"""Running the relay as a service: one pass, or until SIGINT/SIGTERM.

Both ``python -m nexus_store.outbox`` and ``nexus-store outbox relay`` run it.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

from nexus_store.store import NexusStore

if TYPE_CHECKING:
    from nexus_store.settings import NexusSettings

__all__ = ["run_relay"]


async def run_relay(settings: NexusSettings, *, once: bool) -> int:
    """Deliver the outbox: one pass (``once``), or until SIGINT/SIGTERM. Returns rows delivered."""
    async with NexusStore(settings) as store:
        if once:
            return await store.outbox.relay_once()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        store.outbox.start_relay()
        await stop.wait()
        await store.outbox.stop()
        return (await store.outbox.lag()).delivered
