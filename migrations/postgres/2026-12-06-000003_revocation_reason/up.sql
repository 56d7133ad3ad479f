-- Why each session was revoked (session_core::RevocationReason), written
-- by the statement that sets revoked_at and, like it, never changed after.
--
-- NULL while active, and NULL for sessions revoked before this migration:
-- readers show "no reason recorded". Otherwise a lowercase identifier, a
-- letter a-z and up to 31 of a-z, 0-9 and _: the domain's grammar, in the
-- schema too, so rows other SQL writes cannot hold what the domain refuses
-- (readers still check, and skip and count a row they refuse). PostgreSQL's
-- regular expressions take bracket ranges as code points, whatever the
-- collation, so [a-z] is the 26 ASCII letters.
--
-- A constraint on this column alone, unlike the NOT VALID checks
-- 2026-12-06-000002_finite_times replaced: every row already stored holds
-- NULL here, which passes, so no old row can fail it when it is revoked.
-- NOT VALID skips only the scan that would prove that, under a lock that
-- would stop every write for as long as the scan of a large table takes;
-- new row versions are checked all the same.
ALTER TABLE session.sessions
    ADD COLUMN revocation_reason text,
    ADD CONSTRAINT sessions_revocation_reason_grammar CHECK (
        revocation_reason ~ '^[a-z][a-z0-9_]{0,31}$'
    ) NOT VALID,
    ADD CONSTRAINT sessions_revocation_reason_revoked CHECK (
        revocation_reason IS NULL OR revoked_at IS NOT NULL
    ) NOT VALID;

-- A revocation is final, and its reason with it: the reason of a revoked
-- session is never rewritten, by the store (which sets it only with
-- revoked_at, where revoked_at is NULL) or by other SQL. The trigger of
-- 2026-12-06-000001_log_written_by_triggers refuses it, as it refuses a
-- rewritten revoked_at, so a later reader (an events feed reading the log
-- in commit order and the reason from the row) reads the reason the
-- revocation committed. A session revoked before this migration keeps its
-- NULL.
CREATE OR REPLACE FUNCTION session.refuse_identity_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'session % is revoked, and a revocation is never undone or rewritten',
                OLD.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'sessions_revoked_at_set_once',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'revoked_at',
                  HINT = 'Create a new session instead.';
    END IF;
    IF OLD.revoked_at IS NOT NULL
       AND NEW.revocation_reason IS DISTINCT FROM OLD.revocation_reason THEN
        RAISE EXCEPTION 'session % is revoked, and its revocation reason is never rewritten',
                OLD.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'sessions_revocation_reason_set_once',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
                  COLUMN = 'revocation_reason';
    END IF;
    RAISE EXCEPTION 'session %: its % cannot be rewritten', OLD.id,
            array_to_string(ARRAY[
                CASE WHEN NEW.id IS DISTINCT FROM OLD.id THEN 'id' END,
                CASE WHEN NEW.account_id IS DISTINCT FROM OLD.account_id THEN 'account_id' END,
                CASE WHEN NEW.token_hash IS DISTINCT FROM OLD.token_hash THEN 'token_hash' END,
                CASE WHEN NEW.created_at IS DISTINCT FROM OLD.created_at THEN 'created_at' END
            ], ', ')
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'sessions_identity_unchanged',
              SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
              HINT = 'Revoke the session and create a new one.';
END
$$;

DROP TRIGGER sessions_refuse_identity_rewrite ON session.sessions;
CREATE TRIGGER sessions_refuse_identity_rewrite
    BEFORE UPDATE ON session.sessions
    FOR EACH ROW
    WHEN (NEW.id IS DISTINCT FROM OLD.id
       OR NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.token_hash IS DISTINCT FROM OLD.token_hash
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
       OR (OLD.revoked_at IS NOT NULL
           AND NEW.revocation_reason IS DISTINCT FROM OLD.revocation_reason))
    EXECUTE FUNCTION session.refuse_identity_rewrite();
