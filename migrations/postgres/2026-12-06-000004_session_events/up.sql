-- The events feed (session_core::port::events): one row per session
-- created and per session revoked, in one order every instance reads.
--
-- The change log cannot give that order: its numbers are taken at insert
-- and its entries become visible at commit, so two readers reading at
-- different times may see entries in different orders. So a *sequencer*
-- fixes the order once, durably: session.sequence_events, which any
-- instance may call, takes the lock on the one row of event_log_state,
-- reads the change log past the sequencer's own cursor (by the same rule
-- as a change-log read: a number, the transactions still open at the last
-- step, and every transaction from that step's xmax on), joins
-- session.sessions for the session's id, account, time and reason (set
-- once, with revoked_at, and never rewritten), and inserts the events with
-- consecutive positions after the last one. Events are inserted only under
-- that lock, and each step commits before the next takes it, so position
-- order is the order in which they became visible, and a reader that reads
-- `position > after ORDER BY position` misses nothing and repeats nothing.
--
-- Each session has at most one event of each kind (events_once): a step
-- may read an entry again (a transaction it still waited for, an entry of
-- a full page), and skips what is already an event.

CREATE TABLE session.events (
    position    bigint      PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('created', 'revoked')),
    session_id  uuid        NOT NULL,
    account_id  uuid        NOT NULL,
    at          timestamptz NOT NULL,
    reason      text
);
CREATE UNIQUE INDEX events_once ON session.events (session_id, kind);

-- The feed's state, one row, whose lock serializes sequencing steps:
--   history          a random id chosen once, so a cursor of another
--                    database (or of this one before a reset) is refused
--                    rather than answered with other events;
--   last_position    the newest position handed out;
--   pruned_through   every position up to it may be gone: a cursor before
--                    it is refused;
--   through_seq,     the sequencer's change-log cursor: every entry up to
--   open_xids,       through_seq has been sequenced, but those of the
--   open_from        transactions in open_xids and of every transaction
--                    from open_from on.
CREATE TABLE session.event_log_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    history         bigint  NOT NULL,
    last_position   bigint  NOT NULL DEFAULT 0,
    pruned_through  bigint  NOT NULL DEFAULT 0,
    through_seq     bigint  NOT NULL,
    open_xids       xid8[]  NOT NULL,
    open_from       xid8    NOT NULL
);

-- A random history, and a cursor at the log's head: the feed starts now.
INSERT INTO session.event_log_state (history, through_seq, open_xids, open_from)
SELECT ('x' || translate(gen_random_uuid()::text, '-', ''))::bit(64)::bigint,
       greatest((SELECT max(seq) FROM session.changes),
                (SELECT pruned_seq FROM session.change_log_state), 0),
       ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())),
       pg_snapshot_xmax(pg_current_snapshot());

