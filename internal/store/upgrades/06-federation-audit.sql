-- v5 -> v6: the federation audit log: every trunk and every forwarded token request
CREATE TABLE federation_audit (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('trunk', 'token')),
    role           TEXT    NOT NULL,
    peer           TEXT    NOT NULL,
    room_id        TEXT    NOT NULL,
    media_room     TEXT    NOT NULL,
    call_id        TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    bytes_sent     INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    outcome        TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX federation_audit_started_idx ON federation_audit (started_at);
CREATE INDEX federation_audit_open_idx ON federation_audit (id) WHERE ended_at IS NULL;
