"""A test hook: ``NEXUS_BACKUP_TEST_PAUSE=<step>`` stops a restore at that step until it is
killed, so that tests/backup/test_kill.py can SIGKILL it at exactly the moments that matter
(inside the commit transaction, between two collection renames...). Unset, it does nothing.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["PAUSE_VARIABLE", "pause"]

PAUSE_VARIABLE = "NEXUS_BACKUP_TEST_PAUSE"


def pause(step: str) -> None:
    if os.environ.get(PAUSE_VARIABLE) != step:
        return
    # Not the progress callback: the test must see this line whatever the output format.
    print(f"paused at {step}", file=sys.stderr, flush=True)
    while True:  # until killed; blocking the event loop is the point
        time.sleep(60)
