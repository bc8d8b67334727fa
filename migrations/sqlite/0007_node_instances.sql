-- One process per node id, and leases whose renewal costs one row per node.
--
-- Each `wago serve` process claims its node's row under an instance of its
-- own: the tag (`application_name`) its database connections carry. A
-- session lease belongs to the instance that took it and lives exactly as
-- long as that instance's node row: renewing the node renews all of them.

-- The process that holds the node's row.
ALTER TABLE nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';
-- 1 once the connections of a lapsed instance were cut, so that nothing it
-- sent can still land; its sessions may be taken only then.
ALTER TABLE nodes ADD COLUMN fenced BIGINT NOT NULL DEFAULT 0;
-- 1 while it shuts down: it still holds its sessions until it has released
-- them, but placement no longer gives it any.
ALTER TABLE nodes ADD COLUMN leaving BIGINT NOT NULL DEFAULT 0;
-- How many sessions it runs, as of its last renewal (placement reads this
-- instead of counting leases).
ALTER TABLE nodes ADD COLUMN sessions BIGINT NOT NULL DEFAULT 0;

DROP INDEX session_leases_by_owner;
ALTER TABLE session_leases ADD COLUMN instance TEXT NOT NULL DEFAULT '';
-- 1 while held, 0 once released; a held lease is live while its
-- instance's node row is.
ALTER TABLE session_leases RENAME COLUMN expires_at TO held;
UPDATE session_leases SET held = 1 WHERE held > 0;
-- A node's own leases, released at a new claim; and those of a lapsed node,
-- which placement takes over.
CREATE INDEX session_leases_held ON session_leases (owner_node, instance) WHERE held > 0;
