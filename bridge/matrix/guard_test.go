package matrix

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/store"
)

func TestCallGuardLeave(t *testing.T) {
	sfu := newFakeSFU()
	g := NewCallGuard(sfu, zerolog.Nop())
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
	g := NewCallGuard(sfu, zerolog.Nop())
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
	g := NewCallGuard(sfu, zerolog.Nop())
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
