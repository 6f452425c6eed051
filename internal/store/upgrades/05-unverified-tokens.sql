-- v4 -> v5: tokens issued without a verified Matrix room membership, marked in the call history
CREATE TABLE unverified_tokens (
    room_name      TEXT    NOT NULL,
    identity       TEXT    NOT NULL,
    matrix_room_id TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (room_name, identity)
) STRICT;
