package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestAuditLifecycle(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()

	trunk := AuditRecord{Kind: AuditTrunk, Role: "offerer", Peer: "b.example", RoomID: "!r:a.example",
		MediaRoom: "R", CallID: "c1", Start: t0}
	id, err := s.OpenAudit(ctx, trunk)
	require.NoError(t, err)
	require.NoError(t, s.UpdateAudit(ctx, id, 1000, 2000, t0.Add(15*time.Second)))

	recs, err := s.AuditRecords(ctx, AuditFilter{})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.True(t, recs[0].Open())
	require.Equal(t, uint64(1000), recs[0].BytesSent)
	require.Equal(t, uint64(2000), recs[0].BytesReceived)
	require.Equal(t, t0.Add(15*time.Second), recs[0].Updated)

	require.NoError(t, s.CloseAudit(ctx, id, 5000, 6000, t0.Add(time.Minute), "ok"))
	require.ErrorIs(t, s.CloseAudit(ctx, id, 1, 1, t0.Add(2*time.Minute), "again"), ErrNotFound, "closed once")
	require.ErrorIs(t, s.UpdateAudit(ctx, id, 1, 1, t0.Add(2*time.Minute)), ErrNotFound, "a closed record keeps its counts")
	require.ErrorIs(t, s.UpdateAudit(ctx, id+100, 1, 1, t0), ErrNotFound)

	recs, err = s.AuditRecords(ctx, AuditFilter{})
	require.NoError(t, err)
	want := trunk
	want.ID, want.Updated, want.End = id, t0.Add(time.Minute), t0.Add(time.Minute)
	want.BytesSent, want.BytesReceived, want.Outcome = 5000, 6000, "ok"
	require.Equal(t, []AuditRecord{want}, recs)

	_, err = s.OpenAudit(ctx, AuditRecord{Kind: "other", Peer: "b.example", Start: t0})
	require.Error(t, err)
	_, err = s.AuditRecords(ctx, AuditFilter{Kind: "other"})
	require.Error(t, err)

	long := strings.Repeat("é", maxOutcome)
	id2, err := s.OpenAudit(ctx, AuditRecord{Kind: AuditToken, Role: "answered", Peer: "b.example", Start: t0})
	require.NoError(t, err)
	require.NoError(t, s.CloseAudit(ctx, id2, 1<<63+5, 0, t0, long))
	recs, err = s.AuditRecords(ctx, AuditFilter{Kind: AuditToken})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.LessOrEqual(t, len(recs[0].Outcome), maxOutcome)
	require.True(t, strings.HasPrefix(long, recs[0].Outcome), "cut on a rune boundary")
	require.Equal(t, uint64(1<<63-1), recs[0].BytesSent, "clamped to SQLite's integers")
}

