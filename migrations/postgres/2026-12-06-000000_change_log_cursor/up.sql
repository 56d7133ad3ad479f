-- A cursor no open transaction can stall.
--
-- Until now a reader took as final only entries below the oldest
-- transaction still running anywhere in the cluster (its xmin), so one
-- transaction left open (an application "idle in transaction", a
-- `BEGIN; SELECT pg_current_xact_id();` in any database) held every reader
-- back: each read returned everything since, and pruning past it expired
-- every cursor.
--
-- Now a reader reads by sequence number, and remembers the transactions
-- that were still open when it read. Entries are numbered at insert (`seq`,
-- an identity: a sequence without a per-session cache, so numbers are taken
-- in increasing order server-wide) and stamped with their top-level
-- transaction's id (`xid`). A read takes, from one snapshot, the entries
-- with a number past the cursor's, the entries of the transactions the
-- cursor still waits for, and the snapshot's list of open transactions
-- (pg_snapshot_xip). Every entry numbered below the newest one it saw that
-- it did not see belongs to one of those: a number is taken after the
-- transaction has its id (the log's triggers run after the write that
-- assigned it), and a transaction that got its id after the snapshot takes
-- numbers after every number the snapshot shows. So the next cursor is
-- (the newest number read, the open transactions), and a read returns each
-- entry once, however long any transaction stays open; one open for hours
-- costs its own entries arriving when it commits, and nothing else.
--
-- Pruning by marks. An entry may be deleted only once every reader that
-- keeps up has read it: once it has been visible for the retention window,
-- not merely written that long ago (a transaction open past the window
-- commits entries stamped long before). So pruning first records a mark
-- (the time, the newest visible number, the snapshot), and deletes only
-- entries visible in a mark older than the window. The newest mark so
-- used is kept in change_log_state: a cursor behind its number, or still
-- waiting for a transaction visible in its snapshot, may have lost entries
-- and expires; no other cursor does.

-- Reads go by number; the (xid, seq) primary key serves the open
-- transactions' entries. Pruning goes by number too, so the index by age goes.
CREATE UNIQUE INDEX changes_seq_idx ON session.changes (seq);
DROP INDEX session.changes_recorded_at_idx;

CREATE TABLE session.change_log_marks (
    taken_at    timestamptz NOT NULL DEFAULT now(),
    -- Every entry visible in `snapshot` is numbered at most this.
    through_seq bigint      NOT NULL,
    snapshot    pg_snapshot NOT NULL
);
CREATE INDEX change_log_marks_taken_at_idx ON session.change_log_marks (taken_at);

-- `pruned_through` (an xid) stays for readers of the previous version,
-- kept true: the newest transaction whose entries were deleted.
ALTER TABLE session.change_log_state
    ADD COLUMN pruned_seq      bigint NOT NULL DEFAULT 0,
    ADD COLUMN pruned_snapshot pg_snapshot;

-- Deletes at most `batch` entries that have been visible for `retention`
-- (seconds), recording a mark first; returns how many went. Called again
-- until it returns less than `batch`. SECURITY DEFINER, so a service role
-- may prune without any right to write the log itself; its search_path is
-- pinned so no other schema's objects can stand in for the catalog's.
CREATE FUNCTION session.prune_change_log(retention double precision, batch bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mark   session.change_log_marks;
    state  session.change_log_state;
    gone   bigint;
    top    xid8;
BEGIN
    -- At most one mark a second, however often this is called.
    IF NOT EXISTS (SELECT 1 FROM session.change_log_marks
                   WHERE taken_at > now() - interval '1 second') THEN
        INSERT INTO session.change_log_marks (through_seq, snapshot)
        SELECT coalesce((SELECT max(seq) FROM session.changes),
                        (SELECT pruned_seq FROM session.change_log_state)),
               pg_current_snapshot();
    END IF;
    SELECT * INTO mark FROM session.change_log_marks
    WHERE taken_at <= now() - make_interval(secs => retention)
    ORDER BY taken_at DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Locks the state row: two pruners take turns.
    SELECT * INTO state FROM session.change_log_state FOR UPDATE;
    IF mark.through_seq < state.pruned_seq THEN
        RETURN 0;
    END IF;
    WITH deleted AS (
        DELETE FROM session.changes
        WHERE seq IN (
            SELECT seq FROM session.changes
            WHERE seq <= mark.through_seq
              AND pg_visible_in_snapshot(xid, mark.snapshot)
            ORDER BY seq
            LIMIT batch)
        RETURNING xid
    )
    SELECT count(*), max(xid::text)::xid8 INTO gone, top FROM deleted;
    -- In the same transaction as the deletion: a reader sees both or neither.
    UPDATE session.change_log_state
    SET pruned_seq = mark.through_seq,
        pruned_snapshot = mark.snapshot,
        pruned_through = CASE WHEN top IS NULL THEN pruned_through
                              ELSE greatest(pruned_through, top) END;
    IF gone < batch THEN
        DELETE FROM session.change_log_marks WHERE taken_at < mark.taken_at;
    END IF;
    RETURN gone;
END
$$;
REVOKE EXECUTE ON FUNCTION session.prune_change_log(double precision, bigint) FROM PUBLIC;

-- Emptying the log by hand (TRUNCATE waits for every writer of it to end)
-- loses entries up to the newest number taken: every cursor before it, or
-- waiting for a transaction that has ended, expires.
CREATE OR REPLACE FUNCTION session.log_emptied() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE session.change_log_state
    SET pruned_through = pg_current_xact_id(),
        pruned_seq = (SELECT last_value FROM session.changes_seq_seq),
        pruned_snapshot = pg_current_snapshot();
    RETURN NULL;
END
$$;
