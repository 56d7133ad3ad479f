ALTER TABLE session.session_activity
    DROP CONSTRAINT session_activity_last_seen_at_range;
DROP TRIGGER sessions_domain_rules_updated ON session.sessions;
DROP TRIGGER sessions_domain_rules_inserted ON session.sessions;
DROP FUNCTION session.refuse_values_the_domain_rejects();
ALTER TABLE session.sessions
    ADD CONSTRAINT sessions_user_agent_text CHECK (user_agent !~ '[\x01-\x1f\x7f-\x9f]') NOT VALID,
    ADD CONSTRAINT sessions_label_text CHECK (label !~ '[\x01-\x1f\x7f-\x9f]') NOT VALID,
    ADD CONSTRAINT sessions_account_id_not_nil
        CHECK (account_id <> '00000000-0000-0000-0000-000000000000') NOT VALID;
