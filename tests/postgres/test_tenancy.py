"""Row-level tenant isolation under the least-privilege ``nexus_app`` role.

A private cluster holds a database initialised by postgres/init/*.sql and migrated by
``nexus_migrator``; the repository runs as ``nexus_app``, which the tenant policies bind.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
import pytest

from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import IntegrityError, NotFoundError, ValidationError
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import Organization, Project, Task, User
from nexus_store.postgres.repository import EntityRepository
from tests.postgres._roles import initialised_database, role_url
from tests.support import tag, user_values

pytestmark = pytest.mark.slow

DATABASE = "nexus_tenancy"


@dataclass(frozen=True)
class Tenancy:
    migrator: str
    app: str


@pytest.fixture(scope="module")
async def tenancy(private_cluster: tuple[str, str]) -> Tenancy:
    server = initialised_database(private_cluster, DATABASE)
    urls = Tenancy(
        role_url(server, DATABASE, "nexus_migrator"), role_url(server, DATABASE, "nexus_app")
    )
    await migrate.upgrade(NexusSettings.load(postgres={"url": urls.migrator}))
    return urls


async def _repository(url: str, **pool: int) -> AsyncIterator[EntityRepository]:
    backend = PostgresBackend(NexusSettings.load(postgres={"url": url, **pool}).postgres)
    try:
        yield EntityRepository(backend)
    finally:
        await backend.close()


@pytest.fixture
async def app(tenancy: Tenancy) -> AsyncIterator[EntityRepository]:
    """The application's repository, as nexus_app, on a small pool (2 + 1 per pool)."""
    async for repo in _repository(tenancy.app, pool_size=2, max_overflow=1):
        yield repo


@pytest.fixture
async def admin(tenancy: Tenancy) -> AsyncIterator[EntityRepository]:
    """The migrator's repository: BYPASSRLS, sees every tenant."""
    async for repo in _repository(tenancy.migrator):
        yield repo


async def _organization(app: EntityRepository) -> Organization:
    """An organization, created by the app in its own scope (the row is its own tenant)."""
    organization_id = uuid.uuid4()
    name = tag()
    async with app.tenant(organization_id):
        return await app.create(
            Organization, id=organization_id, name=f"Org {name}", slug=f"org-{name}"
        )


async def test_the_app_outside_any_scope_sees_nothing_and_writes_nothing(
    app: EntityRepository, admin: EntityRepository
) -> None:
    org = await _organization(app)
    async with app.tenant(org.id):
        project = await app.create(Project, organization_id=org.id, name="visible in scope")
        assert (await app.get(Project, project.id)).id == project.id
        assert await app.exists(Project, {"id": project.id})
        assert await app.exists(Organization, {"id": org.id})

    assert await app.get_or_none(Project, project.id) is None
    assert await app.count(Project) == 0
    assert (await app.list(Project)).items == []
    assert not await app.exists(Organization, {"id": org.id})
    with pytest.raises(IntegrityError) as refused:
        await app.create(Project, organization_id=org.id, name="no scope")
    assert refused.value.constraint == "tenant_isolation"
    with pytest.raises(NotFoundError):
        await app.update(Project, project.id, name="no scope")

    # The migrator bypasses: it sees the one row, unchanged.
    rows = await admin.list(Project, {"organization_id": org.id})
    assert [(row.id, row.name) for row in rows.items] == [(project.id, "visible in scope")]


async def test_another_tenants_organization_id_is_refused(
    app: EntityRepository, admin: EntityRepository
) -> None:
    mine, theirs = await _organization(app), await _organization(app)
    async with app.tenant(mine.id):
        with pytest.raises(IntegrityError) as refused:
            await app.create(Project, organization_id=theirs.id, name="smuggled")
        assert refused.value.constraint == "tenant_isolation"
        with pytest.raises(IntegrityError):
            await app.bulk_create(
                Project,
                [
                    {"organization_id": mine.id, "name": "fine"},
                    {"organization_id": theirs.id, "name": "smuggled"},
                ],
            )
        own = await app.create(Project, organization_id=mine.id, name="own")
        with pytest.raises(IntegrityError):  # moving a row out of the tenant
            await app.update(Project, own.id, organization_id=theirs.id)
    assert await admin.count(Project, {"organization_id": theirs.id}) == 0
    assert [p.name for p in (await admin.list(Project, {"organization_id": mine.id})).items] == [
        "own"
    ]


