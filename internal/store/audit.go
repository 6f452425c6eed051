package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"
)

// AuditKind is what a federation audit record is about.
type AuditKind string

// The kinds of federation audit records.
const (
	// AuditTrunk is one trunk (an SFU-to-SFU link with a peer node, for one call).
	AuditTrunk AuditKind = "trunk"
	// AuditToken is one token request forwarded to a peer node, or answered for one.
	AuditToken AuditKind = "token"
)

// Valid reports whether k is one of the kinds the table accepts.
func (k AuditKind) Valid() bool { return k == AuditTrunk || k == AuditToken }

// OutcomeInterrupted is the outcome EndOpenAudit gives records a previous process left open.
const OutcomeInterrupted = "interrupted"

// maxOutcome bounds the outcome text kept: it is a reason for the record, never a dump.
const maxOutcome = 500

const (
	openAuditQuery = `
		INSERT INTO federation_audit (kind, role, peer, room_id, media_room, call_id, started_at, updated_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
		RETURNING id
	`
	updateAuditQuery = `
		UPDATE federation_audit SET bytes_sent = ?2, bytes_received = ?3, updated_at = ?4
		WHERE id = ?1 AND ended_at IS NULL
	`
	closeAuditQuery = `
		UPDATE federation_audit SET bytes_sent = ?2, bytes_received = ?3, updated_at = ?4, ended_at = ?4, outcome = ?5
		WHERE id = ?1 AND ended_at IS NULL
	`
	// A record still open was open when the process that wrote it stopped: it ends at the
	// last time that process updated it.
	endOpenAuditQuery = `
		UPDATE federation_audit SET ended_at = updated_at, outcome = ?1 WHERE ended_at IS NULL
	`
	// Only ended records go: an open one is a trunk in progress, however long ago it began.
	pruneAuditQuery = `DELETE FROM federation_audit WHERE ended_at IS NOT NULL AND ended_at < ?1`
	// The newest ?4 records (by start) that were open at or after ?1, oldest first; ?2 and ?3
	// filter on the peer and the kind when not empty.
	listAuditQuery = `
		SELECT id, kind, role, peer, room_id, media_room, call_id, started_at, updated_at, ended_at,
			bytes_sent, bytes_received, outcome
		FROM (
			SELECT * FROM federation_audit
			WHERE (ended_at IS NULL OR ended_at >= ?1)
				AND (?2 = '' OR peer = ?2)
				AND (?3 = '' OR kind = ?3)
			ORDER BY started_at DESC, id DESC
			LIMIT ?4
		)
		ORDER BY started_at, id
	`
)

// AuditRecord is one entry of the federation audit log. It holds who and what, never a token or
// a secret.
type AuditRecord struct {
	ID   int64
	Kind AuditKind
	// Role is this node's part: "offerer" or "answerer" of a trunk; "forwarded" (a user of the
	// peer asked this node, which asked the peer) or "answered" (the peer forwarded its user's
	// request here) of a token request.
	Role string
	// Peer is the peer node's server name.
	Peer string
	// RoomID is the Matrix room; MediaRoom the call's media room; CallID the trunk's call ID
	// (empty for a token request).
	RoomID, MediaRoom, CallID string
	// Start is when the record was opened, Updated when its counts were last written, End when
	// it was closed (the zero time while it is open).
	Start, Updated, End time.Time
	// BytesSent and BytesReceived are what went to the peer and came from it: a trunk's bytes
	// on the wire, a token request's or answer's body.
	BytesSent, BytesReceived uint64
	// Outcome says how the record ended: "ok", "refused: why", OutcomeInterrupted…
	Outcome string
}

// Open reports whether the record has not ended.
func (r *AuditRecord) Open() bool { return r.End.IsZero() }

// AuditFilter selects audit records; the zero value selects every one.
type AuditFilter struct {
	// Since keeps the records open at or after it (the zero time: all).
	Since time.Time
	// Peer and Kind keep the records of that peer and kind (empty: all).
	Peer string
	Kind AuditKind
	// Limit keeps the newest Limit records (0 or less: all).
	Limit int
}

