"""Ops commands: ``migrate``, ``audit verify|tree-head|prove`` and ``events stats``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus_store.cli._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOption,
    FormatOption,
    OutputFormat,
    call,
    emit_json,
    fail,
    json_ready,
    load_settings,
    open_store,
    stdout,
    table,
)

if TYPE_CHECKING:
    from nexus_store.settings import NexusSettings

migrate_app = typer.Typer(
    help="Alembic migrations of the PostgreSQL schema, with the SDK's "
    "settings (upgrades hold pg_advisory_lock).",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
events_app = typer.Typer(help="Analytics events.", no_args_is_help=True)


def _show(data: Any, output_format: OutputFormat, title: str) -> None:
    if output_format is OutputFormat.json:
        emit_json(data)
        return
    data = json_ready(data)
    if isinstance(data, dict):
        rows = [(key, _flat(value)) for key, value in data.items()]
        stdout.print(table(title, ("field", "value"), rows))
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        columns = list(data[0])
        stdout.print(table(title, columns, [[_flat(row.get(c)) for c in columns] for row in data]))
    else:
        stdout.print(table(title, ("value",), [(_flat(data),)]))


def _flat(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_flat(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_flat(item)}" for key, item in value.items())
    return "-" if value is None else str(value)


def _postgres_settings(config: Any) -> NexusSettings:
    settings = load_settings(config)
    if settings.postgres.url is None:
        fail("PostgreSQL is not configured: set NEXUS_POSTGRES_URL", EXIT_USAGE)
    return settings


# -- migrate ---------------------------------------------------------------------------------


@migrate_app.command("upgrade")
def migrate_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, do not apply.")] = False,
) -> None:
    """Upgrade to REVISION (default head) under pg_advisory_lock."""
    from nexus_store.postgres import migrate

    settings = _postgres_settings(config)
    result = call(migrate.upgrade(settings, revision, dry_run=dry_run), "migrate upgrade")
    _show(result, output_format, "migrate upgrade (dry run)" if dry_run else "migrate upgrade")


@migrate_app.command("downgrade")
def migrate_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (e.g. -1 or base).")],
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Downgrade to REVISION."""
    from nexus_store.postgres import migrate

    settings = _postgres_settings(config)
    result = call(migrate.downgrade(settings, revision), "migrate downgrade")
    _show(result, output_format, "migrate downgrade")


@migrate_app.command("current")
def migrate_current(
    config: ConfigOption = None, output_format: FormatOption = OutputFormat.table
) -> None:
    """The database's revision, the head, and what is pending. Exit 1 when behind."""
    from nexus_store.postgres import migrate

    settings = _postgres_settings(config)
    status = call(migrate.status(settings), "migrate current")
    _show(status, output_format, "migrate current")
    if not status.at_head:
        raise typer.Exit(EXIT_FAILED)


@migrate_app.command("history")
def migrate_history(
    config: ConfigOption = None, output_format: FormatOption = OutputFormat.table
) -> None:
    """Every revision, oldest first."""
    from nexus_store.postgres import migrate

    load_settings(config)

    async def history() -> Any:
        return migrate.history()

    _show(call(history(), "migrate history"), output_format, "migrate history")


# -- audit -----------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    start: Annotated[int | None, typer.Option("--from", min=1, help="First seq.")] = None,
    end: Annotated[int | None, typer.Option("--to", min=1, help="Last seq.")] = None,
    since_tree_head: Annotated[
        Path | None,
        typer.Option(
            "--since-tree-head",
            help="A signed tree head kept outside the database (audit tree-head --out): "
            "exit 1 if the log was cut or rewritten behind it.",
        ),
    ] = None,
) -> None:
    """Verify the audit hash chain and Merkle tree. Exit 1 naming the first broken seq."""
    settings = load_settings(config)
    head = None if since_tree_head is None else _read_tree_head(since_tree_head)

    async def verify() -> Any:
        async with open_store(settings) as store:
            return await store.audit.verify(start, end, since=head)

    result = call(verify(), "audit verify")
    _show(result, output_format, "audit verify")
    if not result.ok:
        fail(f"audit chain broken at seq {result.first_broken_seq}: {result.reason}", EXIT_FAILED)


def _read_tree_head(path: Path) -> Any:
    from nexus_store.audit_proofs import TreeHead
    from nexus_store.errors import ValidationError

    try:
        return TreeHead.from_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        fail(f"--since-tree-head {path}: {exc}", EXIT_USAGE)


@audit_app.command("tree-head")
def audit_tree_head(
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the signed head to FILE.")
    ] = None,
) -> None:
    """Sign the log's tree head (size, RFC 9162 root, time). Keep it outside the database."""
    settings = load_settings(config)

    async def tree_head() -> Any:
        async with open_store(settings) as store:
            return await store.audit.tree_head()

    head = call(tree_head(), "audit tree-head")
    if out is not None:
        try:
            out.write_text(head.to_json() + "\n")
        except OSError as exc:
            fail(f"--out {out}: {exc}", EXIT_USAGE)
    _show(head, output_format, "audit tree-head")


@audit_app.command("prove")
def audit_prove(
    seq: Annotated[int, typer.Argument(min=1, help="The entry to prove.")],
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    tree_size: Annotated[
        int | None, typer.Option("--tree-size", min=1, help="Prove against this size.")
    ] = None,
) -> None:
    """An RFC 9162 inclusion proof of entry SEQ, with the entry (check it offline with
    nexus_store.audit_proofs.check_entry)."""
    settings = load_settings(config)

    async def prove() -> Any:
        async with open_store(settings) as store:
            return await store.audit.prove(seq, tree_size=tree_size)

    proof = call(prove(), "audit prove")
    _show(proof, output_format, "audit prove")


# -- events ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``"24h"``, ``"30m"``, ``"7d"`` ago, or an ISO 8601 time (UTC when naive)."""
    now = now or datetime.now(UTC)
    if match := _DURATION.match(text.strip()):
        return now - timedelta(**{_UNITS[match["unit"]]: float(match["amount"])})
    try:
        found = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: use a duration (30m, 24h, 7d) or an ISO time", param_hint="--since"
        ) from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


@events_app.command("stats")
def events_stats(
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    since: Annotated[str, typer.Option(help="30m, 24h, 7d or an ISO time.")] = "24h",
    top: Annotated[int, typer.Option(min=1, max=1000, help="How many event names.")] = 10,
) -> None:
    """Events stored since --since: the total and the most frequent names."""
    settings = load_settings(config)
    start = parse_since(since)

    async def stats() -> Any:
        end = datetime.now(UTC)
        async with open_store(settings) as store:
            names = await store.events.top_events(start=start, end=end, limit=top)
            users = await store.events.unique_users(start=start, end=end)
        return {
            "since": start,
            "until": end,
            "uniqueUsers": users,
            "topEvents": {count.name: count.count for count in names},
        }

    result = call(stats(), "events stats")
    if output_format is OutputFormat.json:
        emit_json(result)
        return
    rows = [(name, count) for name, count in result["topEvents"].items()]
    title = (
        f"top {top} events from {start:%Y-%m-%d %H:%M} to {result['until']:%H:%M} UTC "
        f"({result['uniqueUsers']} unique users)"
    )
    stdout.print(table(title, ("event", "count"), rows))
