"""full-text search: weighted tsvector columns, GIN indexes, trigram indexes on titles

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 03:40:00

``search_vector`` on projects, tasks and documents is a stored generated column: the title
(name) weighted A, the body (description; the string values of a document's content) weighted
B, in the text search configuration ``postgres.search_language`` of the settings the
migration runs with (``english`` without settings). A GIN index serves ``@@``. The columns are
not on the models: entity reads never fetch them, and ``migrations/env.py`` leaves them out of
``alembic check``. Trigram GIN indexes on the short title fields serve typo-tolerant search.
"""

import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (title column, body expression)
SEARCHED = {
    "projects": ("name", "coalesce(description, '')"),
    "tasks": ("title", "coalesce(description, '')"),
    "documents": ("title", None),  # the body is the JSONB content's string values
}
TRIGRAM = {"projects": "name", "tasks": "title", "documents": "title"}


def _language() -> str:
    settings = context.config.attributes.get("settings")
    language = "english" if settings is None else settings.postgres.search_language
    if not re.fullmatch(r"[a-z_]+", language):  # the settings check it too: it is spliced
        raise ValueError(f"postgres.search_language {language!r} is not a configuration name")
    return language


def upgrade() -> None:
    config = f"'{_language()}'::regconfig"
    for table, (title, body) in SEARCHED.items():
        body_vector = (
            f"to_tsvector({config}, {body})" if body else f"to_tsvector({config}, content)"
        )
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
            f"setweight(to_tsvector({config}, coalesce({title}, '')), 'A') || "
            f"setweight({body_vector}, 'B')) STORED"
        )
        op.execute(f"CREATE INDEX ix_{table}_search_vector ON {table} USING gin (search_vector)")
    for table, column in TRIGRAM.items():
        op.create_index(
            f"ix_{table}_{column}_trgm",
            table,
            [column],
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )


def downgrade() -> None:
    for table, column in TRIGRAM.items():
        op.drop_index(f"ix_{table}_{column}_trgm", table_name=table)
    for table in SEARCHED:
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_search_vector")
        op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS search_vector")
