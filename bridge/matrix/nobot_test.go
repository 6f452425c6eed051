package matrix

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/appservice"

	"entente.dev/entente/internal/dendritetest"
	"entente.dev/entente/internal/store"
)

// elementCallRoom is the createRoom body Element Call sends when someone
// starts a call from its home page (element-call src/utils/matrix.ts
// createRoom): a private directory entry, but the public_chat preset, so
// anyone who knows the room may join; call memberships at power level 0.
func elementCallRoom(name string) map[string]any {
	return map[string]any{
		"visibility": "private", "preset": "public_chat", "name": name,
		"power_level_content_override": map[string]any{
			"invite": 100, "kick": 100, "ban": 100, "state_default": 0, "events_default": 0,
			"events": map[string]any{"org.matrix.msc3401.call.member": 0},
		},
	}
}

// tokenServiceFor starts a Dendrite with the node as its appservice (its
// transactions stored in st) and returns a token service as the node
// builds it from opts, with a fake SFU; withRecord makes st its Record.
func tokenServiceFor(t *testing.T, opts TokenServiceOptions, withRecord bool) (*dendritetest.Homeserver, *TokenService, *fakeSFU, *store.Store, *appservice.Registration) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "entente.db"), zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	hs, reg := registeredHomeserver(t, func(reg *appservice.Registration) http.Handler {
		a, err := NewAppService(AppServiceOptions{Registration: reg, HomeserverURL: "http://127.0.0.1:1", ServerName: "unused",
			Store: NewStoreTxns(st), Log: zerolog.New(zerolog.NewTestWriter(t))})
		require.NoError(t, err)
		return a
	})
	bot := BotUserID(reg.SenderLocalpart, hs.ServerName)
	openID := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true, Timeout: 10 * time.Second})
	t.Cleanup(openID.CloseIdleConnections)
	members, err := NewClientMembership(hs.ClientURL, reg.AppToken, bot, nil)
	require.NoError(t, err)
	sfu := newFakeSFU()
	opts.SFU, opts.OpenID, opts.Membership, opts.ServerName = sfu, openID, members, hs.ServerName
	opts.URL, opts.BotUserID, opts.Log = "ws://127.0.0.1:7880", bot, zerolog.New(zerolog.NewTestWriter(t))
	if withRecord {
		opts.Record = st // what the appservice writes
	}
	svc, err := NewTokenService(opts)
	require.NoError(t, err)
	return hs, svc, sfu, st, reg
}

// getTokenAs asks svc's /get_token for u in roomID, as Element Call does.
func getTokenAs(t *testing.T, hs *dendritetest.Homeserver, svc *TokenService, u dendritetest.User, roomID string) (int, map[string]string) {
	t.Helper()
	return postJSON(t, svc, PathGetToken, map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": hs.OpenIDToken(t, u),
		"member": map[string]any{"id": u.ID + ":" + u.DeviceID, "claimed_user_id": u.ID, "claimed_device_id": u.DeviceID},
	})
}

// TestDendritePrivateRoomFromRecord: in a private room (the kind Element
// Web makes), which the bot may not join and nobody invites it to, the
// node knows the members from the room events the homeserver sent it since
// the room's creation (the registration's room namespace): members get a
// token, a user never in the room, one who was kicked and one who left do
// not, even though the bot never joined.
func TestDendritePrivateRoomFromRecord(t *testing.T) {
	hs, svc, sfu, _, reg := tokenServiceFor(t, TokenServiceOptions{}, true)
	bot := BotUserID(reg.SenderLocalpart, hs.ServerName)
	alice, bob, carol, dave := hs.Register(t, "alice"), hs.Register(t, "bob"), hs.Register(t, "carol"), hs.Register(t, "dave")
	room := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	for _, u := range []dendritetest.User{bob, dave} {
		hs.Invite(t, alice, room, u.ID)
		hs.Join(t, u, room)
	}

	// Asked at once, before Dendrite's transactions may have reached the
	// node: the token service waits for them.
	code, resp := getTokenAs(t, hs, svc, alice, room)
	require.Equal(t, http.StatusOK, code, resp)
	code, resp = getTokenAs(t, hs, svc, bob, room)
	require.Equal(t, http.StatusOK, code, resp)
	require.False(t, hs.IsJoined(t, alice, room, bot), "the bot never joined")

	code, resp = getTokenAs(t, hs, svc, carol, room)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Contains(t, resp["error"], "not joined")

	hs.Kick(t, alice, room, bob.ID)
	hs.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", dave.Token, map[string]any{}, nil)
	for _, u := range []dendritetest.User{bob, dave} {
		require.Eventually(t, func() bool {
			code, _ := getTokenAs(t, hs, svc, u, room)
			return code == http.StatusForbidden
		}, 15*time.Second, 100*time.Millisecond, "%s is refused once gone", u.ID)
	}
	require.Len(t, sfu.mints, 2)
}

