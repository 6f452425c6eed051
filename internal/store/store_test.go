package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// t0 is an arbitrary instant with whole milliseconds, as stored.
var t0 = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "entente.db")
	s, err := Open(t.Context(), path, zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s, path
}

func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	require.NoError(t, db.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&v))
	return v
}

func schemaVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	require.NoError(t, db.QueryRowContext(t.Context(), `SELECT version FROM schema_version`).Scan(&v))
	return v
}

// latest is the schema version of the embedded upgrade files, so that adding an upgrade does not
// mean editing these tests.
func latest(t *testing.T) int {
	t.Helper()
	sch, err := loadSchema(upgradeFiles, "upgrades")
	require.NoError(t, err)
	return sch.latest()
}

func TestOpenSettings(t *testing.T) {
	s, _ := openTemp(t)
	require.Equal(t, "wal", pragma(t, s.w, "journal_mode"))
	require.Equal(t, "2", pragma(t, s.w, "synchronous"), "synchronous=FULL")
	require.Equal(t, "1", pragma(t, s.w, "foreign_keys"))
	require.Equal(t, "5000", pragma(t, s.w, "busy_timeout"))
	require.Equal(t, 1, s.w.Stats().MaxOpenConnections)
	require.Equal(t, latest(t), schemaVersion(t, s.r))

	_, err := s.r.ExecContext(t.Context(), `DELETE FROM api_keys`)
	require.Error(t, err, "the read pool is read-only")
}

func TestAPIKeys(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()

	keys, err := s.APIKeys(ctx)
	require.NoError(t, err)
	require.Empty(t, keys)

	require.NoError(t, s.PutAPIKey(ctx, "dev", "first-secret"))
	require.NoError(t, s.PutAPIKey(ctx, "other", "other-secret"))
	require.NoError(t, s.PutAPIKey(ctx, "dev", "second-secret"))

	keys, err = s.APIKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"dev": "second-secret", "other": "other-secret"}, keys)
}

func TestRoomsAndCalls(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()

	require.NoError(t, s.RoomOpened(ctx, "standup", "RM_1", t0))
	require.Error(t, s.RoomOpened(ctx, "standup", "RM_1", t0), "a room SID is recorded once")

	require.NoError(t, s.ParticipantJoined(ctx, "standup", "RM_1", "alice", "PA_a", t0.Add(time.Second)))
	require.NoError(t, s.ParticipantJoined(ctx, "standup", "RM_1", "bob", "PA_b", t0.Add(2*time.Second)))
	require.ErrorIs(t, s.ParticipantJoined(ctx, "standup", "RM_nope", "eve", "PA_e", t0), ErrNotFound)

	require.NoError(t, s.ParticipantLeft(ctx, "PA_a", t0.Add(time.Minute)))
	require.ErrorIs(t, s.ParticipantLeft(ctx, "PA_a", t0.Add(time.Minute)), ErrNotFound, "already left")
	require.ErrorIs(t, s.ParticipantLeft(ctx, "PA_nope", t0), ErrNotFound)

	// Another session of the same room name, later.
	require.NoError(t, s.RoomClosed(ctx, "RM_1", t0.Add(time.Hour)))
	require.ErrorIs(t, s.RoomClosed(ctx, "RM_1", t0.Add(time.Hour)), ErrNotFound, "already closed")
	require.ErrorIs(t, s.RoomClosed(ctx, "RM_nope", t0), ErrNotFound)
	require.NoError(t, s.RoomOpened(ctx, "standup", "RM_2", t0.Add(24*time.Hour)))
	require.NoError(t, s.ParticipantJoined(ctx, "standup", "RM_2", "alice", "PA_c", t0.Add(24*time.Hour)))
	require.NoError(t, s.RoomOpened(ctx, "other", "RM_3", t0))
	require.NoError(t, s.ParticipantJoined(ctx, "other", "RM_3", "carol", "PA_d", t0))

	all, err := s.CallHistory(ctx, "standup", 0)
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, []string{"PA_c", "PA_b", "PA_a"}, participantSIDs(all), "newest first")
	require.Equal(t, CallRecord{
		ID: all[2].ID, RoomName: "standup", RoomSID: "RM_1", Identity: "alice", ParticipantSID: "PA_a",
		JoinedAt: t0.Add(time.Second), LeftAt: t0.Add(time.Minute),
	}, all[2])
	require.True(t, all[1].LeftAt.IsZero(), "bob has not left")

	two, err := s.CallHistory(ctx, "standup", 2)
	require.NoError(t, err)
	require.Equal(t, []string{"PA_c", "PA_b"}, participantSIDs(two))

	none, err := s.CallHistory(ctx, "nobody-here", 10)
	require.NoError(t, err)
	require.Empty(t, none)
}

