-- Least-privilege roles for nexus-store, run by psql (docker-entrypoint-initdb.d or
-- `psql -v ON_ERROR_STOP=1 -d nexus -f postgres/init/02-roles.sql`) as a superuser.
--
--   nexus_migrator  owns the schema objects; runs `nexus-store init` (Alembic migrations).
--                   BYPASSRLS: the migration and maintenance role, the one role that sees
--                   every tenant's rows (backfills, cross-tenant reports, repairs).
--   nexus_app       the application at run time: reads and writes rows, never DDL; subject
--                   to the row-level security policies (tenant isolation).
--   nexus_readonly  reports and read replicas: SELECT only.
--
-- Passwords come from the environment (psql 15+ \getenv); never commit them. A role whose
-- password variable is unset is created NOLOGIN, so nothing can sign in with a default.
--   NEXUS_MIGRATOR_PASSWORD, NEXUS_APP_PASSWORD, NEXUS_READONLY_PASSWORD

\set ON_ERROR_STOP on
\getenv migrator_password NEXUS_MIGRATOR_PASSWORD
\getenv app_password NEXUS_APP_PASSWORD
\getenv readonly_password NEXUS_READONLY_PASSWORD

SELECT current_database() AS dbname \gset

-- Roles are cluster-wide: a second database on the same cluster (or a concurrent run) finds
-- them created, which is fine.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['nexus_migrator', 'nexus_app', 'nexus_readonly'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$;
-- Only the migrator skips row-level security; the app and readonly roles never do.
ALTER ROLE nexus_migrator BYPASSRLS;
ALTER ROLE nexus_app NOBYPASSRLS;
ALTER ROLE nexus_readonly NOBYPASSRLS;

\if :{?migrator_password}
ALTER ROLE nexus_migrator LOGIN PASSWORD :'migrator_password';
\endif
\if :{?app_password}
ALTER ROLE nexus_app LOGIN PASSWORD :'app_password';
\endif
\if :{?readonly_password}
ALTER ROLE nexus_readonly LOGIN PASSWORD :'readonly_password';
\endif

-- Nobody creates objects in public except the migrator.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO nexus_migrator, nexus_app, nexus_readonly;
GRANT USAGE, CREATE ON SCHEMA public TO nexus_migrator;
GRANT USAGE ON SCHEMA public TO nexus_app, nexus_readonly;

-- Whatever the migrator creates, the app may use (rows only) and readonly may read.
ALTER DEFAULT PRIVILEGES FOR ROLE nexus_migrator IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO nexus_app;
ALTER DEFAULT PRIVILEGES FOR ROLE nexus_migrator IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO nexus_app;
ALTER DEFAULT PRIVILEGES FOR ROLE nexus_migrator IN SCHEMA public
    GRANT SELECT ON TABLES TO nexus_readonly;
ALTER DEFAULT PRIVILEGES FOR ROLE nexus_migrator IN SCHEMA public
    GRANT SELECT ON SEQUENCES TO nexus_readonly;