async def test_children_are_scoped_through_their_parent(app: EntityRepository) -> None:
    mine, theirs = await _organization(app), await _organization(app)
    async with app.tenant(theirs.id):
        their_project = await app.create(Project, organization_id=theirs.id, name="theirs")
        their_task = await app.create(Task, project_id=their_project.id, title="their task")
    async with app.tenant(mine.id):
        assert await app.get_or_none(Task, their_task.id) is None
        assert await app.count(Task) == 0
        with pytest.raises(IntegrityError):  # a task under the other tenant's project
            await app.create(Task, project_id=their_project.id, title="smuggled")
        project = await app.create(Project, organization_id=mine.id, name="mine")
        task = await app.create(Task, project_id=project.id, title="my task")
        assert [t.id for t in (await app.list(Task)).items] == [task.id]
    async with app.tenant(theirs.id):
        assert [t.id for t in (await app.list(Task)).items] == [their_task.id]


async def test_raw_sql_through_the_app_role_is_blocked(
    tenancy: Tenancy, app: EntityRepository
) -> None:
    mine, theirs = await _organization(app), await _organization(app)
    async with app.tenant(theirs.id):
        await app.create(Project, organization_id=theirs.id, name="secret plans")
    async with await psycopg.AsyncConnection.connect(tenancy.app, autocommit=True) as conn:
        cursor = await conn.execute("SELECT count(*) FROM projects")
        assert await cursor.fetchone() == (0,)
        cursor = await conn.execute("SELECT count(*) FROM organizations")
        assert await cursor.fetchone() == (0,)
        # Turning row security off is refused rather than silently showing everything.
        await conn.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT * FROM projects")
        await conn.execute("RESET row_security")
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant', %s, true)", (str(mine.id),))
            cursor = await conn.execute("SELECT count(*) FROM projects WHERE name = 'secret plans'")
            assert await cursor.fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(
                    "INSERT INTO projects (organization_id, name) VALUES (%s, 'x')", (theirs.id,)
                )
        # The app role cannot drop the policy or switch the table's row security off.
        for ddl in (
            "DROP POLICY tenant_isolation ON projects",
            "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(ddl)


async def test_the_scope_never_outlives_its_transaction_on_a_pooled_connection(
    tenancy: Tenancy,
) -> None:
    """One connection per pool: whatever a scoped call left on it, the next call sees."""
    async for repo in _repository(tenancy.app, pool_size=1, max_overflow=0):
        org = await _organization(repo)
        async with repo.tenant(org.id):
            project = await repo.create(Project, organization_id=org.id, name="p")
            assert (await repo.get(Project, project.id)).id == project.id  # psycopg pool
            assert await repo.count(Project) == 1  # SQLAlchemy pool
            async with repo.transaction():
                assert (await repo.list(Project)).items[0].id == project.id
        assert await repo.get_or_none(Project, project.id) is None
        assert await repo.count(Project) == 0
        async with repo.transaction():
            assert await repo.count(Project) == 0


async def test_a_scope_entered_inside_a_transaction_ends_with_the_block(
    app: EntityRepository,
) -> None:
    org = await _organization(app)
    async with app.transaction():
        async with app.tenant(org.id):
            project = await app.create(Project, organization_id=org.id, name="inside")
            assert await app.count(Project) == 1
        assert await app.count(Project) == 0  # same transaction, scope gone
    async with app.tenant(org.id), app.transaction():
        assert (await app.get(Project, project.id)).name == "inside"


async def test_a_tenant_must_be_a_uuid(app: EntityRepository) -> None:
    with pytest.raises(ValidationError) as refused:
        async with app.tenant("org' OR true --"):
            pass
    assert refused.value.field == "organization_id"


async def test_bulk_create_goes_through_the_policies(
    app: EntityRepository, admin: EntityRepository
) -> None:
    org = await _organization(app)
    async with app.tenant(org.id):
        created = await app.bulk_create(
            Project, [{"organization_id": org.id, "name": f"p{n}"} for n in range(300)]
        )
        assert created == 300
        assert await app.count(Project) == 300
    assert await admin.count(Project, {"organization_id": org.id}) == 300


async def test_two_tenants_under_concurrent_load_never_see_each_other(
    app: EntityRepository,
) -> None:
    """Eight workers on a pool of three connections interleave 2,400 scoped operations of two
    tenants: every row any call returns belongs to the caller's tenant, and the other
    tenant's keys are never found."""
    tenants = [(await _organization(app)).id, (await _organization(app)).id]
    keys: dict[uuid.UUID, list[uuid.UUID]] = {tenant: [] for tenant in tenants}
    seen_rows = 0
    rng = random.Random(17)

    async def worker(number: int) -> None:
        nonlocal seen_rows
        for step in range(300):
            tenant = tenants[(number + step) % 2]
            other = tenants[(number + step + 1) % 2]
            async with app.tenant(tenant):
                operation = rng.randrange(6)
                if operation == 0 or not keys[tenant] or not keys[other]:
                    project = await app.create(Project, organization_id=tenant, name=f"w{number}")
                    assert project.organization_id == tenant
                    keys[tenant].append(project.id)
                elif operation == 1:
                    got = await app.get(Project, rng.choice(keys[tenant]))
                    assert got.organization_id == tenant
                    seen_rows += 1
                elif operation == 2:
                    assert await app.get_or_none(Project, rng.choice(keys[other])) is None
                elif operation == 3:
                    page = await app.list(Project, {"name__like": "w"}, limit=7)
                    pages = 0
                    while True:
                        assert all(p.organization_id == tenant for p in page.items)
                        seen_rows += len(page.items)
                        pages += 1
                        if page.next_cursor is None or pages == 3:
                            break
                        page = await app.list(
                            Project, {"name__like": "w"}, limit=7, after=page.next_cursor
                        )
                elif operation == 4:
                    assert await app.count(Project, {"id__in": keys[other][:50]}) == 0
                    assert await app.count(Project) >= 1
                else:
                    key = rng.choice(keys[tenant])
                    updated = await app.update(Project, key, description=f"step {step}")
                    assert updated.organization_id == tenant
                    with pytest.raises(NotFoundError):
                        await app.update(Project, rng.choice(keys[other]), description="x")

    await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(8))), timeout=240)
    assert seen_rows > 0
    for tenant in tenants:
        async with app.tenant(tenant):
            assert await app.count(Project) == len(keys[tenant])
            everything = await app.list(Project, limit=1000)
            assert {p.id for p in everything.items} == set(keys[tenant])


