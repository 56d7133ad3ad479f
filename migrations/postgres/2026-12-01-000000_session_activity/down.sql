DROP TRIGGER sessions_activity_truncated ON session.sessions;
DROP TRIGGER sessions_activity_deleted ON session.sessions;
DROP FUNCTION session.activity_follows_truncates();
DROP FUNCTION session.activity_follows_deletes();
DROP TABLE session.session_activity;