func participantSIDs(recs []CallRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ParticipantSID
	}
	return out
}

func TestEndOpenSessions(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	require.NoError(t, s.RoomOpened(ctx, "r", "RM_1", t0))
	require.NoError(t, s.ParticipantJoined(ctx, "r", "RM_1", "alice", "PA_a", t0))
	require.NoError(t, s.ParticipantJoined(ctx, "r", "RM_1", "bob", "PA_b", t0))
	require.NoError(t, s.ParticipantLeft(ctx, "PA_a", t0.Add(time.Second)))

	end := t0.Add(time.Hour)
	require.NoError(t, s.EndOpenSessions(ctx, end))

	recs, err := s.CallHistory(ctx, "r", 0)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	left := map[string]time.Time{}
	for _, r := range recs {
		left[r.Identity] = r.LeftAt
	}
	require.Equal(t, t0.Add(time.Second), left["alice"], "an ended presence keeps its time")
	require.Equal(t, end, left["bob"])
	require.ErrorIs(t, s.RoomClosed(ctx, "RM_1", end), ErrNotFound, "room already closed")
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "entente.db")
	log := zerolog.New(zerolog.NewTestWriter(t))
	s, err := Open(t.Context(), path, log)
	require.NoError(t, err)
	require.NoError(t, s.PutAPIKey(t.Context(), "dev", "s3cret"))
	require.NoError(t, s.Close())

	s, err = Open(t.Context(), path, log)
	require.NoError(t, err)
	defer s.Close()
	keys, err := s.APIKeys(t.Context())
	require.NoError(t, err)
	require.Equal(t, map[string]string{"dev": "s3cret"}, keys)
}

// schemaV1 is the first schema: the three tables without the indexes v2 added.
const schemaV1 = `
CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
INSERT INTO schema_version (version) VALUES (1);
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
`

