"""``search``: ranked full-text search, and typo-tolerant trigram matching on short fields.

    page = await store.entities.search(Document, "quarterly budget -draft", limit=20,
                                       where={"project_id": project.id}, highlight=True)
    for hit in page:
        hit.item, hit.rank, hit.snippet
    more = await store.entities.search(Document, "quarterly budget -draft", limit=20,
                                       where={"project_id": project.id}, after=page.next_cursor)
    fuzzy = await store.entities.search(User, "ada lovlace", fuzzy=True)

Full-text search reads the generated ``search_vector`` column of revision 0003 (title weight
A, body weight B) through its GIN index: the text goes through ``websearch_to_tsquery`` as a
bound parameter (any text is valid: quotes, ``or``, ``-word``, unicode), rows are ranked by
``ts_rank_cd`` and keyset-paginated over ``(rank, key)``. ``fuzzy=True`` matches the model's
short title field by trigram word similarity (pg_trgm, ``<%``) instead, ranked by
``word_similarity``. Both compose with ``where`` (the same whitelisted filters as ``list``)
and with the tenant scope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Float,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONPATH, REGCONFIG, TSVECTOR

from nexus_store.errors import ValidationError
from nexus_store.postgres._model import ModelInfo, model_info
from nexus_store.postgres._query import Page, where_clause
from nexus_store.postgres._reads import MAX_PAGE, Reads
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base
from nexus_store.telemetry import operation

__all__ = ["MAX_SEARCH_TEXT", "SearchHit", "Searches"]

M = TypeVar("M", bound=Base)

MAX_SEARCH_TEXT = 1000

# table -> (title column, body column, whether the body is JSONB); the generated column of
# revision 0003 weights the title A and the body B.
_FULL_TEXT: dict[str, tuple[str, str, bool]] = {
    "projects": ("name", "description", False),
    "tasks": ("title", "description", False),
    "documents": ("title", "content", True),
}
# table -> the short field with a trigram GIN index, for fuzzy=True.
_FUZZY: dict[str, str] = {
    "users": "username",
    "projects": "name",
    "tasks": "title",
    "documents": "title",
}
# ts_headline's defaults, spelled out: the snippet marks matches with <b>...</b> and is NOT
# HTML-escaped (the stored text is returned as is).
_JSON_STRINGS = 'strict $.** ? (@.type() == "string")'  # every string value, at any depth
_HEADLINE_OPTIONS = "StartSel=<b>, StopSel=</b>, MaxWords=35, MinWords=15, MaxFragments=2"


@dataclass(frozen=True)
class SearchHit(Generic[M]):
    """One result: the row, its rank (higher is better) and, if asked, a highlighted snippet."""

    item: M
    rank: float
    snippet: str | None = None


def _checked_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ValidationError("text", f"must be a string, got {type(text).__name__}")
    if len(text) > MAX_SEARCH_TEXT:
        raise ValidationError("text", f"is longer than {MAX_SEARCH_TEXT} characters")
    if "\x00" in text:
        raise ValidationError("text", "contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("text", "is not valid unicode (lone surrogate)") from None
    return text


def _signature(table: str, fuzzy: bool, text: str) -> str:
    """Ties a cursor to its query: the table, the mode and the search text."""
    digest = hashlib.sha256(f"{table}\x00{fuzzy}\x00{text}".encode()).hexdigest()[:16]
    return f"search:{digest}"


def _encode(signature: str, rank: float, key: Any) -> str:
    raw = json.dumps({"o": signature, "v": [rank, str(key)]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(signature: str, info: ModelInfo[Any], cursor: Any) -> tuple[float, Any]:
    bad = ValidationError("after", "is not a cursor of this search (the text must not change)")
    if not isinstance(cursor, str) or len(cursor) > 4096:
        raise bad
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        rank, key = payload["v"]
        if payload["o"] != signature or isinstance(rank, bool) or not isinstance(rank, float):
            raise bad
        return rank, info.rules.convert(info.key.name, uuid.UUID(key), "after")
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError, ValidationError):
        raise bad from None


def _document_text(info: ModelInfo[Any], title: str, body: str, json_body: bool) -> Any:
    """The text a snippet is cut from: the title, then the body (a document's string values)."""
    table = info.table
    if not json_body:
        return func.concat_ws(" ", table.c[title], table.c[body])
    strings = func.jsonb_path_query_array(table.c[body], cast(literal(_JSON_STRINGS), JSONPATH))
    values = func.jsonb_array_elements_text(strings).table_valued("value")
    joined = select(func.string_agg(values.c.value, " ")).scalar_subquery()
    return func.concat_ws(" ", table.c[title], joined)


class Searches:
    """The search side of one repository; it runs on the read path (replicas, tenant scope)."""

    def __init__(self, backend: PostgresBackend, reads: Reads, language: str) -> None:
        self._backend = backend
        self._reads = reads
        self._language = language

    async def search(
        self,
        model: type[M],
        text: str,
        /,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 20,
        after: str | None = None,
        fuzzy: bool = False,
        highlight: bool = False,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> Page[SearchHit[M]]:
        info = model_info(model)
        text = _checked_text(text)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_PAGE}")
        table = info.table
        conditions = where_clause(table, info.rules, where) + info.visible(include_deleted)
        snippet: Any = None
        source: Any = table
        if fuzzy:
            field = _FUZZY.get(table.name)
            if field is None:
                raise ValidationError("fuzzy", f"{model.__name__} has no trigram-indexed field")
            phrase: Any = bindparam("phrase", text)
            rank: Any = func.word_similarity(phrase, table.c[field])
            conditions.append(phrase.op("<%")(table.c[field]))
        else:
            spec = _FULL_TEXT.get(table.name)
            if spec is None:
                raise ValidationError("model", f"{model.__name__} has no full-text search column")
            language = cast(bindparam("language", self._language), REGCONFIG)
            # In FROM, the query is parsed once per statement; as an expression of a prepared
            # statement's generic plan it would be parsed again for every row.
            parsed = (
                func.websearch_to_tsquery(language, bindparam("phrase", text))
                .table_valued("query")
                .render_derived(name="search_query")
            )
            source = table.join(parsed, true())
            query = parsed.c.query
            vector = literal_column(f'"{table.name}".search_vector', TSVECTOR)
            rank = func.ts_rank_cd(vector, query)
            conditions.append(vector.op("@@")(query))
            if highlight:
                title, body, json_body = spec
                document = _document_text(info, title, body, json_body)
                snippet = func.ts_headline(language, document, query, _HEADLINE_OPTIONS)
        rank = cast(rank, Float)  # real -> double: the cursor's value compares exactly
        signature = _signature(table.name, fuzzy, text)
        if after is not None:
            last_rank, last_key = _decode(signature, info, after)
            conditions.append(or_(rank < last_rank, and_(rank == last_rank, info.key > last_key)))
        columns: list[Any] = [*info.columns, rank.label("search_rank")]
        if snippet is not None:
            columns.append(snippet.label("search_snippet"))
        statement = (
            select(*columns)
            .select_from(source)
            .where(*conditions)
            .order_by(rank.desc(), info.key)
            .limit(limit + 1)
        )
        with operation(self._backend, "entities.search", table.name, model=model.__name__) as op:
            rows = await self._reads.rows(fresh, statement)
            op.note(rows=len(rows))
        width = len(info.columns)
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            cursor = _encode(signature, last[width], last[info.positions[info.key.name]])
        hits = [
            SearchHit(
                info.materialize(row[:width]),
                float(row[width]),
                row[width + 1] if snippet is not None else None,
            )
            for row in rows
        ]
        return Page(hits, cursor)
