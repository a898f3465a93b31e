"""The ``nexus-store`` command line (typer + rich).

    nexus-store init [--dry-run] [--only postgres|mongo|redis] [--format json]
    nexus-store health [--probe liveness|readiness] [--format json] [--watch SECONDS]
    nexus-store migrate upgrade|downgrade|current|history
    nexus-store audit verify [--from SEQ] [--to SEQ] [--since-tree-head FILE]
    nexus-store audit tree-head [--out FILE]
    nexus-store audit prove SEQ
    nexus-store events stats [--since 24h] [--top 10]
    nexus-store outbox relay [--once]
    nexus-store privacy export USER_ID
    nexus-store backup create|verify|restore|list|prune ...
    nexus-store demo [--users 5] [--skip-init]

With ``--format json``, a command prints one JSON document on stdout, its keys in
camelCase (``privacy export`` always prints the user's stored data as JSON).

Every command takes ``--config FILE`` and the SDK's ``NEXUS_*`` environment variables.
Drivers load only when a command needs them. ``health ... --format json`` (what a
Kubernetes exec probe runs) is answered without loading typer or rich at all
(``nexus_store.cli._probe``).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``nexus-store`` script."""
    from nexus_store.cli import _probe

    try:
        request = _probe.parse(sys.argv[1:])
        if request is not None:
            sys.exit(_probe.run(request))
        from nexus_store.cli.app import app

        app()
    except Exception as exc:  # last resort: one secret-free line, never a traceback
        from nexus_store._errors import describe

        sys.stderr.write(f"error: {describe(exc)}\n")
        sys.exit(1)
