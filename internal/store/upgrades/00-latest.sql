-- v0 -> v2: fresh install
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
