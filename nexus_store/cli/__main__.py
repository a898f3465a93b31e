"""``python -m nexus_store.cli``: the same as the ``nexus-store`` script."""

from nexus_store.cli import main

main()
