"""store.entities.search: full text (websearch_to_tsquery, ts_rank_cd, ts_headline, keyset over
(rank, id)) and trigram matching, on the session database migrated to head."""

from __future__ import annotations

import psycopg
import pytest

from nexus_store import NexusSettings
from nexus_store.errors import ValidationError
from nexus_store.postgres.models import (
    Document,
    FinancialAccount,
    Organization,
    Project,
    Task,
    User,
)
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values


@pytest.fixture
def word(unique: str) -> str:
    """A word no other test's rows contain."""
    return f"w{unique}"


async def _projects(
    repo: EntityRepository, org: Organization, *rows: tuple[str, str | None]
) -> list[Project]:
    return [
        await repo.create(Project, organization_id=org.id, name=name, description=description)
        for name, description in rows
    ]


async def test_titles_outrank_bodies_and_the_raw_query_agrees(
    repo: EntityRepository, organization: Organization, migrated: NexusSettings, word: str
) -> None:
    in_body, in_title, in_both, elsewhere = await _projects(
        repo,
        organization,
        ("quarterly plan", f"mentions {word} once"),
        (f"{word} launch", "a plan"),
        (f"{word} review", f"{word} and {word} again"),
        ("unrelated", "nothing to see"),
    )
    page = await repo.search(Project, word)
    assert [hit.item.id for hit in page] == [in_both.id, in_title.id, in_body.id]
    assert page.items[0].rank > page.items[1].rank > page.items[2].rank > 0
    assert page.next_cursor is None
    assert elsewhere.id not in {hit.item.id for hit in page}

    # An independent oracle: the same question asked in plain SQL.
    url = migrated.postgres.url.get_secret_value()  # type: ignore[union-attr]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT id, ts_rank_cd(search_vector, q) FROM projects, "
            "websearch_to_tsquery('english', %s) AS q WHERE search_vector @@ q "
            "ORDER BY 2 DESC, id",
            (word,),
        )
        expected = await cursor.fetchall()
    assert [(hit.item.id, pytest.approx(hit.rank)) for hit in page] == expected


async def test_any_text_is_accepted_and_never_spliced(
    repo: EntityRepository, organization: Organization, word: str
) -> None:
    (target,) = await _projects(repo, organization, (f"{word} café 日本語", "road map draft"))
    for text in (
        "'",
        '"',
        "' OR 1=1 --",
        "a & | ! ( ) : * <-> b",
        "); DROP TABLE projects; --",
        "",
        "the of and",  # stop words only: an empty query, no rows, no error
        "🚀" * 50,
        "-" * 10,
        "or or or",
        '"unterminated phrase',
    ):
        page = await repo.search(Project, text)
        assert all(isinstance(hit.rank, float) for hit in page)
    assert [hit.item.id for hit in await repo.search(Project, f'"{word} café"')] == [target.id]
    assert [hit.item.id for hit in await repo.search(Project, f"{word} -draft")] == []
    assert [hit.item.id for hit in await repo.search(Project, f"{word} or zzz")] == [target.id]
    assert [hit.item.id for hit in await repo.search(Project, f"日本語 {word}")] == [target.id]
    assert await repo.count(Project, {"id": target.id}) == 1  # still there


@pytest.mark.parametrize(
    ("text", "problem"),
    [("a\x00b", "NUL"), ("x" * 1001, "longer"), ("\ud800", "unicode"), (42, "string")],
)
async def test_text_that_cannot_reach_postgres_is_a_validation_error(
    repo: EntityRepository, text: object, problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem) as refused:
        await repo.search(Project, text)  # type: ignore[arg-type]
    assert refused.value.field == "text"


