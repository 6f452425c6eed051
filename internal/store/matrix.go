package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

const (
	insertTxnQuery = `
		INSERT INTO appservice_txns (txn_id, received_at) VALUES (?1, ?2)
		ON CONFLICT (txn_id) DO NOTHING
	`
	pruneTxnsQuery     = `DELETE FROM appservice_txns WHERE received_at < ?1`
	putMembershipQuery = `
		INSERT INTO matrix_memberships (room_id, user_id, membership, event_id, updated_at)
		VALUES (?1, ?2, ?3, ?4, ?5)
		ON CONFLICT (room_id, user_id) DO UPDATE SET
			membership = excluded.membership, event_id = excluded.event_id, updated_at = excluded.updated_at
	`
	getMembershipQuery = `SELECT membership FROM matrix_memberships WHERE room_id = ?1 AND user_id = ?2`
	putRoomQuery       = `
		INSERT INTO matrix_rooms (room_id, creator, event_id, created_at) VALUES (?1, ?2, ?3, ?4)
		ON CONFLICT (room_id) DO NOTHING
	`
	getRecordedMembershipQuery = `
		SELECT EXISTS (SELECT 1 FROM matrix_rooms WHERE room_id = ?1),
			(SELECT membership FROM matrix_memberships WHERE room_id = ?1 AND user_id = ?2)
	`
	putCallMemberQuery = `
		INSERT INTO matrix_call_members (room_id, state_key, user_id, device_id, application, call_id,
			scope, focus_selection, service_url, event_id, joined_at, expires_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
		ON CONFLICT (room_id, state_key) DO UPDATE SET
			user_id = excluded.user_id, device_id = excluded.device_id, application = excluded.application,
			call_id = excluded.call_id, scope = excluded.scope, focus_selection = excluded.focus_selection,
			service_url = excluded.service_url, event_id = excluded.event_id, joined_at = excluded.joined_at,
			expires_at = excluded.expires_at
	`
	deleteCallMemberQuery = `DELETE FROM matrix_call_members WHERE room_id = ?1 AND state_key = ?2`
	callMemberColumns     = `room_id, state_key, user_id, device_id, application, call_id, scope,
		focus_selection, service_url, event_id, joined_at, expires_at`
	getCallMembersQuery = `SELECT ` + callMemberColumns + ` FROM matrix_call_members WHERE room_id = ?1
		ORDER BY joined_at, state_key`
	getCallRoomsQuery = `SELECT DISTINCT room_id FROM matrix_call_members
		WHERE expires_at IS NULL OR expires_at > ?1 ORDER BY room_id`
	getExpiredCallMembersQuery = `SELECT ` + callMemberColumns + ` FROM matrix_call_members
		WHERE expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY expires_at`
	endExpiredCallMembersQuery = `DELETE FROM matrix_call_members
		WHERE expires_at IS NOT NULL AND expires_at <= ?1 RETURNING ` + callMemberColumns
)

// MatrixMembership is a user's m.room.member state in a Matrix room.
type MatrixMembership struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
	At         time.Time
}

// MatrixCallMember is one MatrixRTC call membership (org.matrix.msc3401.call.member state),
// keyed by room and state key and attributed to the event's sender (UserID).
type MatrixCallMember struct {
	RoomID   string
	StateKey string
	UserID   string
	DeviceID string
	// Joined is false for the empty content that ends the membership: ApplyMatrixTxn deletes
	// the row. Rows read back always have Joined set.
	Joined         bool
	Application    string
	CallID         string
	Scope          string
	FocusSelection string
	ServiceURL     string
	EventID        string
	At             time.Time
	// ExpiresAt is the zero time when the membership declared no expiry.
	ExpiresAt time.Time
}

// MatrixRoom is a room whose m.room.create event the bridge received.
type MatrixRoom struct {
	RoomID  string
	Creator string
	EventID string
	At      time.Time
}

// MatrixTxn is what one appservice transaction changes, in event order.
type MatrixTxn struct {
	Rooms       []MatrixRoom
	Memberships []MatrixMembership
	CallMembers []MatrixCallMember
}

