-- The admin dashboard counts the messages of the last hour, in and out,
-- over every tenant: a range of this index, not a scan of the table.
CREATE INDEX messages_by_time ON messages (timestamp, direction);
