"""The typer application: one command per module, registered here."""

from __future__ import annotations

import typer

from nexus_store.cli import backup, config, crossstore, health, init, ops
from nexus_store.cli.demo.command import demo

app = typer.Typer(
    name="nexus-store",
    help="Set up, check and operate the nexus-store backends (PostgreSQL, MongoDB, Redis).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,  # errors are reported without tracebacks or locals
)
app.command(rich_help_panel="Deploy")(init.init)
app.command(rich_help_panel="Deploy")(health.health)
app.add_typer(ops.migrate_app, name="migrate", rich_help_panel="Operate")
app.add_typer(ops.audit_app, name="audit", rich_help_panel="Operate")
app.add_typer(ops.events_app, name="events", rich_help_panel="Operate")
app.add_typer(crossstore.outbox_app, name="outbox", rich_help_panel="Operate")
app.add_typer(crossstore.privacy_app, name="privacy", rich_help_panel="Operate")
app.add_typer(backup.backup_app, name="backup", rich_help_panel="Operate")
app.add_typer(config.config_app, name="config", rich_help_panel="Deploy")
app.command(rich_help_panel="Try it")(demo)
