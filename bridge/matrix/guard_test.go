package matrix

import (
	"context"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestCallGuard(t *testing.T) {
	sfu := newFakeSFU()
	g := NewCallGuard(sfu, zerolog.Nop())
	g.Issued("!r:hs", "@a:hs", "lk1", "id-a1")
	g.Issued("!r:hs", "@a:hs", "lk2", "id-a2")
	g.Issued("!r:hs", "@b:hs", "lk1", "id-b")
	g.Issued("!other:hs", "@a:hs", "lk3", "id-a3")

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
