package matrix

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/store"
)

func TestCallGuardLeave(t *testing.T) {
	sfu := newFakeSFU()
	g := NewCallGuard(sfu, 0, zerolog.Nop())
	g.Issued("!r:hs", "@a:hs", "D1", "lk1", "id-a1")
	g.Issued("!r:hs", "@a:hs", "D2", "lk2", "id-a2")
	g.Issued("!r:hs", "@b:hs", "D", "lk1", "id-b")
	g.Issued("!other:hs", "@a:hs", "D1", "lk3", "id-a3")

	g.Applied(context.Background(), TxnEffects{Memberships: []RoomMembership{
		{RoomID: "!r:hs", UserID: "@b:hs", Membership: "join"},
		{RoomID: "!r:hs", UserID: "@a:hs", Membership: "leave"},
	}})
	require.ElementsMatch(t, []string{"lk1/id-a1", "lk2/id-a2"}, sfu.removed)

	// Already handled: a second leave removes nothing more.
	g.Applied(context.Background(), TxnEffects{Memberships: []RoomMembership{{RoomID: "!r:hs", UserID: "@a:hs", Membership: "leave"}}})
	require.Len(t, sfu.removed, 2)

	g.Applied(context.Background(), TxnEffects{Memberships: []RoomMembership{{RoomID: "!r:hs", UserID: "@b:hs", Membership: "ban"}}})
	require.Contains(t, sfu.removed, "lk1/id-b")
	require.NotContains(t, sfu.removed, "lk3/id-a3")
}

func TestCallGuardExpired(t *testing.T) {
	sfu := newFakeSFU()
	g := NewCallGuard(sfu, 0, zerolog.Nop())
	legacyRoom := RoomAlias("!r:hs", LegacySlotID)
	g.Issued("!r:hs", "@a:hs", "D1", legacyRoom, LegacyIdentity("@a:hs", "D1"))
	g.Issued("!r:hs", "@a:hs", "D1", "lk-other", "hashed-d1")
	g.Issued("!r:hs", "@a:hs", "D2", "lk-other", "hashed-d2")
	g.Expired(context.Background(), []store.MatrixCallMember{{RoomID: "!r:hs", UserID: "@a:hs", DeviceID: "D1"}})
	require.ElementsMatch(t, []string{legacyRoom + "/@a:hs:D1", "lk-other/hashed-d1"}, sfu.removed)
}

type fakeExpiredSource struct{ calls atomic.Int32 }

func (f *fakeExpiredSource) EndExpiredMatrixCallMembers(context.Context, time.Time) ([]store.MatrixCallMember, error) {
	if f.calls.Add(1) == 1 {
		return nil, errors.New("busy")
	}
	return []store.MatrixCallMember{{RoomID: "!r:hs", UserID: "@a:hs", DeviceID: "D"}}, nil
}

func TestCallGuardRunExpiry(t *testing.T) {
	sfu := newFakeSFU()
	g := NewCallGuard(sfu, 0, zerolog.Nop())
	src := &fakeExpiredSource{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.RunExpiry(ctx, src, 5*time.Millisecond); close(done) }()
	require.Eventually(t, func() bool {
		sfu.mu.Lock()
		defer sfu.mu.Unlock()
		return len(sfu.removed) > 0
	}, 5*time.Second, 5*time.Millisecond, "an error does not stop the loop")
	cancel()
	<-done
}

// presenceSFU is a fakeSFU that also tells who is connected.
type presenceSFU struct {
	*fakeSFU
	present map[string]bool // room/identity
}

func (p *presenceSFU) HasParticipant(room, identity string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.present[room+"/"+identity]
}

// Prune forgets tokens that expired and whose participant left, and keeps
// every other: a participant still connected with an old token is still
// disconnected when its user leaves the Matrix room.
func TestCallGuardPrune(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	sfu := &presenceSFU{fakeSFU: newFakeSFU(), present: map[string]bool{"lk/connected": true}}
	g := NewCallGuard(sfu, time.Hour, zerolog.Nop())
	now := t0
	g.now = func() time.Time { return now }
	g.Issued("!r:hs", "@a:hs", "D1", "lk", "connected")
	g.Issued("!r:hs", "@a:hs", "D2", "lk", "gone")
	g.Issued("!r:hs", "@b:hs", "D", "lk", "gone-b")
	now = t0.Add(50 * time.Minute)
	g.Issued("!r:hs", "@a:hs", "D3", "lk", "recent")
	g.Issued("!r:hs", "@b:hs", "D", "lk", "gone-b") // issued again: a new lifetime

	g.Prune(t0.Add(61 * time.Minute))
	require.Equal(t, 3, g.n)
	require.Len(t, g.issued, 2)

	g.Applied(context.Background(), TxnEffects{Memberships: []RoomMembership{
		{RoomID: "!r:hs", UserID: "@a:hs", Membership: "leave"},
		{RoomID: "!r:hs", UserID: "@b:hs", Membership: "leave"},
	}})
	require.ElementsMatch(t, []string{"lk/connected", "lk/recent", "lk/gone-b"}, sfu.removed)
	require.Zero(t, g.n)
	require.Empty(t, g.issued)

	// Without a ParticipantChecker nothing is forgotten by age.
	plain := NewCallGuard(newFakeSFU(), time.Hour, zerolog.Nop())
	plain.Issued("!r:hs", "@a:hs", "D", "lk", "x")
	plain.Prune(time.Now().Add(24 * time.Hour))
	require.Equal(t, 1, plain.n)
}

// However many tokens are issued, the guard remembers at most maxIssued,
// forgetting the one that expires first.
func TestCallGuardMaxIssued(t *testing.T) {
	g := NewCallGuard(newFakeSFU(), time.Hour, zerolog.Nop())
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	for i := range maxIssued + 5 {
		now = now.Add(time.Millisecond)
		g.Issued("!r:hs", fmt.Sprintf("@u%d:hs", i%1000), "D", "lk", fmt.Sprint(i))
	}
	require.Equal(t, maxIssued, g.n)
	total := 0
	for _, ps := range g.issued {
		total += len(ps)
	}
	require.Equal(t, maxIssued, total)
	_, ok := g.issued[roomUser{"!r:hs", "@u4:hs"}][lkParticipant{"lk", "4"}]
	require.False(t, ok, "among the first issued, forgotten")
	_, ok = g.issued[roomUser{"!r:hs", "@u5:hs"}][lkParticipant{"lk", "5"}]
	require.True(t, ok, "the sixth is kept")
}

type pruningTxnSource struct {
	fakeExpiredSource
	cutoffs chan time.Time
}

func (p *pruningTxnSource) PruneAppserviceTxns(_ context.Context, before time.Time) (int64, error) {
	p.cutoffs <- before
	return 1, nil
}

// The housekeeping loop forgets transaction IDs older than TxnRetention
// when it starts (then hourly).
func TestCallGuardRunExpiryPrunesTxns(t *testing.T) {
	g := NewCallGuard(newFakeSFU(), 0, zerolog.Nop())
	src := &pruningTxnSource{cutoffs: make(chan time.Time, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	before := time.Now()
	go func() { g.RunExpiry(ctx, src, time.Hour); close(done) }()
	var cutoff time.Time
	select {
	case cutoff = <-src.cutoffs:
	case <-time.After(10 * time.Second):
		t.Fatal("transaction ids not pruned at start")
	}
	cancel()
	<-done
	require.False(t, cutoff.Before(before.Add(-TxnRetention)))
	require.False(t, cutoff.After(time.Now().Add(-TxnRetention)))
}
