-- The change log is written by its triggers alone.
--
-- Until now the triggers logged with the privileges of whoever wrote
-- session.sessions, so the service's role needed INSERT on session.changes,
-- and with it (for pruning) DELETE: that role could delete the entry of a
-- revocation and hide it from every cache, or insert entries of its own. The
-- logging functions now run as their owner, the role that ran the
-- migrations and owns the log, so a writer needs no privilege on the log at
-- all, and reading it takes SELECT alone.
--
-- Each function keeps the search_path the earlier migrations pinned
-- (pg_catalog, then pg_temp, which is searched last and never for functions
-- or operators), and names every table of ours with its schema, so running
-- as the owner lends the owner's rights to no object a caller could place on
-- the path. Running as the owner costs nothing measurable: a function with
-- a pinned search_path is already called through the wrapper that switches
-- the user, once per statement. Their bodies, and the columns they insert,
-- stay as 2026-11-30-000000_wake_after_commit left them.

ALTER FUNCTION session.log_inserted() SECURITY DEFINER;
ALTER FUNCTION session.log_updated() SECURITY DEFINER;
ALTER FUNCTION session.log_deleted() SECURITY DEFINER;
ALTER FUNCTION session.log_truncated() SECURITY DEFINER;

-- A trigger function cannot be called directly ("trigger functions can only
-- be called as triggers"), and firing a trigger checks no EXECUTE privilege,
-- so the service's writes need none. But CREATE TRIGGER does check it, and
-- every role holds EXECUTE through PUBLIC by default: a role with USAGE on
-- the schema could attach these functions to a table of its own (a
-- temporary one needs no other grant) and, now that they run as the owner,
-- write 'c', 'r' or 't' entries through them at will. So only the owner
-- may use them.
REVOKE EXECUTE ON FUNCTION
    session.log_inserted(), session.log_updated(), session.log_deleted(),
    session.log_truncated()
FROM PUBLIC;
