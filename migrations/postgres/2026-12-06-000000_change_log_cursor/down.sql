CREATE OR REPLACE FUNCTION session.log_emptied() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE session.change_log_state SET pruned_through = pg_current_xact_id();
    RETURN NULL;
END
$$;
DROP FUNCTION session.prune_change_log(double precision, bigint);
ALTER TABLE session.change_log_state
    DROP COLUMN pruned_snapshot,
    DROP COLUMN pruned_seq;
DROP TABLE session.change_log_marks;
CREATE INDEX changes_recorded_at_idx ON session.changes (recorded_at);
DROP INDEX session.changes_seq_idx;
