"""Least privilege, checked without an authorizing server.

The nx-27017 substitute has no users or roles, so nothing it answers could show a missing or a
superfluous grant. Instead every command the SDK sends over a full workload is recorded
(PyMongo command monitoring), each is mapped to the privilege actions it needs with
:data:`REQUIRED_ACCESS` (built from the "Required Access" section of each command's page in
the MongoDB manual), and the roles that ``mongo/init/01-roles.js`` creates (run in node with a
recording ``db``) and the audit role ``init`` manages must grant exactly those: all of them,
and nothing that no recorded command needs.

To extend: a new command the SDK sends fails :func:`needed` with its name; add its row to
:data:`REQUIRED_ACCESS` from its manual page, then grant (or stop needing) the action.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devstack.stack import Stack, scratch_stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.mongo._layout import checkpoint_collection, lease_collection
from nexus_store.mongo.client import MongoBackend
from nexus_store.mongo.schema import audit_role_privileges, ensure_schema
from nexus_store.postgres.models import User
from tests.support import REPO_ROOT, CommandRecorder, user_values

ROLES_SCRIPT = REPO_ROOT / "mongo" / "init" / "01-roles.js"
DATABASE = "nexus"  # the script's default NEXUS_MONGO_DATABASE

# A resource is (database, collection): collection "" is the database itself (and every
# collection in it), database "" is every database.
Resource = tuple[str, str]
Need = tuple[Resource, str]


@dataclass(frozen=True)
class Access:
    """What one command needs: ``actions`` on its ``scope`` (the collection it names, its
    database, or every database); ``unless`` exempts a form of it that needs nothing."""

    scope: str  # "collection", "database", "all_databases" or "none"
    actions: tuple[str, ...] = ()
    unless: Callable[[dict[str, Any]], bool] | None = None


# command -> its Required Access (MongoDB manual, the command's page, "Required Access").
REQUIRED_ACCESS: dict[str, Access | tuple[Access, ...]] = {
    # no privilege: handshake, session and diagnostic commands
    "hello": Access("none"),
    "isMaster": Access("none"),
    "ping": Access("none"),
    "buildInfo": Access("none"),
    "endSessions": Access("none"),
    # a cursor's owner may always continue and kill it ("Users can always kill their own
    # cursors"; getMore: "the user who created the cursor")
    "getMore": Access("none"),
    "killCursors": Access("none"),
    # CRUD
    "find": Access("collection", ("find",)),
    "aggregate": Access("collection", ("find",)),  # no $out/$merge stage: checked below
    "count": Access("collection", ("find",)),
    "distinct": Access("collection", ("find",)),
    "insert": Access("collection", ("insert",)),
    "delete": Access("collection", ("remove",)),
    "update": Access("collection", ("update",)),
    # findAndModify: find + update; insert with upsert; remove (instead of update) with remove
    "findAndModify": (
        Access("collection", ("find",)),
        Access("collection", ("update",), unless=lambda command: bool(command.get("remove"))),
        Access("collection", ("insert",), unless=lambda command: not command.get("upsert")),
        Access("collection", ("remove",), unless=lambda command: not command.get("remove")),
    ),
    # schema reads: "listCollections" needs the action unless nameOnly and
    # authorizedCollections are both true
    "listCollections": Access(
        "database",
        ("listCollections",),
        unless=lambda body: bool(body.get("nameOnly") and body.get("authorizedCollections")),
    ),
    "listIndexes": Access("collection", ("listIndexes",)),
    # schema changes (init)
    "create": Access("database", ("createCollection",)),
    "createIndexes": Access("collection", ("createIndex",)),
    "collMod": Access("collection", ("collMod",)),
    "dropIndexes": Access("collection", ("dropIndex",)),
    # roles (init): rolesInfo needs viewRole (or holding the role); createRole needs
    # createRole, and grantRole to give the role privileges; updateRole needs grantRole on
    # the database of each privilege and revokeRole "on all databases"
    "rolesInfo": Access("database", ("viewRole",)),
    "createRole": Access("database", ("createRole", "grantRole")),
    "updateRole": (Access("database", ("grantRole",)), Access("all_databases", ("revokeRole",))),
}


def needed(database: str, name: str, body: dict[str, Any]) -> set[Need]:
    """The (resource, action) pairs the command ``name`` with ``body`` needs."""
    assert name in REQUIRED_ACCESS, (
        f"the SDK sent {name!r}, which REQUIRED_ACCESS does not list: add its row from the "
        f"'Required Access' section of its page in the MongoDB manual ({body})"
    )
    if name == "aggregate":
        stages = {key for stage in body["pipeline"] for key in stage}
        assert not stages & {"$out", "$merge"}, "writing stages need insert/remove too"
    rows = REQUIRED_ACCESS[name]
    result: set[Need] = set()
    for access in rows if isinstance(rows, tuple) else (rows,):
        if access.scope == "none" or (access.unless is not None and access.unless(body)):
            continue
        resource = {
            "collection": (database, str(body[name])),
            "database": (database, ""),
            "all_databases": ("", ""),
        }[access.scope]
        result |= {(resource, action) for action in access.actions}
    return result


def needs_of(recorder: CommandRecorder) -> set[Need]:
    return {
        need
        for database, (name, body) in zip(recorder.databases, recorder.commands, strict=True)
        for need in needed(database, name, body)
    }


def granted(privileges: list[dict[str, Any]]) -> set[Need]:
    return {
        ((item["resource"]["db"], item["resource"]["collection"]), action)
        for item in privileges
        for action in item["actions"]
    }


def covers(grants: set[Need], need: Need) -> bool:
    """A grant on a database covers its collections; one on every database covers all."""
    (database, collection), action = need
    return any(
        action == granted_action
        and granted_db in ("", database)
        and granted_collection in ("", collection)
        for (granted_db, granted_collection), granted_action in grants
    )


def assert_exact(grants: set[Need], needs: set[Need], who: str) -> None:
    missing = {need for need in needs if not covers(grants, need)}
    assert not missing, f"{who} lacks {sorted(missing)}"
    unused = {grant for grant in grants if not any(covers({grant}, need) for need in needs)}
    assert not unused, f"{who} is granted what no command needs: {sorted(unused)}"


@pytest.fixture(scope="module")
def script_roles() -> dict[str, Any]:
    """What ``01-roles.js`` creates, from running it in node with a recording ``db``."""
    if shutil.which("node") is None:
        pytest.skip("needs node to run mongo/init/01-roles.js (apt-get install nodejs)")
    harness = """
