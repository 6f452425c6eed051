package store

import (
	"context"
	"fmt"
	"time"
)

const (
	insertRoomQuery = `INSERT INTO rooms (sid, name, opened_at) VALUES (?1, ?2, ?3)`
	closeRoomQuery  = `UPDATE rooms SET closed_at = ?2 WHERE sid = ?1 AND closed_at IS NULL`
	closeAllRooms   = `UPDATE rooms SET closed_at = ?1 WHERE closed_at IS NULL`
)

// RoomOpened records that room name opened with server ID sid at at. The sid must be new.
func (s *Store) RoomOpened(ctx context.Context, name, sid string, at time.Time) error {
	if _, err := s.w.ExecContext(ctx, insertRoomQuery, sid, name, millis(at)); err != nil {
		return fmt.Errorf("room %s opened: %w", sid, err)
	}
	return nil
}

// RoomClosed records that the room with server ID sid closed at at. It returns ErrNotFound if
// no open room has that sid.
func (s *Store) RoomClosed(ctx context.Context, sid string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, closeRoomQuery, sid, millis(at))
	if err != nil {
		return fmt.Errorf("room %s closed: %w", sid, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("room %s closed: %w", sid, err)
	} else if n == 0 {
		return fmt.Errorf("room %s closed: no open room: %w", sid, ErrNotFound)
	}
	return nil
}

// EndOpenSessions records every room and participant still open as closed or left at at. Call it at
// start-up: rooms open in the database then belong to a process that ended without closing
// them.
func (s *Store) EndOpenSessions(ctx context.Context, at time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("end open sessions: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, closeAllRooms, millis(at)); err != nil {
		return fmt.Errorf("end open rooms: %w", err)
	}
	if _, err := tx.ExecContext(ctx, leaveAllQuery, millis(at)); err != nil {
		return fmt.Errorf("end open calls: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("end open sessions: %w", err)
	}
	return nil
}
