-- Instants the domain can hold, in the schema too: years 0001 to 9999, UTC
-- (session_core::port::store::stored_instant says why those). PostgreSQL
-- also stores 'infinity', '-infinity' and years from 4713 BC to 294276,
-- which no reader can turn into a session: refused here, so another writer
-- cannot store them.
--
-- Checked by a trigger on what a statement writes, not by constraints on
-- every row version. The checks of 2026-11-29-000000_change_log (control
-- characters, the nil account) were NOT VALID constraints, and PostgreSQL
-- checks every new row version against those: a row stored before them, by
-- other SQL or under an older schema, could then not be revoked, and a
-- revoke-all of its account failed for every other session of it too,
-- leaving them active. The trigger checks a column only when an INSERT
-- writes it or an UPDATE changes it, so such a row is still skipped by
-- readers, and still revocable with the rest of its account. Each refusal
-- keeps its constraint's name and SQLSTATE (23514, check_violation).

ALTER TABLE session.sessions
    DROP CONSTRAINT sessions_user_agent_text,
    DROP CONSTRAINT sessions_label_text,
    DROP CONSTRAINT sessions_account_id_not_nil;

CREATE FUNCTION session.refuse_values_the_domain_rejects() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    earliest CONSTANT timestamptz := '0001-01-01 00:00:00+00';
    latest   CONSTANT timestamptz := '9999-12-31 23:59:59.999999+00';
    inserting CONSTANT boolean := TG_OP = 'INSERT';
BEGIN
    IF inserting AND NEW.account_id = '00000000-0000-0000-0000-000000000000' THEN
        RAISE EXCEPTION 'session %: account_id is the nil UUID', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_account_id_not_nil';
    END IF;
    -- Comparisons with an infinity are false, so the infinities are refused.
    IF inserting AND NOT (NEW.created_at BETWEEN earliest AND latest) THEN
        RAISE EXCEPTION 'session %: created_at is outside years 0001 to 9999', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_created_at_range';
    END IF;
    IF (inserting OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
       AND NOT (NEW.revoked_at BETWEEN earliest AND latest) THEN
        RAISE EXCEPTION 'session %: revoked_at is outside years 0001 to 9999', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_revoked_at_range';
    END IF;
    -- Unicode's Cc: U+0001-U+001F and U+007F-U+009F (text cannot hold U+0000).
    IF (inserting OR NEW.user_agent IS DISTINCT FROM OLD.user_agent)
       AND NEW.user_agent ~ '[\x01-\x1f\x7f-\x9f]' THEN
        RAISE EXCEPTION 'session %: user_agent holds a control character', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_user_agent_text';
    END IF;
    IF (inserting OR NEW.label IS DISTINCT FROM OLD.label)
       AND NEW.label ~ '[\x01-\x1f\x7f-\x9f]' THEN
        RAISE EXCEPTION 'session %: label holds a control character', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_label_text';
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION session.refuse_values_the_domain_rejects() FROM PUBLIC;

CREATE TRIGGER sessions_domain_rules_inserted
    BEFORE INSERT ON session.sessions
    FOR EACH ROW
    EXECUTE FUNCTION session.refuse_values_the_domain_rejects();

-- Only when a checked column changes: a revocation costs one comparison.
CREATE TRIGGER sessions_domain_rules_updated
    BEFORE UPDATE ON session.sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.user_agent IS DISTINCT FROM NEW.user_agent
          OR OLD.label IS DISTINCT FROM NEW.label)
    EXECUTE FUNCTION session.refuse_values_the_domain_rejects();

-- Every write of last_seen_at writes a new value, so a constraint checks
-- only what is written.
ALTER TABLE session.session_activity
    ADD CONSTRAINT session_activity_last_seen_at_range CHECK (
        last_seen_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'
    ) NOT VALID;
