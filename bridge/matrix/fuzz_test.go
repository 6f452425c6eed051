package matrix

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseTokenRequest feeds arbitrary bodies to both token endpoints'
// parsers: they must never panic, and whatever they accept must satisfy the
// invariants the handler relies on.
func FuzzParseTokenRequest(f *testing.F) {
	f.Add([]byte(getTokenBody("!roomid:example.com", "slot1234", "example.com", "tok", "@alice:example.com", "DEVICE123", "memberABC")))
	f.Add([]byte(sfuGetBody("!roomid:example.com", "example.com", "tok", "DEVICE123")))
	f.Add([]byte(`{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"x","expires_in":1.5e300},"delay_id":"d","delay_timeout":1}`))
	f.Add([]byte(`{"room_id":"!\u0000","slot_id":"\ud800"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if r, e := parseGetToken(body); e == nil {
			if !validRoomID(r.RoomID) || r.SlotID == "" || r.Member.ID == "" || r.Member.ClaimedDeviceID == "" ||
				userIDServer(r.Member.ClaimedUserID) == "" || r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "" {
				t.Fatalf("accepted invalid /get_token request %+v", r)
			}
			if len(r.OpenIDToken.AccessToken) > maxAccessTokenLen {
				t.Fatal("accepted oversized access token")
			}
			_ = RoomAlias(r.RoomID, r.SlotID)
			_ = Identity(r.Member.ClaimedUserID, r.Member.ClaimedDeviceID, r.Member.ID)
		} else if e.Status != 400 || (e.ErrCode != "M_NOT_JSON" && e.ErrCode != "M_BAD_JSON") {
			t.Fatalf("unexpected error %v", e)
		}
		if r, e := parseSFUGet(body); e == nil {
			if !validRoomID(r.Room) || r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "" {
				t.Fatalf("accepted invalid /sfu/get request %+v", r)
			}
		} else if e.Status != 400 {
			t.Fatalf("unexpected error %v", e)
		}
		_, _ = ParseServerName(string(body))
	})
}

// requireUserOf fails unless userID is "@localpart:server" with a localpart
// of the historical user ID grammar (spec: appendices, "Historical User
// IDs": %x21-39 / %x3B-7E) and at most 255 bytes in all.
func requireUserOf(t *testing.T, userID, server string) {
	t.Helper()
	require.LessOrEqual(t, len(userID), 255)
	require.True(t, strings.HasPrefix(userID, "@") && strings.HasSuffix(userID, ":"+server), "%q is not a user of %s", userID, server)
	local := userID[1 : len(userID)-len(server)-1]
	require.NotEmpty(t, local)
	for _, c := range []byte(local) {
		require.True(t, c >= 0x21 && c <= 0x7e && c != ':', "localpart %q has byte %#x", local, c)
	}
}

// FuzzParseUserInfo feeds arbitrary userinfo answers (spec: Server-Server
// API, "OpenID") from a few server names. A refusal must say whether the
// answer was unusable or the user refused; an acceptance must be a valid
// user ID on the server that answered.
func FuzzParseUserInfo(f *testing.F) {
	f.Add([]byte(`{"sub":"@alice:example.com"}`), "example.com")
	f.Add([]byte(`{"sub":"@alice:example.com"}`), "matrix.org")
	f.Add([]byte(`{"sub":"@a:127.0.0.1:8448"}`), "127.0.0.1:8448")
	f.Add([]byte(`{"sub":"@=40old/user:[::1]:8448","extra":[1,2,{}]}`), "[::1]:8448")
	f.Add([]byte(`{"sub":"@bob:example.com","sub":"@carol:example.com"}`), "example.com")
	f.Add([]byte(`{"SUB":"@alice:example.com"}`), "example.com")
	f.Add([]byte(`{"sub":"@al ice:example.com"}`), "example.com")
	f.Add([]byte(`{"sub":"@\u00e9:example.com"}`), "example.com")
	f.Add([]byte(`{"sub":5}`), "example.com")
	f.Add([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Access Token unknown"}`), "example.com")
	f.Add([]byte(`null`), "example.com")
	f.Add([]byte(``), "example.com")
	f.Fuzz(func(t *testing.T, body []byte, server string) {
		if _, err := ParseServerName(server); err != nil {
			return // UserInfo refuses such a name before asking anyone
		}
		user, err := parseUserInfo(body, server)
		if err != nil {
			require.True(t, errors.Is(err, ErrOpenIDUnavailable) || errors.Is(err, ErrOpenIDRejected), "%v", err)
			require.Empty(t, user)
			return
		}
		require.True(t, json.Valid(body))
		requireUserOf(t, user, server)
	})
}

// FuzzParseWellKnownServer feeds arbitrary /.well-known/matrix/server
// answers: a delegation is only ever to a valid server name, which the
// node then dials.
func FuzzParseWellKnownServer(f *testing.F) {
	f.Add([]byte(`{"m.server":"matrix.example.com:443"}`))
	f.Add([]byte(`{"m.server":"matrix.example.com"}`))
	f.Add([]byte(`{"m.server":"[2001:db8::1]:8448"}`))
	f.Add([]byte(`{"m.server":"1.2.3.4"}`))
	f.Add([]byte(`{"m.server":"https://evil.example/path"}`))
	f.Add([]byte(`{"m.server":"user@host:1"}`))
	f.Add([]byte(`{"m.server":"host:99999"}`))
	f.Add([]byte(`{"m.server":""}`))
	f.Add([]byte(`{"m.homeserver":{"base_url":"https://matrix.example.com"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		sn, err := parseWellKnownServer(body)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidServerName)
			return
		}
		require.NotEmpty(t, sn.Host)
		require.False(t, strings.ContainsAny(sn.Host, "/?#@ \\"), "host %q", sn.Host)
		again, err := ParseServerName(sn.String())
		require.NoError(t, err)
		require.Equal(t, sn, again)
	})
}