async def _plans_of_two_tenants(app: EntityRepository, word: str) -> dict[uuid.UUID, uuid.UUID]:
    """Two organizations with a project named "<word> plan" each: organization -> project."""
    found: dict[uuid.UUID, uuid.UUID] = {}
    for _ in range(2):
        org = await _organization(app)
        async with app.tenant(org.id):
            project = await app.create(Project, organization_id=org.id, name=f"{word} plan")
            found[org.id] = project.id
    return found


async def test_search_sees_only_the_tenants_rows(app: EntityRepository) -> None:
    word = f"w{tag()}"
    found = await _plans_of_two_tenants(app, word)
    for org_id, project_id in found.items():
        async with app.tenant(org_id):
            assert [hit.item.id for hit in await app.search(Project, word)] == [project_id]
            fuzzy = await app.search(Project, f"{word} plna", fuzzy=True)
            assert [hit.item.id for hit in fuzzy] == [project_id]
    assert (await app.search(Project, word)).items == []  # outside any scope


async def test_scoped_reads_on_a_replica_see_only_the_tenants_rows(
    app: EntityRepository, tenancy: Tenancy, private_cluster: tuple[str, str]
) -> None:
    """A hot standby runs the scoping statement too: ``set_config(..., true)`` is allowed
    in its read-only transactions, and its policies are the primary's."""
    word = f"w{tag()}"
    projects = await _plans_of_two_tenants(app, word)
    replica = role_url(private_cluster[1].rsplit("/", 1)[0], DATABASE, "nexus_app")
    settings = NexusSettings.load(postgres={"url": tenancy.app, "read_urls": [replica]})
    backend = PostgresBackend(settings.postgres)
    try:
        reader = EntityRepository(backend)
        last = list(projects)[-1]
        for _ in range(200):  # up to ~10 s for the replica to replay the inserts
            async with reader.tenant(last):
                if await reader.exists(Project, {"id": projects[last]}):
                    break
            await asyncio.sleep(0.05)
        for org_id, project_id in projects.items():
            other = next(p for o, p in projects.items() if o != org_id)
            async with reader.tenant(org_id):
                assert [p.id for p in await reader.list(Project, {"name__like": word})] == [
                    project_id
                ]
                assert await reader.count(Project, {"name__like": word}) == 1
                assert (await reader.get(Project, project_id)).organization_id == org_id
                assert await reader.get_or_none(Project, other) is None
                assert [h.item.id for h in await reader.search(Project, word)] == [project_id]
        assert (await reader.list(Project, {"name__like": word})).items == []  # no scope
        pool = await backend.read_pool(1)  # the plain reads' pool is the standby's
        async with pool.connection() as connection:
            in_recovery = await (await connection.execute("SELECT pg_is_in_recovery()")).fetchone()
        assert in_recovery == (True,)
    finally:
        await backend.close()


