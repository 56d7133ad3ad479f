-- The events sequencer looks each entry's session up by its token hash,
-- an index probe per entry, in a LATERAL subquery with a LIMIT that the
-- planner cannot flatten. As a plain join (2026-12-06-000004_session_events)
-- the planner hashed the whole sessions table at every step while the
-- table was under about half a million rows: 10 to 40 ms a step at 60,000
-- sessions on a throwaway server, growing with the table, for a step that
-- sequences one entry. Nothing else changes; CREATE OR REPLACE keeps the
-- function's owner and grants.
CREATE OR REPLACE FUNCTION session.sequence_events(batch bigint)
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
        CROSS JOIN LATERAL (
            SELECT id, account_id, created_at, revoked_at, revocation_reason
            FROM session.sessions
            WHERE token_hash = c.token_hash
            LIMIT 1) s
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
