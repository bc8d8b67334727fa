-- The file of a media message (image, document, audio, video, sticker),
-- one row beside its message. The caption is the message's `text`.
-- `storage_key` names the bytes in the media storage (the disk or S3) while
-- they are kept: an outbound file until WhatsApp acknowledged the send, an
-- inbound one until retention deletes it; NULL afterwards, with `state`
-- saying why.
CREATE TABLE media (
    message_row BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    mimetype    TEXT NOT NULL,
    file_name   TEXT,
    -- Bytes of the plain file, and its SHA-256 (hex).
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    -- An audio sent or received as a voice note (1) or as a file (0).
    voice       BIGINT NOT NULL DEFAULT 0,
    -- 'stored', 'released' (sent, then let go), 'expired' (retention),
    -- 'remote' (not downloaded yet), 'failed' (the download failed: `error`).
    state       TEXT NOT NULL,
    storage_key TEXT,
    error       TEXT,
    -- Inbound: what downloading it from WhatsApp again takes (JSON).
    remote      TEXT,
    created_at  BIGINT NOT NULL
);
-- Retention deletes the oldest kept files first.
CREATE INDEX media_kept_by_time ON media (created_at) WHERE storage_key IS NOT NULL;