func TestAuditFilters(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	add := func(kind AuditKind, peer string, start, end time.Duration) {
		t.Helper()
		id, err := s.OpenAudit(ctx, AuditRecord{Kind: kind, Role: "r", Peer: peer, MediaRoom: peer + start.String(), Start: t0.Add(start)})
		require.NoError(t, err)
		if end >= 0 {
			require.NoError(t, s.CloseAudit(ctx, id, 0, 0, t0.Add(end), "ok"))
		}
	}
	add(AuditTrunk, "b.example", 0, time.Hour)             // long, ended at 1h
	add(AuditToken, "b.example", time.Minute, time.Minute) // ended at 1m
	add(AuditTrunk, "c.example", 2*time.Hour, -1)          // open
	add(AuditToken, "c.example", 3*time.Hour, 3*time.Hour) // ended at 3h

	rooms := func(f AuditFilter) []string {
		t.Helper()
		recs, err := s.AuditRecords(ctx, f)
		require.NoError(t, err)
		out := []string{}
		for _, r := range recs {
			out = append(out, r.MediaRoom)
		}
		return out
	}
	require.Equal(t, []string{"b.example0s", "b.example1m0s", "c.example2h0m0s", "c.example3h0m0s"}, rooms(AuditFilter{}), "oldest first")
	require.Equal(t, []string{"b.example0s", "c.example2h0m0s", "c.example3h0m0s"}, rooms(AuditFilter{Since: t0.Add(30 * time.Minute)}),
		"since: those that ended at or after it, or are open")
	require.Equal(t, []string{"c.example2h0m0s", "c.example3h0m0s"}, rooms(AuditFilter{Peer: "c.example"}))
	require.Equal(t, []string{"b.example0s", "c.example2h0m0s"}, rooms(AuditFilter{Kind: AuditTrunk}))
	require.Equal(t, []string{"c.example2h0m0s", "c.example3h0m0s"}, rooms(AuditFilter{Limit: 2}), "the newest, oldest first")
	require.Equal(t, []string{"c.example3h0m0s"}, rooms(AuditFilter{Peer: "c.example", Kind: AuditToken, Since: t0}))

	n, err := s.PruneAudit(ctx, t0.Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	require.Equal(t, []string{"c.example2h0m0s", "c.example3h0m0s"}, rooms(AuditFilter{}), "the open record is kept whatever its age")
}

func TestEndOpenAudit(t *testing.T) {
	s, path := openTemp(t)
	ctx := t.Context()
	open, err := s.OpenAudit(ctx, AuditRecord{Kind: AuditTrunk, Role: "answerer", Peer: "b.example", Start: t0})
	require.NoError(t, err)
	require.NoError(t, s.UpdateAudit(ctx, open, 10, 20, t0.Add(30*time.Second)))
	closed, err := s.OpenAudit(ctx, AuditRecord{Kind: AuditToken, Role: "forwarded", Peer: "b.example", Start: t0})
	require.NoError(t, err)
	require.NoError(t, s.CloseAudit(ctx, closed, 1, 2, t0.Add(time.Second), "ok"))

	// A node killed with the record open, then started again on the same file.
	s2, err := Open(ctx, path, s.log)
	require.NoError(t, err)
	defer s2.Close()
	n, err := s2.EndOpenAudit(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	recs, err := s2.AuditRecords(ctx, AuditFilter{})
	require.NoError(t, err)
	require.Len(t, recs, 2)
	byID := map[int64]AuditRecord{recs[0].ID: recs[0], recs[1].ID: recs[1]}
	require.Equal(t, t0.Add(30*time.Second), byID[open].End, "ended at its last update")
	require.Equal(t, OutcomeInterrupted, byID[open].Outcome)
	require.Equal(t, uint64(20), byID[open].BytesReceived)
	require.Equal(t, "ok", byID[closed].Outcome, "a closed record is untouched")
	require.Equal(t, t0.Add(time.Second), byID[closed].End)
}

// TestOpenReadOnly: a reader beside the node sees its records, writes nothing, creates nothing
// and refuses a schema it would have to upgrade.
func TestOpenReadOnly(t *testing.T) {
	s, path := openTemp(t)
	ctx := t.Context()
	_, err := s.OpenAudit(ctx, AuditRecord{Kind: AuditTrunk, Role: "offerer", Peer: "b.example", Start: t0})
	require.NoError(t, err)

	ro, err := OpenReadOnly(ctx, path, zerolog.Nop())
	require.NoError(t, err)
	recs, err := ro.AuditRecords(ctx, AuditFilter{})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	_, err = ro.OpenAudit(ctx, AuditRecord{Kind: AuditTrunk, Start: t0})
	require.Error(t, err, "read-only")
	// The node keeps writing while the reader is open.
	_, err = s.OpenAudit(ctx, AuditRecord{Kind: AuditToken, Role: "answered", Peer: "b.example", Start: t0})
	require.NoError(t, err)
	recs, err = ro.AuditRecords(ctx, AuditFilter{})
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.NoError(t, ro.Close())

	missing := filepath.Join(t.TempDir(), "none.db")
	_, err = OpenReadOnly(ctx, missing, zerolog.Nop())
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(missing)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing created")

	old := filepath.Join(t.TempDir(), "old.db")
	db := rawDB(t, old)
	_, err = db.ExecContext(ctx, schemaV1)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	_, err = OpenReadOnly(ctx, old, zerolog.Nop())
	require.ErrorIs(t, err, ErrSchemaOlder)
	db = rawDB(t, old)
	_, err = db.ExecContext(ctx, `UPDATE schema_version SET version = 99`)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	_, err = OpenReadOnly(ctx, old, zerolog.Nop())
	require.ErrorIs(t, err, ErrSchemaTooNew)
}
