"""Acceptance: a restore killed with SIGKILL leaves the target, as an application that opens
the store sees it, either as it was or fully restored, never in between.

Two kinds of runs. Paused: the restore stops at one named step of the switch-over
(``NEXUS_BACKUP_TEST_PAUSE``, a hook that does nothing unless set) and is killed there, so
every moment that matters is hit in every run of the suite: staged but not committed, inside
the commit transaction (one database renamed, the other not), committed with nothing
switched yet, between two MongoDB collections, and with a Redis area emptied but not
refilled. Random: killed a random delay after a random progress line of the whole restore
(the seed and the last line are in the messages).

The state is read through ``NexusStore`` (see the ``snapshot`` fixture), as any application
reads it: opening the store finishes a committed restore.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.backup import _postgres
from nexus_store.backup._pause import PAUSE_VARIABLE
from tests.support import start_cli

pytestmark = pytest.mark.slow

#: Each pause point, and what the target must be once opened after a kill there.
_PAUSES = {
    "staged": "before",
    "committing": "before",
    "committed": "after",
    "mongo-publishing": "after",
    "redis-publishing": "after",
}
#: Progress lines (their endings) that can open the random runs' kill window.
_LINES = ("checking checksums", "restoring into a new database", "documents staged",
          "keys staged", "committing", "switching over")  # fmt: skip


async def _occupy(settings: Any) -> None:
    """Data of the target's own, different from the archive's (PostgreSQL stays empty: its
    schema would take seconds to create, and an empty database is a state to keep too)."""
    async with NexusStore(settings) as store:
        await store.events.track("before", user_id="someone", wait=True)
        await store.audit.record("system", "create", "thing", "1")
        await store.sessions.create("someone", {"before": True}, ttl=600)
        await store.queue.enqueue("before-jobs", {"n": 1})


def _kill_after(process: subprocess.Popen[str], ending: str, delay: float) -> list[str]:
    """SIGKILL ``delay`` seconds after the first stderr line ending with ``ending``; returns
    the lines seen."""
    assert process.stderr is not None
    seen = []
    while line := process.stderr.readline():
        seen.append(line.strip())
        if line.rstrip().endswith(ending):
            break
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    rest = process.communicate(timeout=30)[1]
    return [*seen, *rest.strip().splitlines()]


@pytest.mark.parametrize("how", [*_PAUSES, "random-1", "random-2"])
async def test_sigkill_during_restore_leaves_before_or_after(
    how: str,
    populated_state: dict[str, Any],
    archives: dict[str, Path],
    target_stack: Stack,
    snapshot: Any,
) -> None:
    settings = target_stack.settings()
    await _occupy(settings)
    before, after = await snapshot(settings), populated_state
    assert before != after
    env = target_stack.environment()
    if how in _PAUSES:
        env = {**env, PAUSE_VARIABLE: how}
        ending, delay, where = f"paused at {how}", 0.0, f"paused at {how}"
    else:
        seed = random.randrange(2**32)
        chance = random.Random(seed)
        ending, delay = chance.choice(_LINES), chance.uniform(0, 0.4)
        where = f"{how}, seed {seed}, {delay:.2f} s after {ending!r}"
    process = start_cli("backup", "restore", str(archives["plain"]), "--force", env=env)
    lines = _kill_after(process, ending, delay)
    assert process.returncode == -signal.SIGKILL, (where, lines[-5:])
    where += f", last line {lines[-1] if lines else '(none)'!r}"

    state = await snapshot(settings)
    if how in _PAUSES:
        assert state == (before if _PAUSES[how] == "before" else after), where
    else:
        assert state in (before, after), where
    print(f"{where}: {'before' if state == before else 'after'}")
    # Nothing committed is left pending once the store was opened.
    target = _postgres.PostgresTarget.from_settings(settings)
    assert (await _postgres.PendingRecord.open(target))[1] is None, where
    # What an uncommitted run staged is removed by the next restore (here, for the test).
    await _postgres.discard_stages(target)


async def test_a_store_open_across_the_switch_over_finishes_it_on_its_next_readiness_probe(
    populated_state: dict[str, Any],
    archives: dict[str, Path],
    target_stack: Stack,
    snapshot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The readiness probe looks for a committed restore on a pooled connection first. A
    store opened before the switch-over holds connections the commit ended: its next probe
    looks on a new connection and finishes the restore; later probes open none."""
    settings = target_stack.settings()
    await _occupy(settings)
    fresh_looks: list[str] = []
    open_record = _postgres.PendingRecord.open

    async def counted(target: _postgres.PostgresTarget) -> Any:
        fresh_looks.append(target.database)
        return await open_record(target)

    monkeypatch.setattr(_postgres.PendingRecord, "open", counted)
    async with NexusStore(settings) as store:
        await store.health()
        assert fresh_looks == []  # settled, seen on the pooled connection
        env = {**target_stack.environment(), PAUSE_VARIABLE: "committed"}
        process = start_cli("backup", "restore", str(archives["plain"]), "--force", env=env)
        lines = _kill_after(process, "paused at committed", 0.0)
        assert process.returncode == -signal.SIGKILL, lines[-5:]

        await store.health()
        assert len(fresh_looks) == 1  # the pooled session had been ended: a new look
        target = _postgres.PostgresTarget.from_settings(settings)
        assert (await open_record(target))[1] is None  # and it finished the restore
        await store.health()
        assert len(fresh_looks) == 1
    assert await snapshot(settings) == populated_state