# -- change requests (migration 0005) --------------------------------------------------------


@pytest.fixture
async def app_store(tenancy: Tenancy) -> AsyncIterator[NexusStore]:
    """A store as nexus_app (PostgreSQL only: approval notifications are skipped)."""
    async with NexusStore(NexusSettings.load(postgres={"url": tenancy.app})) as store:
        yield store


async def test_change_requests_are_seen_and_decided_only_in_their_tenants_scope(
    app_store: NexusStore, admin: EntityRepository
) -> None:
    entities, approvals = app_store.entities, app_store.approvals
    mine, theirs = await _organization(entities), await _organization(entities)
    async with entities.tenant(theirs.id):
        project = await entities.create(Project, organization_id=theirs.id, name="theirs")
        request = await approvals.request(
            Project, project.id, requester="user:ada", changes={"name": "renamed"}
        )
    assert request.organization_id == theirs.id

    async with entities.tenant(mine.id):
        assert request.id not in {r.id for r in await approvals.pending()}
        for decide in (approvals.approve, approvals.reject):
            with pytest.raises(NotFoundError):
                await decide(request.id, "user:bob")
        with pytest.raises(NotFoundError):
            await approvals.cancel(request.id, "user:ada")
        assert await approvals.expire_stale() == 0
    # Outside any scope it is invisible too.
    assert request.id not in {r.id for r in await approvals.pending()}
    with pytest.raises(NotFoundError):
        await approvals.get(request.id)

    async with entities.tenant(theirs.id):
        assert [r.id for r in await approvals.pending(for_user="user:bob")] == [request.id]
        done = await approvals.approve(request.id, "user:bob")
        assert done.status == "applied"
    assert (await admin.get(Project, project.id)).name == "renamed"


async def test_expiry_sweeps_only_the_scope_it_runs_in(
    app_store: NexusStore, tenancy: Tenancy
) -> None:
    """As nexus_app, ``expire_stale()`` expires the current scope's stale requests and no
    other tenant's; as nexus_migrator (BYPASSRLS) one sweep covers every tenant."""
    entities, approvals = app_store.entities, app_store.approvals
    orgs = [await _organization(entities) for _ in range(3)]
    requests = {}
    for org in orgs:
        async with entities.tenant(org.id):
            project = await entities.create(Project, organization_id=org.id, name="stale")
            requests[org.id] = await approvals.request(
                Project, project.id, requester="user:ada", changes={"name": "x"}, expires_in=0.05
            )
    await asyncio.sleep(0.2)
    first, second, third = orgs
    async with entities.tenant(first.id):
        assert await approvals.expire_stale() == 1
        assert (await approvals.get(requests[first.id].id)).status == "expired"
    async with entities.tenant(second.id):
        assert (await approvals.get(requests[second.id].id)).status == "pending"
    assert await approvals.expire_stale() == 0  # outside any scope: sees no tenant's request

    async with NexusStore(NexusSettings.load(postgres={"url": tenancy.migrator})) as migrator:
        swept = await migrator.approvals.expire_stale()
        assert swept >= 2  # the two left here, and any other test's stale ones
        for org in (second, third):
            assert (await migrator.approvals.get(requests[org.id].id)).status == "expired"


