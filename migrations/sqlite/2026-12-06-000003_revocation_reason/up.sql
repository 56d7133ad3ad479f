-- Why each session was revoked, written by the statement that sets
-- revoked_at and never changed after (session_core::RevocationReason).
--
--   revocation_reason  TEXT, NULL while active, and NULL for sessions
--                      revoked before this migration (read as "no reason
--                      recorded"). Otherwise a lowercase identifier: a
--                      letter a-z, then up to 31 of a-z, 0-9 and _, the
--                      domain's grammar, so rows other SQL writes cannot
--                      hold what the domain refuses. GLOB, not LIKE: GLOB
--                      is case-sensitive and its ranges are code points.
--                      A reason only on a revoked session.
--
-- ALTER TABLE ADD COLUMN may carry a CHECK; SQLite tests it against the
-- rows already stored, and every one of them holds NULL, which passes.
ALTER TABLE sessions ADD COLUMN revocation_reason TEXT CHECK (
    revocation_reason IS NULL OR (
        revoked_at IS NOT NULL
        AND length(revocation_reason) BETWEEN 1 AND 32
        AND revocation_reason GLOB '[a-z]*'
        AND revocation_reason NOT GLOB '*[^a-z0-9_]*'
    )
);
