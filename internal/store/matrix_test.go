package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestApplyMatrixTxn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	s, err := Open(ctx, path, zerolog.Nop())
	require.NoError(t, err)
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	member := MatrixCallMember{RoomID: "!r:hs", StateKey: "_@a:hs_D_m.call", UserID: "@a:hs", DeviceID: "D", Joined: true,
		Application: "m.call", Scope: "m.room", FocusSelection: "oldest_membership", ServiceURL: "https://rtc/",
		EventID: "$2", At: t0, ExpiresAt: t0.Add(time.Hour)}
	txn := MatrixTxn{
		Memberships: []MatrixMembership{
			{RoomID: "!r:hs", UserID: "@a:hs", Membership: "invite", EventID: "$0", At: t0},
			{RoomID: "!r:hs", UserID: "@a:hs", Membership: "join", EventID: "$1", At: t0},
		},
		CallMembers: []MatrixCallMember{member},
	}
	applied, err := s.ApplyMatrixTxn(ctx, "t1", txn)
	require.NoError(t, err)
	require.True(t, applied)
	m, err := s.MatrixMembershipOf(ctx, "!r:hs", "@a:hs")
	require.NoError(t, err)
	require.Equal(t, "join", m, "events apply in order")
	got, err := s.MatrixCallMembers(ctx, "!r:hs")
	require.NoError(t, err)
	require.Equal(t, []MatrixCallMember{member}, got)

	// A replay changes nothing, even with different content.
	applied, err = s.ApplyMatrixTxn(ctx, "t1", MatrixTxn{Memberships: []MatrixMembership{{RoomID: "!r:hs", UserID: "@a:hs", Membership: "ban", At: t0}}})
	require.NoError(t, err)
	require.False(t, applied)
	m, _ = s.MatrixMembershipOf(ctx, "!r:hs", "@a:hs")
	require.Equal(t, "join", m)

	exp, err := s.ExpiredMatrixCallMembers(ctx, t0.Add(59*time.Minute))
	require.NoError(t, err)
	require.Empty(t, exp)
	exp, err = s.ExpiredMatrixCallMembers(ctx, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, exp, 1)

	ended, err := s.EndExpiredMatrixCallMembers(ctx, t0.Add(59*time.Minute))
	require.NoError(t, err)
	require.Empty(t, ended)

	// Leaving deletes the row; the state survives a reopen.
	applied, err = s.ApplyMatrixTxn(ctx, "t2", MatrixTxn{CallMembers: []MatrixCallMember{{RoomID: "!r:hs", StateKey: member.StateKey, UserID: "@a:hs"}}})
	require.NoError(t, err)
	require.True(t, applied)
	require.NoError(t, s.Close())
	s, err = Open(ctx, path, zerolog.Nop())
	require.NoError(t, err)
	defer s.Close()
	got, err = s.MatrixCallMembers(ctx, "!r:hs")
	require.NoError(t, err)
	require.Empty(t, got)
	applied, err = s.ApplyMatrixTxn(ctx, "t2", MatrixTxn{})
	require.NoError(t, err)
	require.False(t, applied, "recorded transactions survive a reopen")
	_, err = s.MatrixMembershipOf(ctx, "!r:hs", "@nobody:hs")
	require.ErrorIs(t, err, ErrNotFound)

	// Expired memberships are ended once.
	_, err = s.ApplyMatrixTxn(ctx, "t3", MatrixTxn{CallMembers: []MatrixCallMember{member}})
	require.NoError(t, err)
	ended, err = s.EndExpiredMatrixCallMembers(ctx, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, []MatrixCallMember{member}, ended)
	ended, err = s.EndExpiredMatrixCallMembers(ctx, t0.Add(2*time.Hour))
	require.NoError(t, err)
	require.Empty(t, ended)
}

// Concurrent deliveries of the same transaction apply it once.
func TestApplyMatrixTxnConcurrent(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"), zerolog.Nop())
	require.NoError(t, err)
	defer s.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied, err := s.ApplyMatrixTxn(ctx, "same", MatrixTxn{Memberships: []MatrixMembership{{RoomID: "!r", UserID: "@a:hs", Membership: "join"}}})
			require.NoError(t, err)
			if applied {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, n)
}

