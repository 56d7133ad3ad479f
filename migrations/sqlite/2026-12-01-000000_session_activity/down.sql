DROP TRIGGER session_activity_follows_deletes;
DROP TABLE session_activity;
