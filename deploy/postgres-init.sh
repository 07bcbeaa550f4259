#!/bin/sh
# PostgreSQL's first start (docker-entrypoint-initdb.d): the login role the API and the
# workers use. Least privilege: no superuser, no BYPASSRLS, no DDL; its rights come from the
# group role wedsync_runtime, which migration 0011 grants table by table (docs/security.md).
set -eu
psql -v ON_ERROR_STOP=1 -v app_password="$WEDSYNC_APP_DB_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wedsync_runtime') THEN
        CREATE ROLE wedsync_runtime NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END $$;
CREATE ROLE wedsync_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
    PASSWORD :'app_password' IN ROLE wedsync_runtime;
SQL
