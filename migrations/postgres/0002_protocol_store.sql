-- The WhatsApp protocol store (whatsapp-rust's storage Backend) and the
-- per-session leases. Every row belongs to one session (today a tenant, by
-- its id) through session_id. There is deliberately no foreign key to
-- tenants: a tenant's protocol store may live in a database of its own
-- (tenants.store_dsn). Store::delete_protocol_rows removes a session's rows,
-- and Store::delete_tenant calls it for the shared database.
--
-- Same tables on SQLite (INTEGER, BLOB). Unsuffixed times are unix
-- milliseconds, as in 0001; columns ending in _secs hold the unix seconds
-- that whatsapp-rust passes in.

-- The session's own device: keys, registration, account. serde_json of
-- wacore's Device, which keeps newer fields readable by #[serde(default)].
CREATE TABLE wa_devices (
    session_id  TEXT PRIMARY KEY,
    device_json TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Signal: remote identity keys, sessions, our prekeys, sender keys.
CREATE TABLE wa_identities (
    session_id   TEXT NOT NULL,
    address      TEXT NOT NULL,
    identity_key BYTEA NOT NULL,
    PRIMARY KEY (session_id, address)
);

CREATE TABLE wa_signal_sessions (
    session_id TEXT NOT NULL,
    address    TEXT NOT NULL,
    record     BYTEA NOT NULL,
    PRIMARY KEY (session_id, address)
);

CREATE TABLE wa_prekeys (
    session_id TEXT NOT NULL,
    prekey_id  BIGINT NOT NULL,
    record     BYTEA NOT NULL,
    -- 1 once the server has it (mark_prekeys_uploaded), else 0.
    uploaded   BIGINT NOT NULL,
    PRIMARY KEY (session_id, prekey_id)
);

CREATE TABLE wa_signed_prekeys (
    session_id       TEXT NOT NULL,
    signed_prekey_id BIGINT NOT NULL,
    record           BYTEA NOT NULL,
    PRIMARY KEY (session_id, signed_prekey_id)
);

CREATE TABLE wa_sender_keys (
    session_id TEXT NOT NULL,
    address    TEXT NOT NULL,
    record     BYTEA NOT NULL,
    PRIMARY KEY (session_id, address)
);

-- App-state sync: keys, collection versions, mutation MACs.
CREATE TABLE wa_app_state_keys (
    session_id    TEXT NOT NULL,
    key_id        BYTEA NOT NULL,
    key_data      BYTEA NOT NULL,
    fingerprint   BYTEA NOT NULL,
    key_timestamp BIGINT NOT NULL,
    -- Grows with every write, so the most recently stored key is the one
    -- with the largest value (get_latest_sync_key_id).
    stored_seq    BIGINT NOT NULL,
    PRIMARY KEY (session_id, key_id)
);

CREATE TABLE wa_app_state_versions (
    session_id      TEXT NOT NULL,
    collection      TEXT NOT NULL,
    -- serde_json of wacore's HashState.
    hash_state_json TEXT NOT NULL,
    PRIMARY KEY (session_id, collection)
);

CREATE TABLE wa_app_state_mutation_macs (
    session_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    index_mac  BYTEA NOT NULL,
    version    BIGINT NOT NULL,
    value_mac  BYTEA NOT NULL,
    PRIMARY KEY (session_id, collection, index_mac)
);

-- Which devices of a group already have our sender key.
CREATE TABLE wa_sender_key_devices (
    session_id TEXT NOT NULL,
    group_jid  TEXT NOT NULL,
    device_jid TEXT NOT NULL,
    has_key    BIGINT NOT NULL,
    PRIMARY KEY (session_id, group_jid, device_jid)
);
CREATE INDEX wa_sender_key_devices_by_device ON wa_sender_key_devices (session_id, device_jid);

-- LID <-> phone number. created_at and updated_at are whatsapp-rust's
-- (unix seconds), stored as given.
CREATE TABLE wa_lid_mappings (
    session_id      TEXT NOT NULL,
    lid             TEXT NOT NULL,
    phone_number    TEXT NOT NULL,
    created_at_secs BIGINT NOT NULL,
    updated_at_secs BIGINT NOT NULL,
    learning_source TEXT NOT NULL,
    PRIMARY KEY (session_id, lid)
);
CREATE INDEX wa_lid_mappings_by_phone ON wa_lid_mappings (session_id, phone_number);

CREATE TABLE wa_base_keys (
    session_id TEXT NOT NULL,
    address    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    base_key   BYTEA NOT NULL,
    PRIMARY KEY (session_id, address, message_id)
);

-- A user's known devices (usync). devices_json: serde_json of the list.
CREATE TABLE wa_device_lists (
    session_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    devices_json   TEXT NOT NULL,
    list_timestamp BIGINT NOT NULL,
    phash          TEXT,
    raw_id         BIGINT,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE wa_group_metadata (
    session_id TEXT NOT NULL,
    group_jid  TEXT NOT NULL,
    metadata   BYTEA NOT NULL,
    PRIMARY KEY (session_id, group_jid)
);

-- Trusted-contact privacy tokens. An empty token is a placeholder that only
-- carries sender_timestamp_secs.
CREATE TABLE wa_tc_tokens (
    session_id            TEXT NOT NULL,
    jid                   TEXT NOT NULL,
    token                 BYTEA NOT NULL,
    token_timestamp_secs  BIGINT NOT NULL,
    sender_timestamp_secs BIGINT,
    PRIMARY KEY (session_id, jid)
);

-- Payloads of messages we sent, kept to answer retry receipts.
CREATE TABLE wa_sent_messages (
    session_id     TEXT NOT NULL,
    chat_jid       TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    payload        BYTEA NOT NULL,
    stored_at_secs BIGINT NOT NULL,
    PRIMARY KEY (session_id, chat_jid, message_id)
);
CREATE INDEX wa_sent_messages_by_age ON wa_sent_messages (session_id, stored_at_secs);

-- Decrypted inbound messages whose durability hook has not committed yet:
-- replayed after a crash instead of lost.
CREATE TABLE wa_pending_inbound (
    session_id     TEXT NOT NULL,
    chat           TEXT NOT NULL,
    sender         TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    message        BYTEA NOT NULL,
    stored_at_secs BIGINT NOT NULL,
    PRIMARY KEY (session_id, chat, sender, message_id)
);
CREATE INDEX wa_pending_inbound_by_age ON wa_pending_inbound (session_id, stored_at_secs);

-- Secrets of messages, to decrypt later add-ons (votes, reactions, edits).
-- expires_at_secs = 0 means never; message_ts_secs = 0 means unknown.
CREATE TABLE wa_msg_secrets (
    session_id      TEXT NOT NULL,
    chat            TEXT NOT NULL,
    sender          TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    secret          BYTEA NOT NULL,
    expires_at_secs BIGINT NOT NULL,
    message_ts_secs BIGINT NOT NULL,
    PRIMARY KEY (session_id, chat, sender, message_id)
);
CREATE INDEX wa_msg_secrets_by_expiry ON wa_msg_secrets (session_id, expires_at_secs)
    WHERE expires_at_secs <> 0;

-- Which node runs a session. A node holds the lease while expires_at is in
-- the future (database clock) and renews it by its token; a takeover adds
-- one to the token, so a former holder's token never matches again.
-- SQLite has one process per database (the <db>.lock flock), so there the
-- lease always goes to that process; the table is kept for one code path.
CREATE TABLE session_leases (
    session_id  TEXT PRIMARY KEY,
    owner_node  TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL
);
