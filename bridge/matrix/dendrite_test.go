package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/appservice"

	"entente.dev/entente/internal/dendritetest"
	"entente.dev/entente/internal/store"
)

// registeredHomeserver starts a Dendrite with the node registered as its
// appservice, served by handler(reg) on a loopback port that is listening
// before Dendrite starts, and the bot user registered. A nil handler
// acknowledges every transaction.
func registeredHomeserver(t *testing.T, handler func(*appservice.Registration) http.Handler) (*dendritetest.Homeserver, *appservice.Registration) {
	t.Helper()
	hs := dendritetest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	reg, err := NewRegistration(RegistrationParams{ID: "entente", URL: "http://" + ln.Addr().String(),
		ServerName: hs.ServerName, BotLocalpart: "entente", GhostPrefix: "entente_", AllRooms: true})
	require.NoError(t, err)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })
	if handler != nil {
		h = handler(reg)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	path := filepath.Join(t.TempDir(), "registration.yaml")
	require.NoError(t, reg.Save(path))
	hs.Start(t, dendritetest.Options{AppServices: []string{path}})
	hs.RegisterAppServiceUser(t, reg.AppToken, reg.SenderLocalpart)
	return hs, reg
}

func postJSON(t *testing.T, h http.Handler, path string, body any) (int, map[string]string) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	out := map[string]string{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestDendriteTokenService: a real Dendrite vouches for a user's OpenID
// token; the node checks it over federation TLS, checks room membership as
// its bot, and issues a token only to joined users.
func TestDendriteTokenService(t *testing.T) {
	sfu := newFakeSFU()
	guard := NewCallGuard(sfu, 0, zerolog.New(zerolog.NewTestWriter(t)))
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "entente.db"), zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	txns := NewStoreTxns(st)
	hs, reg := registeredHomeserver(t, func(reg *appservice.Registration) http.Handler {
		a, err := NewAppService(AppServiceOptions{Registration: reg, HomeserverURL: "http://127.0.0.1:1", ServerName: "unused",
			Store: txns, OnApplied: guard.Applied, Log: zerolog.New(zerolog.NewTestWriter(t))})
		require.NoError(t, err)
		return a
	})
	asToken := reg.AppToken
	bot := BotUserID(reg.SenderLocalpart, hs.ServerName)

	alice := hs.Register(t, "alice")
	bob := hs.Register(t, "bob")
	room := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	hs.Invite(t, alice, room, bot)
	hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?user_id="+url.QueryEscape(bot), asToken, map[string]any{}, nil)

	openID := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true, Timeout: 10 * time.Second})
	t.Cleanup(openID.CloseIdleConnections)
	members, err := NewClientMembership(hs.ClientURL, asToken, bot, nil)
	require.NoError(t, err)
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: sfu, OpenID: openID, Membership: members, ServerName: hs.ServerName,
		URL: "ws://127.0.0.1:7880", OnIssued: guard.Issued, Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	require.NoError(t, err)

	getToken := func(u dendritetest.User, oid dendritetest.OpenID, claimed string) (int, map[string]string) {
		return postJSON(t, svc, PathGetToken, map[string]any{
			"room_id": room, "slot_id": "m.call#ROOM", "openid_token": oid,
			"member": map[string]any{"id": "member-" + u.DeviceID, "claimed_user_id": claimed, "claimed_device_id": u.DeviceID},
		})
	}

	// A joined user gets a token for the room's LiveKit room.
	aliceOID := hs.OpenIDToken(t, alice)
	require.Equal(t, hs.ServerName, aliceOID.MatrixServerName)
	code, resp := getToken(alice, aliceOID, alice.ID)
	require.Equal(t, http.StatusOK, code, resp)
	require.Equal(t, "ws://127.0.0.1:7880", resp["url"])
	lkRoom := RoomAlias(room, "m.call#ROOM")
	require.Equal(t, "jwt."+lkRoom, resp["jwt"])
	require.Equal(t, Identity(alice.ID, alice.DeviceID, "member-"+alice.DeviceID), sfu.mints[0].identity)
	require.True(t, sfu.RoomExists(lkRoom), "a local user creates the LiveKit room")

	code, resp = postJSON(t, svc, PathSFUGet, map[string]any{"room": room, "openid_token": hs.OpenIDToken(t, alice), "device_id": alice.DeviceID})
	require.Equal(t, http.StatusOK, code, resp)
	require.Equal(t, LegacyIdentity(alice.ID, alice.DeviceID), sfu.mints[1].identity)

	// A user of the same homeserver who is not in the room is refused.
	code, resp = getToken(bob, hs.OpenIDToken(t, bob), bob.ID)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Equal(t, "M_FORBIDDEN", resp["errcode"])

	// Bob claiming to be Alice with his own token is refused.
	code, resp = getToken(bob, hs.OpenIDToken(t, bob), alice.ID)
	require.Equal(t, http.StatusUnauthorized, code, resp)

	// A forged OpenID token is refused by the homeserver.
	forged := aliceOID
	forged.AccessToken = "forged" + aliceOID.AccessToken[6:]
	code, resp = getToken(alice, forged, alice.ID)
	require.Equal(t, http.StatusUnauthorized, code, resp)
	require.Equal(t, "M_UNAUTHORIZED", resp["errcode"])

	// Bob joins: he gets a token for the existing room. Kicked, he is
	// removed from the call within seconds, through the appservice
	// transaction that reports the kick, and gets no new token.
	hs.Invite(t, alice, room, bob.ID)
	hs.Join(t, bob, room)
	code, resp = getToken(bob, hs.OpenIDToken(t, bob), bob.ID)
	require.Equal(t, http.StatusOK, code, resp)
	bobIdentity := Identity(bob.ID, bob.DeviceID, "member-"+bob.DeviceID)
	kicked := time.Now()
	hs.Kick(t, alice, room, bob.ID)
	require.Eventually(t, func() bool {
		sfu.mu.Lock()
		defer sfu.mu.Unlock()
		return slices.Contains(sfu.removed, lkRoom+"/"+bobIdentity)
	}, 10*time.Second, 20*time.Millisecond)
	t.Logf("kicked user removed from the call %v after the kick", time.Since(kicked).Round(time.Millisecond))
	code, resp = getToken(bob, hs.OpenIDToken(t, bob), bob.ID)
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Len(t, sfu.mints, 3)
	require.NotContains(t, sfu.removed, lkRoom+"/"+Identity(alice.ID, alice.DeviceID, "member-"+alice.DeviceID))
	m, err := st.MatrixMembershipOf(context.Background(), room, bob.ID)
	require.NoError(t, err)
	require.Equal(t, "leave", m, "the kick is in the store")
}

