-- Back to 2026-12-06-000006_revoked_by: no mark, and no 'n' entries.
DROP TABLE session.not_before;
DROP FUNCTION session.log_not_before();
DELETE FROM session.changes WHERE kind = 'n';
ALTER TABLE session.changes DROP CONSTRAINT changes_token_hash;
ALTER TABLE session.changes ADD CONSTRAINT changes_token_hash CHECK (
    CASE kind WHEN 't' THEN token_hash IS NULL ELSE octet_length(token_hash) = 32 END);
ALTER TABLE session.changes DROP CONSTRAINT changes_kind;
ALTER TABLE session.changes ADD CONSTRAINT changes_kind CHECK (kind IN ('c', 'r', 't'));