async def test_a_request_without_a_tenant_is_shared_only_for_unscoped_tables(
    app_store: NexusStore,
) -> None:
    """A change of ``users`` (not tenant data) requested outside any scope is visible
    everywhere and can be decided in any scope."""
    entities, approvals = app_store.entities, app_store.approvals
    org = await _organization(entities)
    user = await entities.create(User, **user_values())
    request = await approvals.request(
        User, user.id, requester="user:ada", changes={"full_name": "Ada L."}
    )
    assert request.organization_id is None
    async with entities.tenant(org.id):
        assert request.id in {r.id for r in await approvals.pending()}
        assert (await approvals.approve(request.id, "user:bob")).status == "applied"
    assert (await entities.get(User, user.id)).full_name == "Ada L."


async def test_raw_sql_cannot_read_or_forge_another_tenants_change_requests(
    tenancy: Tenancy, app_store: NexusStore
) -> None:
    entities, approvals = app_store.entities, app_store.approvals
    mine, theirs = await _organization(entities), await _organization(entities)
    async with entities.tenant(theirs.id):
        project = await entities.create(Project, organization_id=theirs.id, name="theirs")
        request = await approvals.request(
            Project, project.id, requester="user:ada", changes={"name": "x"}
        )
    forged = (
        "INSERT INTO change_requests (organization_id, resource_type, resource_id, changes, "
        "before, requester, expires_at) VALUES (%s, 'projects', %s, '{}', '{}', 'user:eve', "
        "now() + interval '1 day')"
    )
    async with await psycopg.AsyncConnection.connect(tenancy.app, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM change_requests WHERE id = %s", (request.id,)
        )
        assert await cursor.fetchone() == (0,)
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant', %s, true)", (str(mine.id),))
            cursor = await conn.execute(
                "SELECT count(*) FROM change_requests WHERE organization_id IS NOT NULL"
            )
            assert await cursor.fetchone() == (0,)
            cursor = await conn.execute(
                "UPDATE change_requests SET status = 'cancelled' WHERE id = %s", (request.id,)
            )
            assert cursor.rowcount == 0
        for organization in (theirs.id, None):  # another tenant's, or none for a scoped table
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('app.tenant', %s, true)", (str(mine.id),))
                    await conn.execute(forged, (organization, str(project.id)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant', %s, true)", (str(mine.id),))
                await conn.execute(
                    "INSERT INTO change_request_approvals (request_id, approver) "
                    "VALUES (%s, 'user:eve')",
                    (request.id,),
                )
        for ddl in (
            "DROP POLICY tenant_isolation ON change_requests",
            "ALTER TABLE change_requests NO FORCE ROW LEVEL SECURITY",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(ddl)
    async with entities.tenant(theirs.id):
        assert (await approvals.get(request.id)).status == "pending"


async def test_a_statement_that_sets_its_own_scope_is_planned_on_the_key(
    tenancy: Tenancy, app: EntityRepository
) -> None:
    """Scoped reads outside a transaction set the tenant inside their statement; the planner
    must not estimate the policy from the setting at planning time (unset then: "no rows of
    this organization", which made a lookup by key scan the organization's index)."""
    orgs = [await _organization(app), await _organization(app)]
    keys = []
    for org in orgs:
        rows = [{"id": uuid.uuid4(), "organization_id": org.id, "name": "p"} for _ in range(3000)]
        async with app.tenant(org.id):
            await app.bulk_create(Project, rows)
        keys.append(rows[0]["id"])
    async with await psycopg.AsyncConnection.connect(tenancy.migrator, autocommit=True) as conn:
        await conn.execute("ANALYZE projects")
    async with app.tenant(orgs[0].id):
        assert (await app.get(Project, keys[0])).organization_id == orgs[0].id
        assert await app.get_or_none(Project, keys[1]) is None
    lookup = (
        "SELECT * FROM projects WHERE id = %s "
        "AND (SELECT set_config('app.tenant', %s, true)) IS NOT NULL"
    )
    async with await psycopg.AsyncConnection.connect(tenancy.app, autocommit=True) as conn:
        cursor = await conn.execute(f"EXPLAIN (FORMAT JSON) {lookup}", (keys[0], str(orgs[0].id)))
        plan = json.dumps(await cursor.fetchone())
    assert '"Index Name": "pk_projects"' in plan, plan
