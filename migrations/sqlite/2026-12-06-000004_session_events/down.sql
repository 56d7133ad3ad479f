DROP TRIGGER session_events_revoked;
DROP TRIGGER session_events_created;
DROP TABLE session_event_log;
DROP TABLE session_events;