// TestPruneAppserviceTxns checks that transaction IDs received before the cutoff are forgotten
// (a replay of one is applied again) and newer ones are kept (a replay changes nothing).
func TestPruneAppserviceTxns(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	cutoff := time.Now().Add(-7 * 24 * time.Hour)
	for id, at := range map[string]time.Time{
		"old":    cutoff.Add(-time.Hour),
		"recent": cutoff.Add(time.Hour),
	} {
		_, err := s.w.ExecContext(ctx, insertTxnQuery, id, millis(at))
		require.NoError(t, err)
	}
	applied, err := s.ApplyMatrixTxn(ctx, "now", MatrixTxn{})
	require.NoError(t, err)
	require.True(t, applied)

	n, err := s.PruneAppserviceTxns(ctx, cutoff)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)

	for _, tc := range []struct {
		id          string
		wantApplied bool
	}{
		{"old", true},
		{"recent", false},
		{"now", false},
	} {
		applied, err := s.ApplyMatrixTxn(ctx, tc.id, MatrixTxn{})
		require.NoError(t, err)
		require.Equal(t, tc.wantApplied, applied, tc.id)
	}
}

func TestMatrixRecordedMembership(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"), zerolog.Nop())
	require.NoError(t, err)
	defer s.Close()
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	_, err = s.ApplyMatrixTxn(ctx, "t1", MatrixTxn{
		Rooms: []MatrixRoom{{RoomID: "!new:hs", Creator: "@a:hs", EventID: "$c", At: t0}},
		Memberships: []MatrixMembership{
			{RoomID: "!new:hs", UserID: "@a:hs", Membership: "join", EventID: "$1", At: t0},
			{RoomID: "!old:hs", UserID: "@b:hs", Membership: "leave", EventID: "$2", At: t0},
		},
	})
	require.NoError(t, err)
	for _, c := range []struct {
		room, user, want string
		seen             bool
	}{
		{"!new:hs", "@a:hs", "join", true},
		{"!new:hs", "@z:hs", "", true},
		{"!old:hs", "@b:hs", "leave", false},
		{"!old:hs", "@a:hs", "", false},
		{"!none:hs", "@a:hs", "", false},
	} {
		m, seen, err := s.MatrixRecordedMembership(ctx, c.room, c.user)
		require.NoError(t, err)
		require.Equal(t, c.want, m, c.room+" "+c.user)
		require.Equal(t, c.seen, seen, c.room+" "+c.user)
	}
	// A second create for the same room (a replayed event in another
	// transaction) keeps the first.
	_, err = s.ApplyMatrixTxn(ctx, "t2", MatrixTxn{Rooms: []MatrixRoom{{RoomID: "!new:hs", Creator: "@x:hs", EventID: "$d", At: t0}}})
	require.NoError(t, err)
}

// TestMatrixCallRooms: each room with a live call membership is listed
// once; a room whose members left, or whose only membership expired, is
// not.
func TestMatrixCallRooms(t *testing.T) {
	s, _ := openTemp(t)
	ctx := t.Context()
	rooms, err := s.MatrixCallRooms(ctx)
	require.NoError(t, err)
	require.Empty(t, rooms)

	now := time.Now()
	member := func(room, key string, expires time.Time) MatrixCallMember {
		return MatrixCallMember{RoomID: room, StateKey: key, UserID: "@a:hs", DeviceID: key, Joined: true,
			Application: "m.call", EventID: "$" + room + key, At: now.Add(-time.Minute), ExpiresAt: expires}
	}
	_, err = s.ApplyMatrixTxn(ctx, "t1", MatrixTxn{CallMembers: []MatrixCallMember{
		member("!b:hs", "1", now.Add(time.Hour)),
		member("!b:hs", "2", time.Time{}),
		member("!a:hs", "1", time.Time{}),
		member("!expired:hs", "1", now.Add(-time.Second)),
		member("!left:hs", "1", now.Add(time.Hour)),
	}})
	require.NoError(t, err)
	_, err = s.ApplyMatrixTxn(ctx, "t2", MatrixTxn{CallMembers: []MatrixCallMember{{RoomID: "!left:hs", StateKey: "1", UserID: "@a:hs"}}})
	require.NoError(t, err)

	rooms, err = s.MatrixCallRooms(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"!a:hs", "!b:hs"}, rooms)
}
