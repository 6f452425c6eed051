-- v3 -> v4: Matrix rooms whose creation the bridge saw in an appservice transaction
CREATE TABLE matrix_rooms (
    room_id    TEXT    PRIMARY KEY,
    creator    TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
