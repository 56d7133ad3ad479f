DROP TRIGGER changes_wake_at_commit ON session.changes;
DROP FUNCTION session.wake_at_commit();
