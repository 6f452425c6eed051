package matrix

import (
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/appservice"

	"entente.dev/entente/internal/dendritetest"
)

// TestDendriteFederatedUser: with two federating Dendrites, a user of B who
// joined A's room gets a token from A's node only as the policy says: never
// to start a call, only to join one a local user started, and not at all
// when B is not on the allow list.
func TestDendriteFederatedUser(t *testing.T) {
	hsA, reg := registeredHomeserver(t, nil)
	hsB := dendritetest.Start(t, dendritetest.Options{})
	bot := BotUserID(reg.SenderLocalpart, hsA.ServerName)

	alice := hsA.Register(t, "alice")
	bob := hsB.Register(t, "bob")
	room := hsA.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	hsA.Invite(t, alice, room, bot)
	hsA.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?user_id="+url.QueryEscape(bot), reg.AppToken, map[string]any{}, nil)
	hsA.Invite(t, alice, room, bob.ID)
	require.Eventually(t, func() bool { // the invite travels over federation first
		return hsB.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{}, nil) == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond)

	openID := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true, Timeout: 10 * time.Second})
	t.Cleanup(openID.CloseIdleConnections)
	members, err := NewClientMembership(hsA.ClientURL, reg.AppToken, bot, nil)
	require.NoError(t, err)
	sfu := newFakeSFU()
	service := func(allow ...string) *TokenService {
		svc, err := NewTokenService(TokenServiceOptions{SFU: sfu, OpenID: openID, Membership: members,
			ServerName: hsA.ServerName, Allow: allow, URL: "ws://127.0.0.1:7880", Log: zerolog.New(zerolog.NewTestWriter(t))})
		require.NoError(t, err)
		return svc
	}
	open, closed := service(hsB.ServerName), service()
	getToken := func(svc *TokenService, hs *dendritetest.Homeserver, u dendritetest.User) (int, map[string]string) {
		return postJSON(t, svc, PathGetToken, map[string]any{
			"room_id": room, "slot_id": "m.call#ROOM", "openid_token": hs.OpenIDToken(t, u),
			"member": map[string]any{"id": "m-" + u.DeviceID, "claimed_user_id": u.ID, "claimed_device_id": u.DeviceID},
		})
	}

	// Bob's membership is known to A (joined over federation), but no call
	// exists yet: he may not start one.
	require.Eventually(t, func() bool {
		ok, err := members.IsJoined(t.Context(), room, bob.ID)
		return err == nil && ok
	}, 30*time.Second, 100*time.Millisecond)
	code, resp := getToken(open, hsB, bob)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Empty(t, sfu.ensured)

	// Alice starts the call; now Bob, verified by his own homeserver B, may join.
	code, resp = getToken(open, hsA, alice)
	require.Equal(t, http.StatusOK, code, resp)
	code, resp = getToken(open, hsB, bob)
	require.Equal(t, http.StatusOK, code, resp)
	require.Equal(t, Identity(bob.ID, bob.DeviceID, "m-"+bob.DeviceID), sfu.mints[1].identity)
	require.Len(t, sfu.ensured, 1, "only the local user created the room")

	// A node whose allow list lacks B refuses Bob, whose own homeserver
	// is never asked.
	code, resp = getToken(closed, hsB, bob)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Equal(t, "M_FORBIDDEN", resp["errcode"])
	require.Len(t, sfu.mints, 2)
}

// TestDendriteFederatedInvitationNotPushed: Alice of homeserver A invites
// agency B's bot into her private room; Dendrite B stores the invitation
// but does not push it to B's node (appservice/consumers/roomserver.go
// handles only new room events), so the bot does not join. (It reaches the
// node later with the room's state, once a user of B joins the room.) When Bob of B,
// a member, asks B's node for a token, the bot accepts the invitation
// itself and B's node checks Bob's membership as usual.
func TestDendriteFederatedInvitationNotPushed(t *testing.T) {
	hsA := dendritetest.Start(t, dendritetest.Options{})
	var pushed []TxnEffects
	var mu sync.Mutex
	hsB, reg := registeredHomeserver(t, func(*appservice.Registration) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if fx, err := parseTxn(body); err == nil {
				mu.Lock()
				pushed = append(pushed, fx)
				mu.Unlock()
			}
			_, _ = w.Write([]byte("{}"))
		})
	})
	botB := BotUserID(reg.SenderLocalpart, hsB.ServerName)
	alice, bob := hsA.Register(t, "alice"), hsB.Register(t, "bob")
	room := hsA.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	// Homeserver A hands the invitation to B over federation before it
	// answers (the federation /invite call is synchronous), so B holds it
	// from here on. Nothing may reach B's node for the next seconds: once a
	// user of B joins, B receives the room's state and pushes it, the bot's
	// invitation included, so the check comes before Bob joins.
	hsA.Invite(t, alice, room, botB)
	botInvitePushed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, fx := range pushed {
			for _, m := range fx.Memberships {
				if m.UserID == botB && m.Membership == "invite" {
					return true
				}
			}
		}
		return false
	}
	require.Never(t, botInvitePushed, 3*time.Second, 100*time.Millisecond, "Dendrite pushed the bot's invitation after all")
	hsA.Invite(t, alice, room, bob.ID)
	require.Eventually(t, func() bool { // the invitation travels over federation first
		return hsB.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.Token, map[string]any{}, nil) == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond)

	openID := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true, Timeout: 10 * time.Second})
	t.Cleanup(openID.CloseIdleConnections)
	members, err := NewClientMembership(hsB.ClientURL, reg.AppToken, botB, nil)
	require.NoError(t, err)
	_, err = members.IsJoined(t.Context(), room, bob.ID)
	require.ErrorIs(t, err, ErrBotNotInRoom, "the bot did not join by itself")

	sfu := newFakeSFU()
	svc, err := NewTokenService(TokenServiceOptions{SFU: sfu, OpenID: openID, Membership: members,
		ServerName: hsB.ServerName, Allow: []string{hsA.ServerName}, URL: "ws://127.0.0.1:7880", BotUserID: botB,
		Log: zerolog.New(zerolog.NewTestWriter(t))})
	require.NoError(t, err)
	code, resp := postJSON(t, svc, PathGetToken, map[string]any{
		"room_id": room, "slot_id": "m.call#ROOM", "openid_token": hsB.OpenIDToken(t, bob),
		"member": map[string]any{"id": "m-" + bob.DeviceID, "claimed_user_id": bob.ID, "claimed_device_id": bob.DeviceID},
	})
	require.Equal(t, http.StatusOK, code, resp)
	joined, err := members.IsJoined(t.Context(), room, botB)
	require.NoError(t, err)
	require.True(t, joined, "B's bot accepted the invitation it was never told of")
}
