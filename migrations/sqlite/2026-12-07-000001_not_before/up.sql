-- The "not before" mark, durable (session_core's SessionStore::not_before):
-- one row at most, as the PostgreSQL migration of the same name.
--
--   mark           microseconds since the Unix epoch, UTC; only ever raised
--                  (one statement: max of the stored one and the new one);
--   raised_by      who raised it to its value (an API key's name, in the
--                  grammar of sessions.revoked_by); NULL when no key asked;
--   swept_through  microseconds: the mark whose marked sessions have all
--                  been revoked (reason 'admin'); NULL until a sweep completes.
--
-- Readers check the instants (session_core::port::store::stored_instant):
-- a value out of range reads as no mark, and the next raise replaces it.
CREATE TABLE not_before (
    only_row      INTEGER PRIMARY KEY CHECK (only_row = 1),
    mark          INTEGER NOT NULL,
    raised_by     TEXT CHECK (
        raised_by IS NULL OR (
            length(raised_by) BETWEEN 1 AND 32
            AND raised_by GLOB '[a-z]*'
            AND raised_by NOT GLOB '*[^a-z0-9_]*')),
    swept_through INTEGER
);
