-- v2 -> v3: the Matrix bridge's appservice transactions, room memberships and call memberships
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
