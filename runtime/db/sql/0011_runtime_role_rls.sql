-- Defence in depth (issue 22): the app runs as a member of `wedsync_runtime`, a role that
-- may read and write rows but owns nothing, cannot run DDL and does not bypass row-level
-- security; this file (like every migration) runs as the owner role. Every wedding-scoped
-- table enforces RLS on a per-connection setting (runtime/db/scope.py sets it): a query
-- without it sees no row, one for wedding A sees and writes only A's rows. docs/security.md.

-- The group role the app's login role is a member of. Roles are per cluster: created once
-- (here when the owner may; a DBA creates it otherwise), shared by every database on it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wedsync_runtime') THEN
        CREATE ROLE wedsync_runtime NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END $$;

-- No DDL at run time: no new objects in the schema (PostgreSQL 15+ already denies PUBLIC
-- this; older servers did not) and none of the tables is the runtime's to ALTER or DROP.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO wedsync_runtime;

-- Rows only, table by table (a migration adding a table grants it explicitly; the test
-- tests/test_rls.py fails for a table the runtime cannot use or an unprotected one).
GRANT SELECT, INSERT, UPDATE, DELETE ON
    worker_consumed, worker_failures, weddings, wedding_members, sessions, audit_log,
    presence_minutes, presence_days, wedding_state, entities, approvals, notifications,
    deliveries, delivery_attempts, notification_preferences, push_subscriptions, webhooks,
    escalations, event_archive, archive_marks, retention_runs, event_outbox, outbox_published,
    documents, document_snapshots, document_authors
    TO wedsync_runtime;
GRANT SELECT ON schema_migrations TO wedsync_runtime;  -- read only: which schema it runs on
GRANT USAGE ON SEQUENCE audit_log_id_seq, deliveries_id_seq, retention_runs_id_seq,
    event_outbox_id_seq TO wedsync_runtime;

-- The scope of the current connection (or transaction): its wedding, and whether a named
-- system path (docs/security.md) has opened every wedding. Unset or empty: nothing.
CREATE FUNCTION wedsync_scope_wedding() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('wedsync.wedding_id', true), '')::uuid
$$;
CREATE FUNCTION wedsync_scope_system() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('wedsync.scope', true), '') = 'system'
$$;

-- ENABLE + FORCE (the owner too, unless it is a superuser or BYPASSRLS) and one policy per
-- table for every command: USING filters what is read, updated and deleted; the same check
-- applies to rows written (an INSERT or UPDATE into another wedding fails).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'wedding_members', 'sessions', 'audit_log', 'presence_minutes', 'presence_days',
        'wedding_state', 'entities', 'approvals', 'notifications', 'deliveries',
        'notification_preferences', 'webhooks', 'escalations', 'event_archive',
        'archive_marks', 'event_outbox', 'outbox_published', 'documents'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY wedding_scope ON %I TO PUBLIC '
            'USING (wedding_id = wedsync_scope_wedding() OR wedsync_scope_system())', t);
    END LOOP;
END $$;

ALTER TABLE weddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE weddings FORCE ROW LEVEL SECURITY;
CREATE POLICY wedding_scope ON weddings TO PUBLIC
    USING (id = wedsync_scope_wedding() OR wedsync_scope_system());

-- An attempt belongs to the wedding of its delivery (the subquery is itself filtered by
-- the deliveries policy).
ALTER TABLE delivery_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE delivery_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY wedding_scope ON delivery_attempts TO PUBLIC
    USING (wedsync_scope_system() OR EXISTS (
        SELECT FROM deliveries d WHERE d.id = delivery_id
                                   AND d.wedding_id = wedsync_scope_wedding()));

-- The one DDL the app needs at run time: a month's partition of the event archive (the
-- archive job and erase create them on first use). As the owner, for one month only; the
-- new partition is granted to no one, so the runtime reaches archived rows only through
-- event_archive, where the policy applies (a partition has no policy of its own).
CREATE FUNCTION wedsync_archive_partition(month date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first date := date_trunc('month', month)::date;
BEGIN
    PERFORM pg_advisory_xact_lock(92199548);  -- 0x57ED_A7C: runtime/db/archive.py's lock
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF event_archive '
        'FOR VALUES FROM (%L) TO (%L)',
        to_char(first, '"event_archive_y"YYYY"m"MM'),
        first::text || ' 00:00+00', (first + interval '1 month')::date::text || ' 00:00+00');
END $$;
REVOKE EXECUTE ON FUNCTION wedsync_archive_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wedsync_archive_partition(date) TO wedsync_runtime;

-- The one lookup made before the wedding is known: the wedding of the live session a token
-- opens (the WebSocket handshake tells "no such session" (4001) from "a session of another
-- wedding" (4403)). Returns an id only to someone holding the token's hash. In system
-- scope for its own duration only (the SET clause is undone on return): the owner is
-- subject to the policies too unless it is a superuser.
CREATE FUNCTION wedsync_session_wedding(hash bytea) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp SET wedsync.scope = 'system' AS $$
    SELECT wedding_id FROM sessions
    WHERE token_hash = hash AND ended_at IS NULL AND expires_at > now()
$$;
REVOKE EXECUTE ON FUNCTION wedsync_session_wedding(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wedsync_session_wedding(bytea) TO wedsync_runtime;

-- A document's versions and authors belong to the wedding of their document (the
-- subqueries are themselves filtered by the documents policy).
ALTER TABLE document_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY wedding_scope ON document_snapshots TO PUBLIC
    USING (wedsync_scope_system() OR EXISTS (
        SELECT FROM documents d WHERE d.id = document_id
                                  AND d.wedding_id = wedsync_scope_wedding()));
ALTER TABLE document_authors ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_authors FORCE ROW LEVEL SECURITY;
CREATE POLICY wedding_scope ON document_authors TO PUBLIC
    USING (wedsync_scope_system() OR EXISTS (
        SELECT FROM documents d WHERE d.id = document_id
                                  AND d.wedding_id = wedsync_scope_wedding()));
