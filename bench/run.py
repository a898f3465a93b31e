"""Run the benchmarks: ``python -m bench.run [--only NAME] [--repeats N] [--json FILE]``.

Servers come from NEXUS_POSTGRES_URL / NEXUS_MONGO_URL / NEXUS_REDIS_URL, or else the local
PostgreSQL and Redis and an nx-27017 MongoDB substitute started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import pkgutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.harness import Result, render_table, run_pair
from devstack import servers
from devstack.stack import Stack, scratch_stack

SCENARIO_PACKAGE = "bench.scenarios"


def _modules(only: list[str]) -> list[str]:
    path = Path(__file__).parent / "scenarios"
    names = sorted(info.name for info in pkgutil.iter_modules([str(path)]))
    return [name for name in names if not only or any(o in name for o in only)]


@contextlib.contextmanager
def _bench_stack() -> Iterator[Stack]:
    """The servers the tests use, with a scratch database and namespace for this run."""
    tag = uuid.uuid4().hex[:8]
    with (
        servers.postgres_server() as postgres,
        servers.mongo_server() as (mongo, _real),
        servers.redis_server() as redis,
        scratch_stack(
            postgres, mongo, redis, database=f"nexus_bench_{tag}", namespace=f"bench{tag}"
        ) as stack,
    ):
        yield stack


async def _main(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with _bench_stack() as env:
        for name in _modules(args.only):
            module = importlib.import_module(f"{SCENARIO_PACKAGE}.{name}")
            for pair in await module.scenarios(env):
                if args.filter and args.filter not in pair.name:
                    continue
                print(f"running {pair.name} ...", file=sys.stderr, flush=True)
                results.append(await run_pair(pair, args.repeats))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="scenario module substring")
    parser.add_argument("--filter", help="pair name substring")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    results = asyncio.run(_main(args))
    print(render_table(results))
    payload = json.dumps([result.as_dict() for result in results], indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(payload)
    else:
        print(payload)


if __name__ == "__main__":
    main()
