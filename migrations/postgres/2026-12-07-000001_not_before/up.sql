-- The "not before" mark, durable (session_core's SessionStore::not_before):
-- every session minted before it is invalid, on every instance, and a
-- restored older copy of the database cannot bring those sessions back
-- while any instance that knew the mark runs (it writes the mark back).
--
--   mark           the mark, only ever raised (one statement:
--                  GREATEST of the stored one and the new one);
--   raised_by      who raised it to its value (an API key's name, in the
--                  grammar of sessions.revoked_by), the revoker of the
--                  sessions the sweep revokes; NULL when no key asked;
--   swept_through  the mark whose marked sessions have all been revoked
--                  (reason 'admin'), so the sweep runs once per raise and
--                  resumes after a failure; NULL until a sweep completes.
--
-- One row at most (only_row is always true). Instants are checked to the
-- range the domain reads (years 0001 to 9999, as 2026-12-06-000002_finite_times):
-- a new table holds no older rows, so constraints check everything.
CREATE TABLE session.not_before (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    mark          timestamptz NOT NULL,
    raised_by     text,
    swept_through timestamptz,
    CONSTRAINT not_before_mark_in_range CHECK (
        mark BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'),
    CONSTRAINT not_before_swept_in_range CHECK (
        swept_through BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'),
    CONSTRAINT not_before_raised_by_grammar CHECK (
        raised_by ~ '^[a-z][a-z0-9_]{0,31}$')
);

-- A raise reaches every instance through the change log, as a revocation
-- does: an entry of kind 'n', with no token hash. Readers read the mark
-- from this table in the same statement, never from the entry. Readers
-- older than this migration take an unknown kind for "reload everything".
ALTER TABLE session.changes DROP CONSTRAINT changes_kind;
ALTER TABLE session.changes ADD CONSTRAINT changes_kind
    CHECK (kind IN ('c', 'r', 't', 'n'));
ALTER TABLE session.changes DROP CONSTRAINT changes_token_hash;
ALTER TABLE session.changes ADD CONSTRAINT changes_token_hash CHECK (
    CASE WHEN kind IN ('t', 'n') THEN token_hash IS NULL
         ELSE octet_length(token_hash) = 32 END);

-- Runs as its owner, like the other logging functions
-- (2026-12-06-000001_log_written_by_triggers), so a role that raises the
-- mark needs no privilege on the log, and no other role may attach it.
CREATE FUNCTION session.log_not_before() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind) VALUES ('n');
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION session.log_not_before() FROM PUBLIC;

CREATE TRIGGER not_before_logged_insert
    AFTER INSERT ON session.not_before
    FOR EACH ROW EXECUTE FUNCTION session.log_not_before();
-- Only a mark that moved: a raise to a lower mark, or a recorded sweep,
-- logs nothing.
CREATE TRIGGER not_before_logged_update
    AFTER UPDATE ON session.not_before
    FOR EACH ROW WHEN (NEW.mark IS DISTINCT FROM OLD.mark)
    EXECUTE FUNCTION session.log_not_before();
