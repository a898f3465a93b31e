// Least-privilege roles and users for nexus-store. mongosh runs this once, when the official
// image starts on an empty data directory (mounted at /docker-entrypoint-initdb.d/).
//
// Environment (set on the mongo container):
//   NEXUS_MONGO_DATABASE            database nexus-store uses (default "nexus")
//   NEXUS_MONGO_APP_PASSWORD        password of "nexus_app", the user the application runs as
//   NEXUS_MONGO_MIGRATOR_PASSWORD   password of "nexus_migrator", the user `nexus-store init` runs as
//
// Every action below is one that a command nexus-store sends needs, per the "Required Access"
// section of that command's page in the MongoDB manual; tests/mongo/test_privileges.py records
// the commands of a full workload, maps them with that table and checks that these roles grant
// all of them and nothing else. Change both together.
//
// The application may only read and append to the audit log: no update, no remove, no index
// or collection changes. `nexus-store init` creates the same audit role (audit.role_name) and
// keeps its privileges in step with settings; this script exists so that a fresh server is
// locked down before the application's first connection.

const dbName = process.env.NEXUS_MONGO_DATABASE || "nexus";
const appPassword = process.env.NEXUS_MONGO_APP_PASSWORD;
const migratorPassword = process.env.NEXUS_MONGO_MIGRATOR_PASSWORD;
if (!appPassword || !migratorPassword) {
  throw new Error("set NEXUS_MONGO_APP_PASSWORD and NEXUS_MONGO_MIGRATOR_PASSWORD");
}

const nexus = db.getSiblingDB(dbName);
const admin = db.getSiblingDB("admin");

// Health (`nexus-store health`, readiness) reads the collections' validators
// (listCollections on the database) and indexes (listIndexes on each collection).
const schemaReads = { resource: { db: dbName, collection: "" }, actions: ["listCollections"] };

// find + insert on the audit log and its checkpoints: append-only at the database level.
// The sequencer lease (one document, no audit data) is also updated.
nexus.createRole({
  role: "nexusAuditWriter",
  privileges: [
    { resource: { db: dbName, collection: "audit_log" }, actions: ["find", "insert", "listIndexes"] },
    {
      resource: { db: dbName, collection: "audit_log_checkpoints" },
      actions: ["find", "insert", "listIndexes"],
    },
    {
      resource: { db: dbName, collection: "audit_log_lease" },
      actions: ["find", "insert", "update", "listIndexes"],
    },
    schemaReads,
  ],
  roles: [],
});

// Events: write batches, query, and erase a user's events on request (privacy).
nexus.createRole({
  role: "nexusEventsWriter",
  privileges: [
    {
      resource: { db: dbName, collection: "events" },
      actions: ["find", "insert", "remove", "listIndexes"],
    },
    schemaReads,
  ],
  roles: [],
});

nexus.createUser({
  user: "nexus_app",
  pwd: appPassword,
  roles: [{ role: "nexusAuditWriter", db: dbName }, { role: "nexusEventsWriter", db: dbName }],
});

// `nexus-store init`: create collections, validators and indexes, and manage the audit role,
// on this database only. Never used by the running application.
nexus.createRole({
  role: "nexusMigrator",
  privileges: [
    {
      resource: { db: dbName, collection: "" },
      actions: [
        "listCollections", // inspect what exists
        "listIndexes",
        "createCollection", // create (with its validator, or as a time-series collection)
        "createIndex", // createIndexes
        "collMod", // validator and TTL changes
        "dropIndex", // the audit TTL index when retention is switched off
        "viewRole", // rolesInfo of the audit role
        "createRole", // createRole ...
        "grantRole", // ... and updateRole, with privileges on this database
      ],
    },
  ],
  roles: [],
});

// updateRole also needs revokeRole "on all databases" (MongoDB manual, updateRole, Required
// Access); a privilege on every database can only live in a role of the admin database.
admin.createRole({
  role: "nexusRoleUpdater",
  privileges: [{ resource: { db: "", collection: "" }, actions: ["revokeRole"] }],
  roles: [],
});

nexus.createUser({
  user: "nexus_migrator",
  pwd: migratorPassword,
  roles: [{ role: "nexusMigrator", db: dbName }, { role: "nexusRoleUpdater", db: "admin" }],
});
