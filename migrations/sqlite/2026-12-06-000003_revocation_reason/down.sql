ALTER TABLE sessions DROP COLUMN revocation_reason;
