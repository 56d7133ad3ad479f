ALTER TABLE sessions DROP COLUMN revoked_by;
