-- The schema stays: it also holds the migrations bookkeeping table.
DROP TABLE session.sessions;
