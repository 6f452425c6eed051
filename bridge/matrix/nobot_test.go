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
// builds it, with a fake SFU.
func tokenServiceFor(t *testing.T) (*dendritetest.Homeserver, *TokenService, *fakeSFU, *store.Store, *appservice.Registration) {
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
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: sfu, OpenID: openID, Membership: members, ServerName: hs.ServerName,
		URL: "ws://127.0.0.1:7880", BotUserID: bot, Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	require.NoError(t, err)
	return hs, svc, sfu, st, reg
}

// TestDendriteCallWithoutInvitingTheBot: a person starts a call in a room
// made as Element Call makes it, nobody invites the node's bot, and the
// person gets a token: the bot joins the public room on its own and reads
// its members. Nobody else gets one: not a user outside the room, not one
// who left, not a user of a homeserver off the allow list; and in a
// private room the bot cannot join, the refusal says what to do.
func TestDendriteCallWithoutInvitingTheBot(t *testing.T) {
	hs, svc, sfu, _, reg := tokenServiceFor(t)
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
