package matrix

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// fakeUsers maps access tokens to users.
type fakeUsers map[string]string

func (f fakeUsers) WhoAmI(_ context.Context, tok string) (string, error) {
	if u, ok := f[tok]; ok {
		return u, nil
	}
	return "", ErrAccessTokenRejected
}

func liveKitTokenBody(serverName, url, room, slot, member string) string {
	b, _ := json.Marshal(map[string]any{"server_name": serverName, "url": url, "room_id": room, "slot_id": slot, "member_id": member})
	return string(b)
}

// TestLiveKitGetToken: MSC4195's homeserver endpoint, stable and unstable
// paths: the access token names the user, who must be local and joined;
// the answer is {"jwt"} with the [sender, member_id] identity; a token for
// another SFU or another homeserver's SFU is refused as the proposal says.
func TestLiveKitGetToken(t *testing.T) {
	const room = "!roomid:example.com"
	for _, c := range []struct {
		name, path, auth, body string
		status                 int
		errcode                string
	}{
		{"ok", PathLiveKitGetToken, "Bearer tok-alice", liveKitTokenBody("", "wss://rtc.example.com", room, "m.call#ROOM", "m1"), 200, ""},
		{"ok unstable, own server named", PathLiveKitGetTokenUnstable, "Bearer tok-alice", liveKitTokenBody("example.com", "wss://rtc.example.com/", room, "m.call#ROOM", "m1"), 200, ""},
		{"no token", PathLiveKitGetToken, "", liveKitTokenBody("", "wss://rtc.example.com", room, "s", "m1"), 401, "M_MISSING_TOKEN"},
		{"unknown token", PathLiveKitGetToken, "Bearer nope", liveKitTokenBody("", "wss://rtc.example.com", room, "s", "m1"), 401, "M_UNKNOWN_TOKEN"},
		{"not joined", PathLiveKitGetToken, "Bearer tok-carol", liveKitTokenBody("", "wss://rtc.example.com", room, "s", "m1"), 403, "M_FORBIDDEN"},
		{"another SFU", PathLiveKitGetToken, "Bearer tok-alice", liveKitTokenBody("", "wss://elsewhere.example", room, "s", "m1"), 400, "M_INVALID_PARAM"},
		{"another homeserver", PathLiveKitGetToken, "Bearer tok-alice", liveKitTokenBody("remote.org", "wss://rtc.remote.org", room, "s", "m1"), 502, "M_UNKNOWN"},
		{"missing member", PathLiveKitGetToken, "Bearer tok-alice", liveKitTokenBody("", "wss://rtc.example.com", room, "s", ""), 400, "M_BAD_JSON"},
		{"remote user's token", PathLiveKitGetToken, "Bearer tok-bob", liveKitTokenBody("", "wss://rtc.example.com", room, "s", "m1"), 401, "M_UNAUTHORIZED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newTSFixture(t)
			svc, err := NewTokenService(TokenServiceOptions{
				SFU: f.sfu, OpenID: f.openid, Membership: f.members, ServerName: "example.com", URL: "wss://rtc.example.com",
				Users: fakeUsers{"tok-alice": "@alice:example.com", "tok-carol": "@carol:example.com", "tok-bob": "@bob:remote.org"},
				Log:   zerolog.Nop(),
			})
			require.NoError(t, err)
			req := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.body))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rr := httptest.NewRecorder()
			svc.ServeHTTP(rr, req)
			require.Equal(t, "*", rr.Header().Get("Access-Control-Allow-Origin"))
			if c.status != 200 {
				requireMatrixError(t, rr, c.status, c.errcode)
				require.Empty(t, f.sfu.mints)
				return
			}
			require.Equal(t, 200, rr.Code, rr.Body.String())
			var out map[string]string
			require.NoError(t, json.Unmarshal(rr.Body.Bytes(), &out))
			require.Equal(t, []string{"jwt"}, keys(out), "the answer carries the jwt only")
			require.Len(t, f.sfu.mints, 1)
			require.Equal(t, MSC4195Identity("@alice:example.com", "m1"), f.sfu.mints[0].identity)
			require.Equal(t, RoomAlias(room, "m.call#ROOM"), f.sfu.mints[0].room)
			require.True(t, f.sfu.mints[0].grant.CanPublish, "local users publish")
		})
	}
	// Without an authenticator the endpoint is not served.
	f := newTSFixture(t)
	rr := do(f.svc, http.MethodPost, PathLiveKitGetToken, liveKitTokenBody("", "wss://rtc.example.com", room, "s", "m"))
	requireMatrixError(t, rr, http.StatusNotFound, "M_UNRECOGNIZED")
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestMSC4195Identity: the proposal's formula, unpadded base64 of SHA-256
// of the canonical JSON ["@alice:example.com","xyzABCDEF10123"].
func TestMSC4195Identity(t *testing.T) {
	require.Equal(t, hashStrings("@alice:example.com", "xyzABCDEF10123"), MSC4195Identity("@alice:example.com", "xyzABCDEF10123"))
	require.Len(t, MSC4195Identity("@a:b", "m"), 43)
	require.NotEqual(t, MSC4195Identity("@a:b", "m"), Identity("@a:b", "", "m"), "no device in the newer formula")
}