// OpenAudit records that the trunk or token request rec describes began at rec.Start and returns
// the record's ID. Only Kind, Role, Peer, RoomID, MediaRoom, CallID and Start are read.
func (s *Store) OpenAudit(ctx context.Context, rec AuditRecord) (int64, error) {
	if !rec.Kind.Valid() {
		return 0, fmt.Errorf("open audit record: kind %q is not %q or %q", rec.Kind, AuditTrunk, AuditToken)
	}
	var id int64
	err := s.w.QueryRowContext(ctx, openAuditQuery, string(rec.Kind), rec.Role, rec.Peer, rec.RoomID, rec.MediaRoom,
		rec.CallID, millis(rec.Start)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("open audit record of %s with %s: %w", rec.Kind, rec.Peer, err)
	}
	return id, nil
}

// UpdateAudit records the byte counts of open record id at at. It returns ErrNotFound when no
// such record is open.
func (s *Store) UpdateAudit(ctx context.Context, id int64, sent, received uint64, at time.Time) error {
	res, err := s.w.ExecContext(ctx, updateAuditQuery, id, clampInt64(sent), clampInt64(received), millis(at))
	if err := affectedOne(res, err); err != nil {
		return fmt.Errorf("update audit record %d: %w", id, err)
	}
	return nil
}

// CloseAudit ends open record id at at with its final byte counts and its outcome (truncated to
// a few hundred bytes). It returns ErrNotFound when no such record is open.
func (s *Store) CloseAudit(ctx context.Context, id int64, sent, received uint64, at time.Time, outcome string) error {
	res, err := s.w.ExecContext(ctx, closeAuditQuery, id, clampInt64(sent), clampInt64(received), millis(at),
		truncate(outcome, maxOutcome))
	if err := affectedOne(res, err); err != nil {
		return fmt.Errorf("close audit record %d: %w", id, err)
	}
	return nil
}

// EndOpenAudit ends every record still open, at its last update, with OutcomeInterrupted, and
// returns how many it ended. Call it at start, before anything opens a record: a record open
// then was left by a process that stopped without closing it (a crash, a SIGKILL).
func (s *Store) EndOpenAudit(ctx context.Context) (int64, error) {
	res, err := s.w.ExecContext(ctx, endOpenAuditQuery, OutcomeInterrupted)
	if err != nil {
		return 0, fmt.Errorf("end open audit records: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("end open audit records: %w", err)
	}
	return n, nil
}

// PruneAudit deletes the records that ended before before and returns how many it deleted.
// Open records are kept whatever their age.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, pruneAuditQuery, millis(before))
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	return n, nil
}

// AuditRecords returns the records f selects, oldest first (by start). It reads through the
// read-only pool, so it may run while a node writes the same database.
func (s *Store) AuditRecords(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	if f.Kind != "" && !f.Kind.Valid() {
		return nil, fmt.Errorf("audit records: kind %q is not %q or %q", f.Kind, AuditTrunk, AuditToken)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	since := int64(math.MinInt64)
	if !f.Since.IsZero() {
		since = millis(f.Since)
	}
	rows, err := s.r.QueryContext(ctx, listAuditQuery, since, f.Peer, string(f.Kind), limit)
	if err != nil {
		return nil, fmt.Errorf("audit records: %w", err)
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		rec, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("audit records: %w", err)
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit records: %w", err)
	}
	return out, nil
}

func scanAudit(rows *sql.Rows) (AuditRecord, error) {
	var (
		rec            AuditRecord
		kind           string
		start, updated int64
		end            sql.NullInt64
		sent, received int64
	)
	err := rows.Scan(&rec.ID, &kind, &rec.Role, &rec.Peer, &rec.RoomID, &rec.MediaRoom, &rec.CallID,
		&start, &updated, &end, &sent, &received, &rec.Outcome)
	if err != nil {
		return AuditRecord{}, err
	}
	rec.Kind = AuditKind(kind)
	rec.Start, rec.Updated = fromMillis(start), fromMillis(updated)
	if end.Valid {
		rec.End = fromMillis(end.Int64)
	}
	rec.BytesSent, rec.BytesReceived = uint64(max(sent, 0)), uint64(max(received, 0))
	return rec, nil
}

// affectedOne turns an update that matched no row into ErrNotFound.
func affectedOne(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no open record: %w", ErrNotFound)
	}
	return nil
}

// clampInt64 stores a count in SQLite's signed integers.
func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// truncate cuts s to at most n bytes, dropping a rune the cut splits.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
