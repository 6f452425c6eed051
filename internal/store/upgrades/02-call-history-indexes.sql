-- v1 -> v2: indexes for CallHistory (by room name, newest first) and ParticipantLeft
CREATE INDEX call_history_room_idx ON call_history (room_name, joined_at);
CREATE INDEX call_history_open_participant_idx ON call_history (participant_sid) WHERE left_at IS NULL;
