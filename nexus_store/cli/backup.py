"""``nexus-store backup create|verify|restore|list|prune``.

Exit codes: 0 done; 1 the archive or the target was refused (corrupt, truncated, wrong key,
non-empty target, broken audit chain...) or a backend failed; 2 usage or configuration (an
unknown store, no key, a missing pg_dump).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus_store.cli._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOption,
    FormatOption,
    OutputFormat,
    emit_json,
    fail,
    json_ready,
    load_settings,
    open_store,
    run,
    stdout,
    step_line,
    table,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

backup_app = typer.Typer(
    help="Backups of PostgreSQL, MongoDB and Redis: one archive, verified, restored all or "
    "nothing.",
    no_args_is_help=True,
)


class Store(StrEnum):
    postgres = "postgres"
    mongo = "mongo"
    redis = "redis"


OnlyOption = Annotated[
    Store | None, typer.Option("--only", case_sensitive=False, help="One store only.")
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        dir_okay=False,
        help="File holding the 32-byte key (hex or base64); else NEXUS_BACKUP_KEY_FILE or "
        "NEXUS_BACKUP_KEY. Never the key itself on the command line.",
    ),
]


def _progress(store: str, message: str) -> None:
    step_line("running", store, message)


def _guarded(work: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Run ``work``; typed errors exit 1 (2 for configuration/usage) naming the file."""
    from nexus_store.errors import ConfigurationError, NexusStoreError, ValidationError
    from nexus_store.health import describe_failure

    async def guarded() -> Any:
        try:
            return await work()
        except (ConfigurationError, ValidationError) as exc:
            fail(f"{what}: {exc}", EXIT_USAGE)
        except NexusStoreError as exc:
            fail(f"{what}: {exc}", EXIT_FAILED)
        except Exception as exc:
            fail(f"{what}: {describe_failure(exc)}")

    return run(guarded())


def _show(result: Any, output_format: OutputFormat, title: str) -> None:
    if output_format is OutputFormat.json:
        emit_json(result)
        return
    data = json_ready(result)
    counts = data.pop("counts", None)
    rows = [(key, _flat(value)) for key, value in data.items()]
    stdout.print(table(title, ("field", "value"), rows))
    if counts:
        parts = [(c["store"], c["part"], c["count"]) for c in counts]
        stdout.print(table("counts", ("store", "part", "count"), parts))


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_flat(item)}" for key, item in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_flat(item) for item in value) or "-"
    return "-" if value is None else str(value)


@backup_app.command("create")
def create(
    path: Annotated[Path, typer.Argument(help="New archive directory (must not exist).")],
    *,
    only: OnlyOption = None,
    encrypt: Annotated[bool, typer.Option("--encrypt", help="AES-256-GCM every file.")] = False,
    key_file: KeyFileOption = None,
    redis_area: Annotated[
        list[str] | None,
        typer.Option(
            "--redis-area",
            help="Redis area to include (repeat); default: sessions and queue. "
            "cache, ratelimit, realtime and analytics_cache only on request.",
        ),
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Back up every configured store (PostgreSQL first, in one snapshot) into PATH."""
    from nexus_store.backup._redis import DURABLE_AREAS

    settings = load_settings(config)
    areas = tuple(redis_area) if redis_area else DURABLE_AREAS

    async def work() -> Any:
        async with open_store(settings) as store:
            return await store.backup.create(
                path,
                only=only.value if only else None,
                encrypt=encrypt,
                key_file=key_file,
                redis_areas=areas,
                progress=_progress,
            )

    report = _guarded(work, "backup create")
    step_line("done", "backup create", f"{report.files} files, {report.bytes} bytes")
    _show(report, output_format, f"backup {path}")


@backup_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="Archive directory.")],
    key_file: KeyFileOption = None,
    tree_head: Annotated[
        Path | None,
        typer.Option(
            "--tree-head",
            help="A signed tree head kept outside (store.audit.tree_head() as JSON): the "
            "archive's audit log must extend it.",
        ),
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Check every file against the manifest, and the audit chain inside against its signed
    tree head (and --tree-head). No server needed."""
    from nexus_store.audit_proofs import TreeHead
    from nexus_store.backup.service import verify_archive
    from nexus_store.errors import BackupError

    settings = load_settings(config)  # the audit keys: chain and tree head signatures

    async def work() -> Any:
        head = None
        if tree_head is not None:
            try:
                head = TreeHead.from_json(tree_head.read_bytes())
            except OSError as exc:
                raise BackupError(f"cannot read it ({exc.strerror})", file=str(tree_head)) from None
        return verify_archive(settings, path, key_file=key_file, tree_head=head)

    report = _guarded(work, "backup verify")
    step_line("done", "backup verify", report.note or "every file and the audit chain check out")
    _show(report, output_format, f"verify {path}")


@backup_app.command("restore")
def restore(
    path: Annotated[Path, typer.Argument(help="Archive directory.")],
    *,
    only: OnlyOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a target that already holds data.")
    ] = False,
    key_file: KeyFileOption = None,
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Restore PATH into the configured stores, all or nothing; then health and audit verify.

    Refuses a target holding data unless --force. A restore stopped while switching is
    finished by running the same command again.
    """
    settings = load_settings(config)

    async def work() -> Any:
        async with open_store(settings) as store:
            report = await store.backup.restore(
                path,
                only=only.value if only else None,
                force=force,
                key_file=key_file,
                progress=_progress,
            )
        # A new store: the restore replaced the PostgreSQL database under the old one's pool.
        async with open_store(settings) as store:
            health = await store.health()
            audit = await store.audit.verify() if "mongo" in report.stores else None
        return report, health, audit

    report, health, audit = _guarded(work, "backup restore")
    step_line("done", "backup restore", f"{report.seconds:.1f} s")
    result = {
        **json_ready(report),
        "health": health.status,
        "auditVerify": None if audit is None else {"ok": audit.ok, "checked": audit.checked},
    }
    _show(result, output_format, f"restore {path}")
    if health.status == "fail":
        fail("restored, but the health check fails", EXIT_FAILED)
    if audit is not None and not audit.ok:
        fail(f"restored, but audit verify fails at seq {audit.first_broken_seq}", EXIT_FAILED)


@backup_app.command("list")
def list_command(
    directory: Annotated[Path, typer.Argument(help="Directory holding archives.")],
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """The complete archives in DIRECTORY, oldest first."""
    from nexus_store.backup.service import list_archives

    async def work() -> Any:
        return list_archives(directory)

    found = _guarded(work, "backup list")
    if output_format is OutputFormat.json:
        emit_json(found)
        return
    rows = [(a.name, a.created, ", ".join(a.stores), a.encrypted, a.bytes) for a in found]
    stdout.print(
        table(str(directory), ("archive", "created", "stores", "encrypted", "bytes"), rows)
    )


@backup_app.command("prune")
def prune(
    directory: Annotated[Path, typer.Argument(help="Directory holding archives.")],
    keep_daily: Annotated[int, typer.Option("--keep-daily", min=0)] = 7,
    keep_weekly: Annotated[int, typer.Option("--keep-weekly", min=0)] = 4,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, delete nothing.")] = False,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Keep the newest archive of each recent day and week; delete the rest."""
    from nexus_store.backup.service import prune_archives

    async def work() -> Any:
        return prune_archives(directory, keep_daily, keep_weekly, dry_run=dry_run)

    report = _guarded(work, "backup prune")
    _show(report, output_format, f"prune {directory}" + (" (dry run)" if dry_run else ""))