async def test_search_composes_with_filters_and_highlights(
    repo: EntityRepository, organization: Organization, word: str
) -> None:
    active, planning = await _projects(
        repo, organization, (f"{word} alpha", "first"), (f"{word} beta", "second")
    )
    await repo.update(Project, active.id, status="active")
    page = await repo.search(
        Project, word, where={"organization_id": organization.id, "status": "active"}
    )
    assert [hit.item.id for hit in page] == [active.id]
    with pytest.raises(ValidationError) as refused:
        await repo.search(Project, word, where={"name; DROP": 1})
    assert refused.value.field == "where.name; DROP"

    task = await repo.create(
        Task, project_id=planning.id, title="Write the plan", description=f"the {word} part"
    )
    (hit,) = (await repo.search(Task, word, highlight=True)).items
    assert hit.item.id == task.id
    assert hit.snippet is not None and f"<b>{word}</b>" in hit.snippet
    assert "Write the plan" in hit.snippet

    document = await repo.create(
        Document,
        organization_id=organization.id,
        title="Design notes",
        content={"sections": [{"body": f"the {word} engine"}], "pages": 3},
    )
    (found,) = (await repo.search(Document, word, highlight=True)).items
    assert found.item.id == document.id and found.item.content["pages"] == 3
    assert found.snippet is not None and f"<b>{word}</b> engine" in found.snippet
    assert (await repo.search(Document, word)).items[0].snippet is None


async def test_keyset_pages_over_rank_and_id_are_stable(
    repo: EntityRepository, organization: Organization, word: str
) -> None:
    # Ranks with many ties: 1, 2 or 3 occurrences of the word in the body.
    await _projects(
        repo,
        organization,
        *((f"p{n}", " ".join([word] * (1 + n % 3))) for n in range(23)),
    )
    everything = [hit.item.id for hit in await repo.search(Project, word, limit=1000)]
    assert len(everything) == 23

    seen: list[object] = []
    page = await repo.search(Project, word, limit=4)
    while True:
        seen += [hit.item.id for hit in page]
        if page.next_cursor is None:
            break
        # Rows inserted while paging: none returned twice, none of the first ones skipped.
        await _projects(repo, organization, (f"late {tag()}", f"{word} {word} {word} {word}"))
        page = await repo.search(Project, word, limit=4, after=page.next_cursor)
    assert len(seen) == len(set(seen))
    assert set(everything) <= set(seen)
    ranks_in_order = [
        hit.rank for hit in await repo.search(Project, word, limit=1000) if hit.item.id in seen
    ]
    assert ranks_in_order == sorted(ranks_in_order, reverse=True)


async def test_a_cursor_belongs_to_its_text(
    repo: EntityRepository, organization: Organization, word: str
) -> None:
    await _projects(repo, organization, (f"{word} one", None), (f"{word} two", None))
    page = await repo.search(Project, word, limit=1)
    assert page.next_cursor is not None
    for after in (page.next_cursor, "garbage", "e30"):
        with pytest.raises(ValidationError) as refused:
            await repo.search(Project, f"{word} one", limit=1, after=after)
        assert refused.value.field == "after"


async def test_fuzzy_matching_tolerates_typos(
    repo: EntityRepository, organization: Organization, unique: str
) -> None:
    name = f"Lighthouse{unique}"
    (project,) = await _projects(repo, organization, (name, None))
    typo = f"Ligthouse{unique}"
    assert (await repo.search(Project, typo)).items == []  # full text wants the word
    hits = (await repo.search(Project, typo, fuzzy=True)).items
    assert [hit.item.id for hit in hits] == [project.id]
    assert 0 < hits[0].rank < 1

    user = await repo.create(User, **user_values(username=f"lovelace_{unique}"))
    found = await repo.search(User, f"lovlace_{unique}", fuzzy=True)
    assert [hit.item.id for hit in found] == [user.id]


async def test_models_without_search_say_so(repo: EntityRepository) -> None:
    with pytest.raises(ValidationError) as refused:
        await repo.search(Organization, "acme")
    assert refused.value.field == "model"
    with pytest.raises(ValidationError) as refused:
        await repo.search(FinancialAccount, "ops", fuzzy=True)
    assert refused.value.field == "fuzzy"
    with pytest.raises(ValidationError) as refused:
        await repo.search(Project, "x", limit=0)
    assert refused.value.field == "limit"