const vm = require("vm"), fs = require("fs");
const made = {roles: {}, users: {}};
const db = {getSiblingDB: (name) => ({
  createRole: (role) => { made.roles[`${name}.${role.role}`] = role; },
  createUser: (user) => { made.users[user.user] = {...user, db: name}; },
})};
const env = {NEXUS_MONGO_APP_PASSWORD: "a", NEXUS_MONGO_MIGRATOR_PASSWORD: "m"};
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), {db, process: {env}});
console.log(JSON.stringify(made));
"""
    done = subprocess.run(
        ["node", "-e", harness, str(ROLES_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    made: dict[str, Any] = json.loads(done.stdout)
    return made


def user_grants(made: dict[str, Any], user: str) -> set[Need]:
    """Every privilege ``user`` holds through its roles (inherited ones included)."""
    grants: set[Need] = set()
    pending = list(made["users"][user]["roles"])
    while pending:
        ref = pending.pop()
        role = made["roles"][f"{ref['db']}.{ref['role']}"]  # KeyError: a built-in role
        grants |= granted(role["privileges"])
        pending += role["roles"]
    return grants


def for_database(needs: set[Need], database: str) -> set[Need]:
    """``needs`` as they would be on ``database`` (the script's), collections kept."""
    return {((database if db else "", coll), action) for (db, coll), action in needs}


@pytest.fixture(scope="module")
def app_stack(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[Stack]:
    """Fresh stores (PostgreSQL migrated, MongoDB schema applied) with the default
    collection names, as ``01-roles.js`` grants them."""
    tag = uuid.uuid4().hex[:10]
    with scratch_stack(
        postgres_url, mongo_url, redis_url, database=f"nexus_priv_{tag}", namespace=f"pv{tag}"
    ) as scratch:
        yield scratch.merged(audit={"checkpoint_every": 2})


def recorded_store(settings: NexusSettings, recorder: CommandRecorder) -> NexusStore:
    store = NexusStore(settings)
    store.backends._mongo = MongoBackend(settings.mongo, event_listeners=[recorder])
    return store


async def app_workload(settings: NexusSettings, recorder: CommandRecorder) -> None:
    """Everything the application does in MongoDB, through the public API."""
    from nexus_store.postgres import migrate

    await migrate.upgrade(settings)
    async with NexusStore(settings) as setup:
        # no role: on a real server it would outlive this scratch database
        await ensure_schema(setup.backends.mongo, settings, manage_roles=False)
    day = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    async with recorded_store(settings, recorder) as store:
        user = await store.entities.create(User, **user_values())
        uid = str(user.id)
        events = store.events
        for minutes, name in enumerate(["view", "cart", "paid"]):
            await events.track(name, user_id=uid, ts=day + dt.timedelta(minutes=minutes))
        await events.track("view", user_id=uid, ts=day, wait=True)
        await events.flush()
        end = day + dt.timedelta(days=1)
        await events.counts(["view"], start=day, end=end)
        await events.unique_users(start=day, end=end)
        await events.funnel(["view", "paid"], start=day, end=end, window=dt.timedelta(hours=1))
        await events.top_events(start=day, end=end)
        page = await events.timeline(uid, limit=1)
        await events.timeline(uid, limit=1, cursor=page.next_cursor)
        for n in range(3):  # checkpoint_every=2: a checkpoint is written and verified
            await store.audit.record("admin:1", "update", "user", uid, after={"n": n})
        await store.audit.verify()
        await store.audit.by_actor("admin:1")
        await store.health()
        async for _chunk in store.privacy.export_user(uid):
            pass
        await store.privacy.erase_user(uid)


async def test_app_roles_grant_exactly_what_the_workload_needs(
    app_stack: Stack, script_roles: dict[str, Any]
) -> None:
    settings = app_stack.settings()
    recorder = CommandRecorder()
    await app_workload(settings, recorder)
    sent = {name for name, _ in recorder.commands}
    # the workload reached every part (a silently skipped part would grant too much)
    assert {"insert", "find", "aggregate", "delete", "listCollections", "listIndexes"} <= sent
    needs = needs_of(recorder)
    assert {(resource[1], action) for resource, action in needs} >= {
        ("events", "remove"),
        ("audit_log_checkpoints", "insert"),
        ("", "listCollections"),
    }
    assert_exact(
        user_grants(script_roles, "nexus_app"),
        for_database(needs, DATABASE),
        "nexus_app (01-roles.js)",
    )
    # The audit role init manages grants the audit part of the same needs, exactly.
    audit_collections = {
        settings.audit.collection,
        checkpoint_collection(settings),
        lease_collection(settings),
    }
    audit_needs = {need for need in needs if need[0][1] in audit_collections or need[0][1] == ""}
    assert_exact(granted(audit_role_privileges(settings)), audit_needs, "the init audit role")
    assert granted(audit_role_privileges(settings)) == for_database(
        granted(script_roles["roles"][f"{DATABASE}.nexusAuditWriter"]["privileges"]),
        settings.mongo.database,
    )


async def test_migrator_role_grants_exactly_what_init_needs(
    stack: Stack, unique: str, script_roles: dict[str, Any]
) -> None:
    from nexus_store.cli.init import run_init

    settings = stack.merged(
        events={"collection": f"ev_{unique}"},
        audit={"collection": f"au_{unique}", "role_name": f"nexusAudit_{unique}"},
    ).settings()
    recorder = CommandRecorder()
    async with recorded_store(settings, recorder) as store:
        steps = await run_init(store, only=["mongo"], progress=False)
        assert [step.status for step in steps] == ["done"]
        # what init does on a server that reports roles, and on drift: a changed retention
        # (collMod) and audit retention switched off (dropIndexes)
        await ensure_schema(store.backends.mongo, settings, manage_roles=True)
        changed = stack.merged(
            events={"collection": f"ev_{unique}", "retention_days": 7},
            audit={
                "collection": f"au_{unique}",
                "role_name": f"nexusAudit_{unique}",
                "retention_days": 30,
            },
        ).settings()
        await ensure_schema(store.backends.mongo, changed, manage_roles=False)
        await ensure_schema(store.backends.mongo, settings, manage_roles=False)
    sent = {name for name, _ in recorder.commands}
    assert {"create", "createIndexes", "collMod", "dropIndexes", "createRole"} <= sent
    needs = needs_of(recorder)
    # updateRole replaces createRole once the role exists; the substitute reports no roles,
    # so init never gets there on it: its needs are added from the table.
    needs |= needed(settings.mongo.database, "updateRole", {"updateRole": "role"})
    assert_exact(
        user_grants(script_roles, "nexus_migrator"),
        for_database(needs, DATABASE),
        "nexus_migrator (01-roles.js)",
    )
