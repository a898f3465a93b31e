"""``python -m nexus_store.outbox [--once]``: run the relay with settings from the environment.

The ``nexus-store outbox relay`` command does the same with the CLI's options and output.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from nexus_store.log import get_logger
from nexus_store.settings import NexusSettings
from nexus_store.store import NexusStore

_log = get_logger("nexus_store.outbox")


async def relay(settings: NexusSettings, *, once: bool) -> int:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nexus_store.outbox", description=__doc__)
    parser.add_argument("--once", action="store_true", help="deliver what is pending and exit")
    args = parser.parse_args(argv)
    delivered = asyncio.run(relay(NexusSettings.load(), once=args.once))
    print(f"delivered {delivered} outbox row(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