// ApplyMatrixTxn records the appservice transaction txnID and applies txn, in one database
// transaction. It returns applied=false, changing nothing, when txnID was recorded before: the
// homeserver retries a transaction until it is acknowledged, so a retry must be a no-op.
func (s *Store) ApplyMatrixTxn(ctx context.Context, txnID string, txn MatrixTxn) (applied bool, err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("apply matrix txn %s: %w", txnID, err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	res, err := tx.ExecContext(ctx, insertTxnQuery, txnID, millis(time.Now()))
	if err != nil {
		return false, fmt.Errorf("apply matrix txn %s: %w", txnID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err // seen before (n == 0): nothing to do
	}
	for _, r := range txn.Rooms {
		if _, err := tx.ExecContext(ctx, putRoomQuery, r.RoomID, r.Creator, r.EventID, millis(r.At)); err != nil {
			return false, fmt.Errorf("apply matrix txn %s: room: %w", txnID, err)
		}
	}
	for _, m := range txn.Memberships {
		if _, err := tx.ExecContext(ctx, putMembershipQuery, m.RoomID, m.UserID, m.Membership, m.EventID, millis(m.At)); err != nil {
			return false, fmt.Errorf("apply matrix txn %s: membership: %w", txnID, err)
		}
	}
	for _, c := range txn.CallMembers {
		if !c.Joined {
			_, err = tx.ExecContext(ctx, deleteCallMemberQuery, c.RoomID, c.StateKey)
		} else {
			var expires sql.NullInt64
			if !c.ExpiresAt.IsZero() {
				expires = sql.NullInt64{Int64: millis(c.ExpiresAt), Valid: true}
			}
			_, err = tx.ExecContext(ctx, putCallMemberQuery, c.RoomID, c.StateKey, c.UserID, c.DeviceID,
				c.Application, c.CallID, c.Scope, c.FocusSelection, c.ServiceURL, c.EventID, millis(c.At), expires)
		}
		if err != nil {
			return false, fmt.Errorf("apply matrix txn %s: call member: %w", txnID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("apply matrix txn %s: commit: %w", txnID, err)
	}
	return true, nil
}

// MatrixMembershipOf returns userID's last known membership of roomID ("join", "leave", …), or
// ErrNotFound when no transaction mentioned it.
func (s *Store) MatrixMembershipOf(ctx context.Context, roomID, userID string) (string, error) {
	var m string
	err := s.r.QueryRowContext(ctx, getMembershipQuery, roomID, userID).Scan(&m)
	if err == sql.ErrNoRows {
		return "", fmt.Errorf("membership of %s in %s: %w", userID, roomID, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	return m, nil
}

// MatrixRecordedMembership returns userID's last known membership of roomID ("" when no
// transaction mentioned it) and whether the bridge saw the room's creation. When it did, the
// record is complete (every membership change since reached the bridge in order), so "" means
// the user never joined; when it did not, the record says nothing about users it does not list.
func (s *Store) MatrixRecordedMembership(ctx context.Context, roomID, userID string) (membership string, roomSeen bool, err error) {
	var m sql.NullString
	if err := s.r.QueryRowContext(ctx, getRecordedMembershipQuery, roomID, userID).Scan(&roomSeen, &m); err != nil {
		return "", false, fmt.Errorf("recorded membership of %s in %s: %w", userID, roomID, err)
	}
	return m.String, roomSeen, nil
}

// MatrixCallMembers returns the current call memberships in roomID, oldest first.
func (s *Store) MatrixCallMembers(ctx context.Context, roomID string) ([]MatrixCallMember, error) {
	return s.queryCallMembers(ctx, "call members of "+roomID, getCallMembersQuery, roomID)
}

// MatrixCallRooms returns the rooms that have at least one call membership that has not
// expired, in room ID order. A membership past its expiry still has its row until the expiry
// loop ends it (EndExpiredMatrixCallMembers); it does not count here.
func (s *Store) MatrixCallRooms(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, getCallRoomsQuery, millis(time.Now()))
	if err != nil {
		return nil, fmt.Errorf("call rooms: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var roomID string
		if err := rows.Scan(&roomID); err != nil {
			return nil, fmt.Errorf("call rooms: %w", err)
		}
		out = append(out, roomID)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("call rooms: %w", err)
	}
	return out, nil
}

// ExpiredMatrixCallMembers returns the call memberships whose expiry is at or before now.
func (s *Store) ExpiredMatrixCallMembers(ctx context.Context, now time.Time) ([]MatrixCallMember, error) {
	return s.queryCallMembers(ctx, "expired call members", getExpiredCallMembersQuery, millis(now))
}

// EndExpiredMatrixCallMembers deletes the call memberships whose expiry is at or before now and
// returns them: homeservers without delayed events (MSC4140) never end a crashed client's
// membership, so the node does.
func (s *Store) EndExpiredMatrixCallMembers(ctx context.Context, now time.Time) ([]MatrixCallMember, error) {
	return s.scanCallMembers(ctx, s.w, "end expired call members", endExpiredCallMembersQuery, millis(now))
}

func (s *Store) queryCallMembers(ctx context.Context, what, query string, args ...any) ([]MatrixCallMember, error) {
	return s.scanCallMembers(ctx, s.r, what, query, args...)
}

func (s *Store) scanCallMembers(ctx context.Context, db *sql.DB, what, query string, args ...any) ([]MatrixCallMember, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []MatrixCallMember
	for rows.Next() {
		var c MatrixCallMember
		var at int64
		var expires sql.NullInt64
		if err := rows.Scan(&c.RoomID, &c.StateKey, &c.UserID, &c.DeviceID, &c.Application, &c.CallID, &c.Scope,
			&c.FocusSelection, &c.ServiceURL, &c.EventID, &at, &expires); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		c.Joined, c.At = true, fromMillis(at)
		if expires.Valid {
			c.ExpiresAt = fromMillis(expires.Int64)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// PruneAppserviceTxns forgets the appservice transaction IDs received before before and returns
// how many it deleted. A homeserver retries a transaction until it is acknowledged, minutes or
// hours at most; an ID older than that will not come back, and forgetting it only means that a
// replay of it would be applied again.
func (s *Store) PruneAppserviceTxns(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, pruneTxnsQuery, millis(before))
	if err != nil {
		return 0, fmt.Errorf("prune appservice txns: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune appservice txns: %w", err)
	}
	return n, nil
}
