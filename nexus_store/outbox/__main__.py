"""``python -m nexus_store.outbox [--once]``: run the relay with settings from the environment.

The ``nexus-store outbox relay`` command does the same with the CLI's options and output.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from nexus_store.outbox.service import run_relay
from nexus_store.settings import NexusSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nexus_store.outbox", description=__doc__)
    parser.add_argument("--once", action="store_true", help="deliver what is pending and exit")
    args = parser.parse_args(argv)
    delivered = asyncio.run(run_relay(NexusSettings.load(), once=args.once))
    print(f"delivered {delivered} outbox row(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
