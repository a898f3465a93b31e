"""Cross-store commands: ``outbox relay`` and ``privacy export``."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated

import typer

from nexus_store.cli._common import (
    EXIT_USAGE,
    ConfigOption,
    call,
    fail,
    load_settings,
    open_store,
    step_line,
)

outbox_app = typer.Typer(
    help="The transactional outbox: entity change records relayed to the audit log.",
    no_args_is_help=True,
)
privacy_app = typer.Typer(help="Per-user data export.", no_args_is_help=True)


@outbox_app.command("relay")
def outbox_relay(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is pending, then exit.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Deliver outbox rows to the audit log until Ctrl-C or SIGTERM (or once, with --once)."""
    from nexus_store.outbox.service import run_relay

    settings = load_settings(config)
    if settings.postgres.url is None or settings.mongo.url is None:
        fail("the relay needs NEXUS_POSTGRES_URL and NEXUS_MONGO_URL", EXIT_USAGE)
    if not once:
        step_line("running", "outbox relay", "stop with Ctrl-C or SIGTERM")
    delivered = call(run_relay(settings, once=once), "outbox relay")
    step_line("done", "outbox relay", f"{delivered} row(s) delivered")


@privacy_app.command("export")
def privacy_export(
    user_id: Annotated[str, typer.Argument(help="The user's id (a UUID).")],
    config: ConfigOption = None,
) -> None:
    """Everything stored about USER_ID as one JSON document on stdout; progress on stderr.

    nexus-store privacy export 6f1c...e2 > user.json
    """
    try:
        uuid.UUID(user_id)
    except ValueError:
        fail(f"USER_ID must be a UUID, got {user_id!r}", EXIT_USAGE)
    settings = load_settings(config)

    def progress(section: str, count: int) -> None:
        step_line("running", f"export {section}", f"{count} so far")

    async def export() -> int:
        written = 0
        async with open_store(settings) as store:
            async for chunk in store.privacy.export_user(user_id, progress=progress):
                sys.stdout.buffer.write(chunk)
                written += len(chunk)
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
        return written

    written = call(export(), "privacy export")
    step_line("done", "privacy export", f"{written} bytes written")
