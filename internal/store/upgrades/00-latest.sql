-- v0 -> v6: fresh install
-- Times are Unix milliseconds (UTC).

CREATE TABLE api_keys (
    key        TEXT    PRIMARY KEY,
    secret     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE rooms (
    sid       TEXT    PRIMARY KEY,
    name      TEXT    NOT NULL,
    opened_at INTEGER NOT NULL,
    closed_at INTEGER
) STRICT;

CREATE TABLE call_history (
    id              INTEGER PRIMARY KEY,
    room_name       TEXT    NOT NULL,
    room_sid        TEXT    NOT NULL REFERENCES rooms (sid),
    identity        TEXT    NOT NULL,
    participant_sid TEXT    NOT NULL,
    joined_at       INTEGER NOT NULL,
    left_at         INTEGER
) STRICT;

CREATE INDEX call_history_room_idx ON call_history (room_name, joined_at);
CREATE INDEX call_history_open_participant_idx ON call_history (participant_sid) WHERE left_at IS NULL;

-- The Matrix bridge (bridge/matrix).
CREATE TABLE appservice_txns (
    txn_id      TEXT    PRIMARY KEY,
    received_at INTEGER NOT NULL
) STRICT;

CREATE TABLE matrix_memberships (
    room_id    TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    membership TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) STRICT;

CREATE TABLE matrix_call_members (
    room_id         TEXT    NOT NULL,
    state_key       TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    application     TEXT    NOT NULL,
    call_id         TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    focus_selection TEXT    NOT NULL,
    service_url     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    joined_at       INTEGER NOT NULL,
    expires_at      INTEGER,
    PRIMARY KEY (room_id, state_key)
) STRICT;

CREATE INDEX matrix_call_members_expiry_idx ON matrix_call_members (expires_at) WHERE expires_at IS NOT NULL;

-- Rooms whose m.room.create the bridge received: it has seen every membership change since.
CREATE TABLE matrix_rooms (
    room_id    TEXT    PRIMARY KEY,
    creator    TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Tokens the Matrix token service issued without a verified room membership
-- (matrix.unknown_membership = "serve_local"): CallHistory marks the presences they admitted.
CREATE TABLE unverified_tokens (
    room_name      TEXT    NOT NULL,
    identity       TEXT    NOT NULL,
    matrix_room_id TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (room_name, identity)
) STRICT;

-- The federation audit log (package federation, through cmd/entente): every trunk and every
-- forwarded token request. ended_at is NULL while the record is open; role is "offerer" or
-- "answerer" for a trunk, "forwarded" or "answered" for a token request.
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
