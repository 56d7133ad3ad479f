-- Who revoked each session (session_core::Revoker): the name of the API
-- key that asked, written by the statement that sets revoked_at.
--
--   revoked_by  TEXT, NULL while active, for a revocation no key made, and
--               for sessions revoked before this migration. Otherwise a
--               lowercase identifier, the grammar of revocation_reason (see
--               2026-12-06-000003_revocation_reason), on a revoked session
--               only.
ALTER TABLE sessions ADD COLUMN revoked_by TEXT CHECK (
    revoked_by IS NULL OR (
        revoked_at IS NOT NULL
        AND length(revoked_by) BETWEEN 1 AND 32
        AND revoked_by GLOB '[a-z]*'
        AND revoked_by NOT GLOB '*[^a-z0-9_]*'
    )
);
