DROP FUNCTION session.prune_events(timestamptz, bigint);
DROP FUNCTION session.sequence_events(bigint);
DROP TABLE session.event_log_state;
DROP TABLE session.events;