// TestDendriteUnknownMembershipPolicy: when the node cannot know a room's
// members (its record never saw the room, as for rooms older than the
// registration, and the bot may not join), matrix.unknown_membership
// decides: "refuse" (the default) names the bot to invite; "serve_local"
// serves the verified local user with a marked token.
func TestDendriteUnknownMembershipPolicy(t *testing.T) {
	empty, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "empty.db"), zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = empty.Close() })
	hs, svc, sfu, _, reg := tokenServiceFor(t, TokenServiceOptions{Record: empty, RecordCatchUp: 200 * time.Millisecond}, false)
	bot := BotUserID(reg.SenderLocalpart, hs.ServerName)
	alice := hs.Register(t, "alice")
	room := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	code, resp := getTokenAs(t, hs, svc, alice, room)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Contains(t, resp["error"], "invite "+bot)

	open, err := NewTokenService(TokenServiceOptions{
		SFU: sfu, OpenID: svc.openID, Membership: svc.membership, ServerName: hs.ServerName, URL: "ws://127.0.0.1:7880",
		Record: empty, RecordCatchUp: 200 * time.Millisecond, UnknownMembership: UnknownMembershipServeLocal,
		Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	require.NoError(t, err)
	code, resp = getTokenAs(t, hs, open, alice, room)
	require.Equal(t, http.StatusOK, code, resp)
	require.Len(t, sfu.mints, 1)
	require.Equal(t, "true", sfu.mints[0].grant.Attributes[AttrMembershipUnverified], "the token says membership was not checked")

	// The call history marks the presence that token admits.
	ctx := context.Background()
	lkRoom := RoomAlias(room, "m.call#ROOM")
	require.NoError(t, empty.RoomOpened(ctx, lkRoom, "RM_1", time.Now()))
	require.NoError(t, empty.ParticipantJoined(ctx, lkRoom, "RM_1", sfu.mints[0].identity, "PA_1", time.Now()))
	calls, err := empty.CallHistory(ctx, lkRoom, 0)
	require.NoError(t, err)
	require.Len(t, calls, 1)
	require.True(t, calls[0].MembershipUnverified, "marked in the call history")
}

// TestDendriteCallWithoutInvitingTheBot: a person starts a call in a room
// made as Element Call makes it, nobody invites the node's bot, and the
// person gets a token: the bot joins the public room on its own and reads
// its members. Nobody else gets one: not a user outside the room, not one
// who left, not a user of a homeserver off the allow list; and in a
// private room the bot cannot join, the refusal says what to do.
func TestDendriteCallWithoutInvitingTheBot(t *testing.T) {
	hs, svc, sfu, _, reg := tokenServiceFor(t, TokenServiceOptions{}, false)
	bot := BotUserID(reg.SenderLocalpart, hs.ServerName)
	alice, bob, carol := hs.Register(t, "alice"), hs.Register(t, "bob"), hs.Register(t, "carol")
	room := hs.CreateRoom(t, alice, elementCallRoom("standup"))

	getToken := func(u dendritetest.User, roomID string) (int, map[string]string) {
		oid := hs.OpenIDToken(t, u)
		return postJSON(t, svc, PathGetToken, map[string]any{
			"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
			"member": map[string]any{"id": u.ID + ":" + u.DeviceID, "claimed_user_id": u.ID, "claimed_device_id": u.DeviceID},
		})
	}

	code, resp := getToken(alice, room)
	require.Equal(t, http.StatusOK, code, resp)
	require.True(t, hs.IsJoined(t, alice, room, bot), "the bot joined the room on its own")
	require.Len(t, sfu.mints, 1)

	// The legacy endpoint, as Element Call 0.26.1 asks for its own
	// transport, works as well.
	code, resp = postJSON(t, svc, PathSFUGet, map[string]any{"room": room, "openid_token": hs.OpenIDToken(t, alice), "device_id": alice.DeviceID})
	require.Equal(t, http.StatusOK, code, resp)

	// Bob never joined: refused, and told why.
	code, resp = getToken(bob, room)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Equal(t, "M_FORBIDDEN", resp["errcode"])
	require.Contains(t, resp["error"], "not joined")

	// Carol joins (the room is public), gets a token, leaves: refused.
	hs.Join(t, carol, room)
	code, resp = getToken(carol, room)
	require.Equal(t, http.StatusOK, code, resp)
	hs.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", carol.Token, map[string]any{}, nil)
	code, resp = getToken(carol, room)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Contains(t, resp["error"], "not joined")

	// A user of a homeserver that is not allowed: refused before the
	// homeserver is contacted.
	oid := hs.OpenIDToken(t, alice)
	oid.MatrixServerName = "elsewhere.example"
	code, resp = postJSON(t, svc, PathGetToken, map[string]any{
		"room_id": room, "slot_id": "m.call#ROOM", "openid_token": oid,
		"member": map[string]any{"id": "m", "claimed_user_id": "@alice:elsewhere.example", "claimed_device_id": "D"},
	})
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Contains(t, resp["error"], "homeserver is not allowed")

	// A private room the bot was not invited to: the bot may not join, so
	// membership cannot be read; the person is told whom to invite.
	private := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	code, resp = getToken(alice, private)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Contains(t, resp["error"], "invite "+bot)
	require.False(t, hs.IsJoined(t, alice, private, bot))
	require.Len(t, sfu.mints, 3, "tokens: Alice twice, Carol once")
}
