-- A write may ask for its wake-up at its own commit.
--
-- Since 2026-11-30-000000_wake_after_commit, the writing store sends
-- NOTIFY session_changes from a statement of its own once its write has
-- committed: one hop more between a revocation and the followers' read of
-- it, the largest of a propagation's tail (docs/BENCHMARKS.md, "The log read
-- by index"). The NOTIFY left the writing transaction because a notifying
-- commit holds a lock PostgreSQL takes for the whole server across the
-- commit's WAL flush, so notifying commits queue behind each other; that is
-- what cost writers at saturation, where commits overlap. A write that
-- overlaps no other pays nothing for it.
--
-- So a transaction whose connection has the setting session.wake_at_commit
-- set to 'on' notifies from its first log entry that takes something away
-- (a revocation 'r', a truncation 't', a raised not-before mark 'n'), and
-- the notification goes out when the transaction commits (or not at all,
-- if it rolls back). Creations ('c') never notify from the commit: they
-- are the bulk of writes, and a follower that has not applied one yet
-- decides its token by reading the log anyway. The store turns the setting
-- on only for a write that may revoke and finds no other such write of its
-- own in flight, and off for every other write, at the checkout round trip
-- it already makes; every other write keeps the store's coalesced wake-up
-- after the commit. Other SQL never sets it and wakes no one, as before.
--
-- BEFORE, per row, with the setting in the WHEN clause: an AFTER trigger's
-- WHEN is evaluated as rows are queued, so a revoke-all of thousands would
-- call the function once per entry. Here the first such entry's call turns the
-- setting off for the rest of its transaction (set_config's is_local), so
-- the function runs once per transaction and an entry costs only the WHEN.
-- At the transaction's end the connection's own value comes back.
--
-- Setting it is a hint like any NOTIFY: any role may set a placeholder
-- setting, and a role that turns it on only wakes readers, who read the log
-- and find what is there. The function runs as its caller, which is always
-- the log's owner (the logging functions are SECURITY DEFINER), and only
-- the owner may use it, as the other logging functions.
CREATE FUNCTION session.wake_at_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('session_changes', '');
    PERFORM set_config('session.wake_at_commit', 'off', true);
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION session.wake_at_commit() FROM PUBLIC;

CREATE TRIGGER changes_wake_at_commit
    BEFORE INSERT ON session.changes
    FOR EACH ROW
    WHEN (NEW.kind <> 'c' AND current_setting('session.wake_at_commit', true) = 'on')
    EXECUTE FUNCTION session.wake_at_commit();