// FuzzParseLiveKitTokenRequest: the MSC4195 body parser never panics and
// accepts only what the handler relies on.
func FuzzParseLiveKitTokenRequest(f *testing.F) {
	f.Add([]byte(liveKitTokenBody("example.com", "wss://rtc.example.com", "!r:example.com", "m.call#ROOM", "m1")))
	f.Add([]byte(`{"url":"x","room_id":"!","slot_id":"\u0000","member_id":"m","server_name":"a/b"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := parseLiveKitTokenRequest(body)
		if e != nil {
			if e.Status != 400 {
				t.Fatalf("unexpected error %v", e)
			}
			return
		}
		if !validRoomID(r.RoomID) || !validText(r.SlotID) || !validText(r.MemberID) || r.URL == "" || len(r.URL) > maxIDLen {
			t.Fatalf("accepted invalid request %+v", r)
		}
		if r.ServerName != "" {
			if _, err := ParseServerName(r.ServerName); err != nil {
				t.Fatalf("accepted invalid server name %q", r.ServerName)
			}
		}
		_ = MSC4195Identity("@a:b", r.MemberID)
	})
}

// TestDendriteLiveKitGetToken: MSC4195's homeserver endpoint against a real
// Dendrite: access tokens checked with whoami, the bot joining the room on
// its own as for the other endpoints, outsiders and forged tokens refused.
func TestDendriteLiveKitGetToken(t *testing.T) {
	hs, base, sfu, st, reg := tokenServiceFor(t, TokenServiceOptions{}, true)
	users, err := NewHomeserverWhoAmI(hs.ClientURL, nil)
	require.NoError(t, err)
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: sfu, OpenID: base.openID, Membership: base.membership, ServerName: hs.ServerName, URL: "ws://127.0.0.1:7880",
		BotUserID: BotUserID(reg.SenderLocalpart, hs.ServerName), Record: st, Users: users, Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	require.NoError(t, err)
	alice, bob := hs.Register(t, "alice"), hs.Register(t, "bob")
	room := hs.CreateRoom(t, alice, elementCallRoom("standup"))
	ask := func(token, serverName, url string) (int, map[string]string) {
		req := httptest.NewRequest(http.MethodPost, PathLiveKitGetTokenUnstable, strings.NewReader(liveKitTokenBody(serverName, url, room, "m.call#ROOM", "member-1")))
		req.Header.Set("Authorization", "Bearer "+token)
		rr := httptest.NewRecorder()
		svc.ServeHTTP(rr, req)
		out := map[string]string{}
		_ = json.Unmarshal(rr.Body.Bytes(), &out)
		return rr.Code, out
	}
	code, resp := ask(alice.Token, "", "ws://127.0.0.1:7880")
	require.Equal(t, http.StatusOK, code, resp)
	require.NotEmpty(t, resp["jwt"])
	require.Equal(t, MSC4195Identity(alice.ID, "member-1"), sfu.mints[0].identity)

	code, resp = ask(bob.Token, "", "ws://127.0.0.1:7880")
	require.Equal(t, http.StatusForbidden, code, resp)
	require.Contains(t, resp["error"], "not joined")
	code, resp = ask("forged"+alice.Token[6:], "", "ws://127.0.0.1:7880")
	require.Equal(t, http.StatusUnauthorized, code, resp)
	require.Equal(t, "M_UNKNOWN_TOKEN", resp["errcode"])
	code, resp = ask(alice.Token, "remote.example", "wss://rtc.remote.example")
	require.Equal(t, http.StatusBadGateway, code, resp)
	require.Len(t, sfu.mints, 1)
}