// rawDB opens path with the driver alone, as an older binary or an operator would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestUpgradeFromV1KeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "entente.db")
	db := rawDB(t, path)
	_, err := db.ExecContext(t.Context(), schemaV1+fmt.Sprintf(`
		INSERT INTO api_keys VALUES ('dev', 'old-secret', %[1]d);
		INSERT INTO rooms VALUES ('RM_1', 'standup', %[1]d, NULL);
		INSERT INTO call_history (room_name, room_sid, identity, participant_sid, joined_at, left_at)
		VALUES ('standup', 'RM_1', 'alice', 'PA_a', %[1]d, NULL);
	`, t0.UnixMilli()))
	require.NoError(t, err)
	require.NoError(t, db.Close())

	s, err := Open(t.Context(), path, zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, err)
	defer s.Close()
	ctx := t.Context()

	require.Equal(t, latest(t), schemaVersion(t, s.r))
	var idx int
	require.NoError(t, s.r.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'call_history_%_idx'`).Scan(&idx))
	require.Equal(t, 2, idx)

	keys, err := s.APIKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"dev": "old-secret"}, keys)
	recs, err := s.CallHistory(ctx, "standup", 0)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "alice", recs[0].Identity)
	require.Equal(t, t0, recs[0].JoinedAt)

	// The upgraded store works as a fresh one.
	require.NoError(t, s.ParticipantLeft(ctx, "PA_a", t0.Add(time.Minute)))
	require.NoError(t, s.RoomClosed(ctx, "RM_1", t0.Add(time.Minute)))
}

func TestSchemaTooNew(t *testing.T) {
	_, path := openTemp(t)
	db := rawDB(t, path)
	_, err := db.ExecContext(t.Context(), `UPDATE schema_version SET version = 99`)
	require.NoError(t, err)

	_, err = Open(t.Context(), path, zerolog.Nop())
	require.ErrorIs(t, err, ErrSchemaTooNew)
	var tooNew *SchemaTooNewError
	require.ErrorAs(t, err, &tooNew)
	require.Equal(t, 99, tooNew.Have)
	require.Equal(t, latest(t), tooNew.Supported)
	require.Contains(t, err.Error(), "v99")
	require.Contains(t, err.Error(), fmt.Sprintf("v%d supported", latest(t)))
	require.Contains(t, err.Error(), path)
	require.Equal(t, 99, schemaVersion(t, db), "a refused database is left as it was")
}

// TestFreshEqualsUpgraded checks that 00-latest.sql and the chain of upgrades from v1 build the
// same tables, columns, foreign keys and indexes.
func TestFreshEqualsUpgraded(t *testing.T) {
	fresh, _ := openTemp(t)

	path := filepath.Join(t.TempDir(), "old.db")
	db := rawDB(t, path)
	_, err := db.ExecContext(t.Context(), schemaV1)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	upgraded, err := Open(t.Context(), path, zerolog.Nop())
	require.NoError(t, err)
	defer upgraded.Close()

	want := describeSchema(t, fresh.r)
	for _, name := range []string{"table schema_version", "table api_keys", "table rooms", "table call_history", "index call_history_room_idx"} {
		require.True(t, slices.ContainsFunc(want, func(s string) bool { return strings.HasPrefix(s, name+":") || strings.HasPrefix(s, name+" on") }),
			"%s missing from %q", name, want)
	}
	require.Equal(t, want, describeSchema(t, upgraded.r))
}

// describeSchema lists every table's columns and foreign keys and every index's columns and
// flags, one line each, sorted by object name.
func describeSchema(t *testing.T, db *sql.DB) []string {
	t.Helper()
	ctx := t.Context()
	rows, err := db.QueryContext(ctx, `SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name`)
	require.NoError(t, err)
	type obj struct{ typ, name, table string }
	var objs []obj
	for rows.Next() {
		var o obj
		require.NoError(t, rows.Scan(&o.typ, &o.name, &o.table))
		objs = append(objs, o)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())

	var out []string
	for _, o := range objs {
		switch o.typ {
		case "table":
			out = append(out, fmt.Sprintf("table %s: %s; fk %s", o.name,
				dump(t, db, `SELECT * FROM pragma_table_xinfo(?1)`, o.name),
				dump(t, db, `SELECT "table", "from", "to" FROM pragma_foreign_key_list(?1)`, o.name)))
		case "index":
			out = append(out, fmt.Sprintf("index %s on %s: %s; %s", o.name, o.table,
				dump(t, db, `SELECT * FROM pragma_index_xinfo(?1)`, o.name),
				dump(t, db, `SELECT "unique", origin, partial FROM pragma_index_list(?1) WHERE name = ?2`, o.table, o.name)))
		default:
			out = append(out, o.typ+" "+o.name)
		}
	}
	return out
}

func dump(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), query, args...)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		lines = append(lines, fmt.Sprint(vals...))
	}
	require.NoError(t, rows.Err())
	return strings.Join(lines, " | ")
}

func TestSchemaFiles(t *testing.T) {
	sch, err := loadSchema(upgradeFiles, "upgrades")
	require.NoError(t, err)
	require.GreaterOrEqual(t, sch.latest(), 2)

	good := "-- v0 -> v2\nCREATE TABLE a (x INTEGER);\n"
	cases := []struct {
		name  string
		files map[string]string
		want  string // "" means valid
	}{
		{"fresh only", map[string]string{"00-latest.sql": good}, ""},
		{"chain", map[string]string{"00-latest.sql": good, "02-b.sql": "-- v1 -> v2\n"}, ""},
		{"no fresh", map[string]string{"02-b.sql": "-- v1 -> v2\n"}, "no fresh-install"},
		{"gap", map[string]string{"00-latest.sql": "-- v0 -> v3\n", "02-b.sql": "-- v1 -> v2\n"}, "no upgrade from v2 to v3"},
		{"beyond fresh", map[string]string{"00-latest.sql": good, "03-c.sql": "-- v2 -> v3\n"}, "beyond"},
		{"skips a version", map[string]string{"00-latest.sql": good, "02-b.sql": "-- v0 -> v2\n"}, "up one version"},
		{"number differs", map[string]string{"00-latest.sql": good, "05-b.sql": "-- v1 -> v2\n"}, "up one version"},
		{"no header", map[string]string{"00-latest.sql": "CREATE TABLE a (x);\n"}, "first line"},
		{"bad name", map[string]string{"00-latest.sql": good, "latest.sql": good}, "name must be"},
		{"two fresh", map[string]string{"00-latest.sql": good, "00-again.sql": good}, "single 00"},
		{"duplicate step", map[string]string{"00-latest.sql": good, "02-b.sql": "-- v1 -> v2\n", "02-c.sql": "-- v1 -> v2\n"}, "two upgrades"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, data := range tc.files {
				fsys["u/"+name] = &fstest.MapFile{Data: []byte(data)}
			}
			_, err := loadSchema(fsys, "u")
			if tc.want == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.want)
			}
		})
	}
}

func TestOpenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Open(ctx, filepath.Join(t.TempDir(), "entente.db"), zerolog.Nop())
	require.ErrorIs(t, err, context.Canceled)
}

func TestPathWithSpecialCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?#x", "entente.db")
	s, err := Open(t.Context(), path, zerolog.Nop())
	require.NoError(t, err)
	require.NoError(t, s.PutAPIKey(t.Context(), "k", "v"))
	require.NoError(t, s.Close())
	require.FileExists(t, path)
}

// Writers and readers from many goroutines at once: no SQLITE_BUSY, nothing lost.
func TestConcurrentUse(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	require.NoError(t, s.RoomOpened(ctx, "busy", "RM_1", t0))

	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*3)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				sid := fmt.Sprintf("PA_%d_%d", w, i)
				errs <- s.ParticipantJoined(ctx, "busy", "RM_1", "u", sid, t0)
				_, err := s.CallHistory(ctx, "busy", 5)
				errs <- err
				errs <- s.ParticipantLeft(ctx, sid, t0.Add(time.Second))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	recs, err := s.CallHistory(ctx, "busy", 0)
	require.NoError(t, err)
	require.Len(t, recs, workers*perWorker)
}

// TestFileModes checks that the database, its WAL files and a directory Open creates are for the
// node's user only, whatever the umask lets through, and that an existing database left readable
// by others is restricted.
func TestFileModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing bool
	}{
		{"fresh", false},
		{"existing world-readable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			path := filepath.Join(dir, "entente.db")
			log := zerolog.New(zerolog.NewTestWriter(t))
			if tc.existing {
				s, err := Open(t.Context(), path, log)
				require.NoError(t, err)
				require.NoError(t, s.Close())
				require.NoError(t, os.Chmod(path, 0o644))
			}
			s, err := Open(t.Context(), path, log)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, s.Close()) })
			require.NoError(t, s.PutAPIKey(t.Context(), "k", "a secret")) // the WAL has content

			st, err := os.Stat(dir)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "data directory")
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				st, err := os.Stat(p)
				require.NoError(t, err)
				require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), p)
			}
		})
	}
}

// TestPruneCallHistory checks that presences which ended before the cutoff go with the room
// sessions they leave empty, and that everything newer, and every presence still open however
// old, stays.
func TestPruneCallHistory(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	cutoff := t0.Add(90 * 24 * time.Hour)

	// RM_old: closed long ago, every presence ended long ago: all of it goes.
	require.NoError(t, s.RoomOpened(ctx, "old", "RM_old", t0))
	require.NoError(t, s.ParticipantJoined(ctx, "old", "RM_old", "alice", "PA_1", t0))
	require.NoError(t, s.ParticipantLeft(ctx, "PA_1", t0.Add(time.Hour)))
	require.NoError(t, s.RoomClosed(ctx, "RM_old", t0.Add(time.Hour)))
	// RM_long: opened long ago and still open; one presence ended long ago, one is still open,
	// one ended after the cutoff.
	require.NoError(t, s.RoomOpened(ctx, "long", "RM_long", t0))
	require.NoError(t, s.ParticipantJoined(ctx, "long", "RM_long", "bob", "PA_2", t0))
	require.NoError(t, s.ParticipantLeft(ctx, "PA_2", t0.Add(time.Minute)))
	require.NoError(t, s.ParticipantJoined(ctx, "long", "RM_long", "carol", "PA_3", t0))
	require.NoError(t, s.ParticipantJoined(ctx, "long", "RM_long", "dave", "PA_4", t0))
	require.NoError(t, s.ParticipantLeft(ctx, "PA_4", cutoff.Add(time.Millisecond)))
	// RM_new: after the cutoff.
	require.NoError(t, s.RoomOpened(ctx, "new", "RM_new", cutoff))
	require.NoError(t, s.ParticipantJoined(ctx, "new", "RM_new", "erin", "PA_5", cutoff))
	require.NoError(t, s.ParticipantLeft(ctx, "PA_5", cutoff.Add(time.Hour)))
	require.NoError(t, s.RoomClosed(ctx, "RM_new", cutoff.Add(time.Hour)))

	n, err := s.PruneCallHistory(ctx, cutoff)
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "PA_1 and PA_2")

	for _, tc := range []struct {
		room string
		want []string
	}{
		{"old", nil},
		{"long", []string{"PA_4", "PA_3"}},
		{"new", []string{"PA_5"}},
	} {
		recs, err := s.CallHistory(ctx, tc.room, 0)
		require.NoError(t, err)
		if tc.want == nil {
			require.Empty(t, recs, tc.room)
		} else {
			require.ElementsMatch(t, tc.want, participantSIDs(recs), tc.room)
		}
	}
	var rooms []string
	rows, err := s.r.QueryContext(ctx, `SELECT sid FROM rooms ORDER BY sid`)
	require.NoError(t, err)
	for rows.Next() {
		var sid string
		require.NoError(t, rows.Scan(&sid))
		rooms = append(rooms, sid)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"RM_long", "RM_new"}, rooms)

	n, err = s.PruneCallHistory(ctx, cutoff)
	require.NoError(t, err)
	require.Zero(t, n, "nothing more to prune")
}

// TestUnverifiedTokenInCallHistory: a presence admitted by a token issued
// without a verified Matrix membership is marked in the call history, one
// from another identity or outside the token's validity is not, and the
// mark is pruned once expired.
func TestUnverifiedTokenInCallHistory(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"), zerolog.Nop())
	require.NoError(t, err)
	defer s.Close()
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	require.NoError(t, s.RoomOpened(ctx, "lk", "RM_1", t0))
	require.NoError(t, s.MarkUnverifiedToken(ctx, "lk", "alice-id", "!r:hs", "@alice:hs", t0, t0.Add(time.Hour)))
	require.NoError(t, s.ParticipantJoined(ctx, "lk", "RM_1", "alice-id", "PA_1", t0.Add(time.Minute)))
	require.NoError(t, s.ParticipantJoined(ctx, "lk", "RM_1", "bob-id", "PA_2", t0.Add(time.Minute)))
	require.NoError(t, s.ParticipantJoined(ctx, "lk", "RM_1", "alice-id", "PA_3", t0.Add(2*time.Hour)))
	calls, err := s.CallHistory(ctx, "lk", 0)
	require.NoError(t, err)
	marked := map[string]bool{}
	for _, c := range calls {
		marked[c.ParticipantSID] = c.MembershipUnverified
	}
	require.Equal(t, map[string]bool{"PA_1": true, "PA_2": false, "PA_3": false}, marked)

	_, err = s.PruneCallHistory(ctx, t0.Add(3*time.Hour))
	require.NoError(t, err)
	var n int
	require.NoError(t, s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM unverified_tokens`).Scan(&n))
	require.Zero(t, n, "expired marks are pruned")
}
