"""Run the benchmarks: ``python -m bench.run [--only NAME] [--repeats N] [--json FILE]``.

Servers come from NEXUS_POSTGRES_URL / NEXUS_MONGO_URL / NEXUS_REDIS_URL, or else the local
PostgreSQL and Redis and an nx-27017 MongoDB substitute started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from bench.env import bench_env
from bench.harness import Result, render_table, run_pair

SCENARIO_PACKAGE = "bench.scenarios"


def _modules(only: list[str]) -> list[str]:
    path = Path(__file__).parent / "scenarios"
    names = sorted(info.name for info in pkgutil.iter_modules([str(path)]))
    return [name for name in names if not only or any(o in name for o in only)]


async def _main(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    async with bench_env() as env:
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