-- One sequencing step: at most `batch` change-log entries read. Returns
-- the history, the newest position, and how many entries the step read (a
-- step that read `batch` may have left more). SECURITY DEFINER, so the service's role needs
-- only EXECUTE here and SELECT on the feed; its search_path is pinned.
CREATE FUNCTION session.sequence_events(batch bigint)
RETURNS TABLE (history bigint, head bigint, added bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Planned with each step's cursor: a generic plan cannot know that the
-- ranges past it are short, and could scan the whole log.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    state     session.event_log_state;
    change_log session.change_log_state;
    new_events bigint;
    page_size bigint;
    page_top  bigint;
    snap      pg_snapshot;
    visible   bigint;
BEGIN
    SELECT * INTO state FROM session.event_log_state FOR UPDATE;
    SELECT * INTO change_log FROM session.change_log_state;
    -- The change log was pruned (or emptied) past the sequencer's cursor:
    -- events may be lost, so the feed starts a new history at the log's
    -- head, and every reader's cursor is refused (it lists again).
    IF change_log.pruned_seq > state.through_seq
       OR (change_log.pruned_snapshot IS NOT NULL
           AND (state.open_from < pg_snapshot_xmax(change_log.pruned_snapshot)
                OR EXISTS (SELECT 1 FROM unnest(state.open_xids) AS o (xid)
                           WHERE pg_visible_in_snapshot(o.xid, change_log.pruned_snapshot)))) THEN
        UPDATE session.event_log_state s
        SET history = ('x' || translate(gen_random_uuid()::text, '-', ''))::bit(64)::bigint,
            pruned_through = s.last_position,
            through_seq = greatest((SELECT max(seq) FROM session.changes), change_log.pruned_seq),
            open_xids = ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())),
            open_from = pg_snapshot_xmax(pg_current_snapshot())
        RETURNING * INTO state;
        RETURN QUERY SELECT state.history, state.last_position, 0::bigint;
        RETURN;
    END IF;
    -- One statement, so the entries, the newest visible number and the
    -- snapshot's open transactions are of one snapshot.
    WITH snapshot AS MATERIALIZED (
        SELECT pg_current_snapshot() AS snap,
               (SELECT max(seq) FROM session.changes) AS visible
    ), page AS MATERIALIZED (
        SELECT c.seq,
               CASE c.kind WHEN 'c' THEN 'created' ELSE 'revoked' END AS kind,
               s.id, s.account_id,
               CASE c.kind WHEN 'c' THEN s.created_at ELSE s.revoked_at END AS at,
               CASE c.kind WHEN 'r' THEN s.revocation_reason END AS reason
        FROM session.changes c
        JOIN session.sessions s ON s.token_hash = c.token_hash
        WHERE (c.seq > state.through_seq
               OR c.xid = ANY (state.open_xids)
               OR c.xid >= state.open_from)
          AND (c.kind = 'c' OR (c.kind = 'r' AND s.revoked_at IS NOT NULL))
          AND NOT EXISTS (
              SELECT 1 FROM session.events e
              WHERE e.session_id = s.id
                AND e.kind = CASE c.kind WHEN 'c' THEN 'created' ELSE 'revoked' END)
        ORDER BY c.seq
        LIMIT batch
    ), firsts AS (
        -- A session's second entry of one kind in a page (its metadata
        -- rewritten by other SQL) is no second event.
        SELECT DISTINCT ON (id, kind) * FROM page ORDER BY id, kind, seq
    ), inserted AS (
        INSERT INTO session.events (position, kind, session_id, account_id, at, reason)
        SELECT state.last_position + row_number() OVER (ORDER BY seq),
               kind, id, account_id, at, reason
        FROM firsts
        RETURNING position
    )
    SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM page),
           (SELECT max(seq) FROM page), snapshot.snap, snapshot.visible
    INTO new_events, page_size, page_top, snap, visible
    FROM snapshot;
    IF page_size >= batch THEN
        -- A full page: entries past it remain; keep waiting for every
        -- transaction waited for before, and for those open now.
        UPDATE session.event_log_state s
        SET last_position = s.last_position + new_events,
            through_seq = greatest(s.through_seq, page_top),
            open_xids = ARRAY(SELECT DISTINCT x FROM unnest(
                s.open_xids || ARRAY(SELECT pg_snapshot_xip(snap))) AS x)
        RETURNING * INTO state;
    ELSE
        -- Every visible entry is sequenced: what is still to come belongs
        -- to the transactions open in this snapshot or after its xmax.
        UPDATE session.event_log_state s
        SET last_position = s.last_position + new_events,
            through_seq = greatest(s.through_seq, coalesce(visible, 0)),
            open_xids = ARRAY(SELECT pg_snapshot_xip(snap)),
            open_from = pg_snapshot_xmax(snap)
        RETURNING * INTO state;
    END IF;
    RETURN QUERY SELECT state.history, state.last_position, page_size;
END
$$;
REVOKE EXECUTE ON FUNCTION session.sequence_events(bigint) FROM PUBLIC;

-- Deletes at most `batch` of the oldest events, each older than `before`,
-- stopping at the first that is not; records the newest position deleted,
-- in the same transaction, so a reader sees both or neither.
CREATE FUNCTION session.prune_events(before timestamptz, batch bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    last_gone bigint;
    gone      bigint;
BEGIN
    PERFORM 1 FROM session.event_log_state FOR UPDATE;
    SELECT max(position), count(*) INTO last_gone, gone FROM (
        SELECT position FROM (
            SELECT position, at,
                   bool_and(at < before) OVER (ORDER BY position) AS all_old
            FROM (SELECT position, at FROM session.events
                  ORDER BY position LIMIT batch) AS oldest
        ) AS marked
        WHERE all_old
    ) AS prefix;
    IF gone = 0 THEN
        RETURN 0;
    END IF;
    DELETE FROM session.events WHERE position <= last_gone;
    UPDATE session.event_log_state
    SET pruned_through = greatest(pruned_through, last_gone);
    RETURN gone;
END
$$;
REVOKE EXECUTE ON FUNCTION session.prune_events(timestamptz, bigint) FROM PUBLIC;
