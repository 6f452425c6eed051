package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const (
	insertCallQuery = `
		INSERT INTO call_history (room_name, room_sid, identity, participant_sid, joined_at)
		VALUES (?1, ?2, ?3, ?4, ?5)
	`
	leaveCallQuery = `
		UPDATE call_history SET left_at = ?2 WHERE participant_sid = ?1 AND left_at IS NULL
	`
	leaveAllQuery = `UPDATE call_history SET left_at = ?1 WHERE left_at IS NULL`
	getCallsQuery = `
		SELECT id, room_name, room_sid, identity, participant_sid, joined_at, left_at,
			EXISTS (SELECT 1 FROM unverified_tokens u
				WHERE u.room_name = call_history.room_name AND u.identity = call_history.identity
					AND call_history.joined_at BETWEEN u.issued_at AND u.expires_at)
		FROM call_history WHERE room_name = ?1
		ORDER BY joined_at DESC, id DESC
		LIMIT ?2
	`
	putUnverifiedQuery = `
		INSERT INTO unverified_tokens (room_name, identity, matrix_room_id, user_id, issued_at, expires_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6)
		ON CONFLICT (room_name, identity) DO UPDATE SET
			matrix_room_id = excluded.matrix_room_id, user_id = excluded.user_id,
			issued_at = excluded.issued_at, expires_at = excluded.expires_at
	`
	pruneUnverifiedQuery = `DELETE FROM unverified_tokens WHERE expires_at < ?1`
	// Only finished presences go: one still open (left_at NULL) is a call in progress, however
	// long ago it began.
	pruneCallsQuery = `DELETE FROM call_history WHERE left_at IS NOT NULL AND left_at < ?1`
	// A closed room goes once no presence refers to it (call_history.room_sid is a foreign key).
	pruneRoomsQuery = `
		DELETE FROM rooms WHERE closed_at IS NOT NULL AND closed_at < ?1
			AND sid NOT IN (SELECT room_sid FROM call_history)
	`
)

// CallRecord is one participant's presence in one room session.
type CallRecord struct {
	ID             int64
	RoomName       string
	RoomSID        string
	Identity       string
	ParticipantSID string
	JoinedAt       time.Time
	// LeftAt is the zero time while the participant is still in the room.
	LeftAt time.Time
	// MembershipUnverified is set when the participant joined with a token the Matrix token
	// service issued without a verified room membership (MarkUnverifiedToken).
	MembershipUnverified bool
}

// ParticipantJoined records that identity joined room roomName (server ID roomSID, which
// RoomOpened must have recorded: otherwise ErrNotFound) as participant participantSID at at.
func (s *Store) ParticipantJoined(ctx context.Context, roomName, roomSID, identity, participantSID string, at time.Time) error {
	_, err := s.w.ExecContext(ctx, insertCallQuery, roomName, roomSID, identity, participantSID, millis(at))
	if isForeignKey(err) {
		return fmt.Errorf("participant %s joined: room %s: %w", participantSID, roomSID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("participant %s joined: %w", participantSID, err)
	}
	return nil
}

// ParticipantLeft records that participant participantSID left at at. It returns ErrNotFound if
// no participant with that SID is in a room.
func (s *Store) ParticipantLeft(ctx context.Context, participantSID string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, leaveCallQuery, participantSID, millis(at))
	if err != nil {
		return fmt.Errorf("participant %s left: %w", participantSID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("participant %s left: %w", participantSID, err)
	} else if n == 0 {
		return fmt.Errorf("participant %s left: not in a room: %w", participantSID, ErrNotFound)
	}
	return nil
}

// CallHistory returns the latest limit presences in rooms named roomName, newest first; limit
// 0 or less means all of them.
func (s *Store) CallHistory(ctx context.Context, roomName string, limit int) ([]CallRecord, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.r.QueryContext(ctx, getCallsQuery, roomName, limit)
	if err != nil {
		return nil, fmt.Errorf("call history %q: %w", roomName, err)
	}
	defer rows.Close()
	var out []CallRecord
	for rows.Next() {
		rec, err := scanCall(rows)
		if err != nil {
			return nil, fmt.Errorf("call history %q: %w", roomName, err)
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("call history %q: %w", roomName, err)
	}
	return out, nil
}

func scanCall(rows *sql.Rows) (CallRecord, error) {
	var (
		rec      CallRecord
		joinedAt int64
		leftAt   sql.NullInt64
	)
	err := rows.Scan(&rec.ID, &rec.RoomName, &rec.RoomSID, &rec.Identity, &rec.ParticipantSID, &joinedAt, &leftAt,
		&rec.MembershipUnverified)
	if err != nil {
		return CallRecord{}, err
	}
	rec.JoinedAt = fromMillis(joinedAt)
	if leftAt.Valid {
		rec.LeftAt = fromMillis(leftAt.Int64)
	}
	return rec, nil
}

// PruneCallHistory deletes the presences that ended before before, the closed room sessions
// left without presences and the unverified-token marks that expired before before, in one
// transaction. It returns how many presences it deleted.
// Presences still open are kept whatever their age.
func (s *Store) PruneCallHistory(ctx context.Context, before time.Time) (int64, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("prune call history: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	res, err := tx.ExecContext(ctx, pruneCallsQuery, millis(before))
	if err != nil {
		return 0, fmt.Errorf("prune call history: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune call history: %w", err)
	}
	if _, err := tx.ExecContext(ctx, pruneRoomsQuery, millis(before)); err != nil {
		return 0, fmt.Errorf("prune closed rooms: %w", err)
	}
	if _, err := tx.ExecContext(ctx, pruneUnverifiedQuery, millis(before)); err != nil {
		return 0, fmt.Errorf("prune unverified tokens: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("prune call history: %w", err)
	}
	return n, nil
}

// MarkUnverifiedToken records that a token for identity in LiveKit room roomName, valid from
// issued to expires, was issued to userID for Matrix room matrixRoomID without a verified room
// membership: CallHistory marks the presences it admitted (MembershipUnverified). A newer mark
// for the same room and identity replaces the older.
func (s *Store) MarkUnverifiedToken(ctx context.Context, roomName, identity, matrixRoomID, userID string, issued, expires time.Time) error {
	if _, err := s.w.ExecContext(ctx, putUnverifiedQuery, roomName, identity, matrixRoomID, userID, millis(issued), millis(expires)); err != nil {
		return fmt.Errorf("mark unverified token of %s in %s: %w", identity, roomName, err)
	}
	return nil
}