// TestDendriteCallMembers: call memberships reach the store through real
// transactions, attributed to their sender; a member overwriting another's
// state key (which Dendrite allows) is not taken for that member.
func TestDendriteCallMembers(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "entente.db"), zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	hs, reg := registeredHomeserver(t, func(reg *appservice.Registration) http.Handler {
		a, err := NewAppService(AppServiceOptions{Registration: reg, HomeserverURL: "http://127.0.0.1:1", ServerName: "unused",
			Store: NewStoreTxns(st), Log: zerolog.New(zerolog.NewTestWriter(t))})
		require.NoError(t, err)
		return a
	})
	bot := BotUserID(reg.SenderLocalpart, hs.ServerName)
	alice, mallory := hs.Register(t, "alice"), hs.Register(t, "mallory")
	room := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	for _, u := range []string{bot, mallory.ID} {
		hs.Invite(t, alice, room, u)
	}
	hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?user_id="+url.QueryEscape(bot), reg.AppToken, map[string]any{}, nil)
	hs.Join(t, mallory, room)

	key := "_" + alice.ID + "_" + alice.DeviceID + "_m.call"
	content := map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": alice.DeviceID, "expires": 14400000,
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://rtc.example/", "livekit_alias": room}},
	}
	hs.SendState(t, alice, room, CallMemberEventType, key, content)
	var members []store.MatrixCallMember
	require.Eventually(t, func() bool {
		members, err = st.MatrixCallMembers(ctx, room)
		require.NoError(t, err)
		return len(members) == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, alice.ID, members[0].UserID)
	require.Equal(t, alice.DeviceID, members[0].DeviceID)
	require.Equal(t, "https://rtc.example/", members[0].ServiceURL)

	// Mallory ends Alice's membership and claims a device under her key:
	// Dendrite accepts both, the node ignores both.
	hs.SendState(t, mallory, room, CallMemberEventType, key, map[string]any{})
	content["device_id"] = "EVIL"
	hs.SendState(t, mallory, room, CallMemberEventType, "_"+alice.ID+"_EVIL_m.call", content)
	// Alice joins from a second device: once that is stored, Mallory's
	// events (sent before, transactions arrive in order) were seen too.
	key2 := "_" + alice.ID + "_DEV2_m.call"
	content["device_id"] = "DEV2"
	hs.SendState(t, alice, room, CallMemberEventType, key2, content)
	require.Eventually(t, func() bool {
		members, err = st.MatrixCallMembers(ctx, room)
		require.NoError(t, err)
		return len(members) == 2
	}, 10*time.Second, 20*time.Millisecond)
	for _, m := range members {
		require.Equal(t, alice.ID, m.UserID)
		require.Contains(t, []string{alice.DeviceID, "DEV2"}, m.DeviceID)
	}
	// Alice leaves with the second device: that one counts.
	hs.SendState(t, alice, room, CallMemberEventType, key2, map[string]any{})
	require.Eventually(t, func() bool {
		members, err = st.MatrixCallMembers(ctx, room)
		require.NoError(t, err)
		return len(members) == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, key, members[0].StateKey)
}
