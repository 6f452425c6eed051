package matrix

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/store"
)

func TestClaimEscape(t *testing.T) {
	for in, want := range map[string]string{
		"!abc:example.com":   "!abc:example.com",
		"@alice:example.com": "@alice:example.com",
		"!odd?id~%:hs":       "!odd%3Fid%7E%25:hs",
		"@é:hs":              "@%C3%A9:hs",
	} {
		got := claimEscape(in)
		require.Equal(t, want, got)
		require.True(t, claimSafe(got), got)
		back, err := url.PathUnescape(got)
		require.NoError(t, err)
		require.Equal(t, in, back)
	}
}

func TestAdmit(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "entente.db"), zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	const room = "!room:hs"
	_, err = st.ApplyMatrixTxn(ctx, "t1", store.MatrixTxn{Memberships: []store.MatrixMembership{
		{RoomID: room, UserID: "@kicked:hs", Membership: "leave", EventID: "$1", At: time.Now()},
		{RoomID: room, UserID: "@alice:hs", Membership: "join", EventID: "$2", At: time.Now()},
	}})
	require.NoError(t, err)
	members := &fakeMembers{joined: map[string]bool{room + "/@alice:hs": true}}
	b := &Bridge{members: members, store: st, log: zerolog.Nop()}

	require.NoError(t, b.Admit(ctx, nil), "not a token of the token service")
	require.NoError(t, b.Admit(ctx, map[string]string{"other": "x"}))
	require.NoError(t, b.Admit(ctx, matrixAttributes(room, "@alice:hs")))
	require.ErrorIs(t, b.Admit(ctx, matrixAttributes(room, "@kicked:hs")), ErrNotAdmitted)
	require.ErrorIs(t, b.Admit(ctx, matrixAttributes(room, "@stranger:hs")), ErrNotAdmitted)
	require.ErrorIs(t, b.Admit(ctx, map[string]string{AttrMatrixRoomID: room}), ErrNotAdmitted, "user missing")
	require.ErrorIs(t, b.Admit(ctx, matrixAttributes(room, "not-a-user")), ErrNotAdmitted)
	require.ErrorIs(t, b.Admit(ctx, map[string]string{AttrMatrixRoomID: "%zz", AttrMatrixUserID: "@alice:hs"}), ErrNotAdmitted)

	// "!meet" guests' tokens: admitted while meeting_guests is on, refused
	// after it was turned off.
	guest := map[string]string{AttrMeetingGuest: "1"}
	require.ErrorIs(t, b.Admit(ctx, guest), ErrNotAdmitted)
	b.meetingGuests = true
	require.NoError(t, b.Admit(ctx, guest))
	b.meetingGuests = false

	// The homeserver cannot answer: the node's record decides.
	members.err = ErrMembershipUnavailable
	require.ErrorIs(t, b.Admit(ctx, matrixAttributes(room, "@kicked:hs")), ErrNotAdmitted)
	require.NoError(t, b.Admit(ctx, matrixAttributes(room, "@alice:hs")))
	require.NoError(t, b.Admit(ctx, matrixAttributes(room, "@unknown:hs")), "not known to have left")

	// A room the node saw from its creation (the bot need not be in it):
	// someone the record never saw join is refused.
	const seen = "!seen:hs"
	_, err = st.ApplyMatrixTxn(ctx, "t2", store.MatrixTxn{
		Rooms:       []store.MatrixRoom{{RoomID: seen, Creator: "@alice:hs", EventID: "$c", At: time.Now()}},
		Memberships: []store.MatrixMembership{{RoomID: seen, UserID: "@alice:hs", Membership: "join", EventID: "$3", At: time.Now()}},
	})
	require.NoError(t, err)
	members.err = ErrBotNotInRoom
	require.NoError(t, b.Admit(ctx, matrixAttributes(seen, "@alice:hs")))
	require.ErrorIs(t, b.Admit(ctx, matrixAttributes(seen, "@stranger:hs")), ErrNotAdmitted)
}
