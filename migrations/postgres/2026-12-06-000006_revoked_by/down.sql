-- Back to 2026-12-06-000003_revocation_reason's trigger, then without the column.
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

ALTER TABLE session.sessions DROP COLUMN revoked_by;
