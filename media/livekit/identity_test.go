package livekit

import (
	"cmp"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/stretchr/testify/require"
)

// TestTokenIdentityAndName: a token's identity and name are held to what
// the join page accepts (printable, bounded) before anyone joins, with a
// 400 naming the problem; the identities the Matrix token service mints
// pass.
func TestTokenIdentityAndName(t *testing.T) {
	srv, _ := newTestServer(t, true)
	tests := []struct {
		name     string
		identity string
		partName string
		room     string // "lobby" when empty
		status   int
		want     error // nil: accepted
	}{
		{"plain", "alice", "Alice", "", http.StatusOK, nil},
		{"matrix hash identity", "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU", "@alice:example.com", "", http.StatusOK, nil},
		{"matrix device identity", "@alice:example.com:DEVICE123", "", "", http.StatusOK, nil},
		{"guest identity", "guest-abcdefghij", "Zoë 🎉", "", http.StatusOK, nil},
		{"identity at the limit", strings.Repeat("a", MaxIdentityLength), "", "", http.StatusOK, nil},
		{"identity too long", strings.Repeat("a", MaxIdentityLength+1), "", "", http.StatusBadRequest, ErrInvalidIdentity},
		{"identity too long in bytes", strings.Repeat("é", MaxIdentityLength/2+1), "", "", http.StatusBadRequest, ErrInvalidIdentity},
		{"identity with a newline", "alice\nbob", "", "", http.StatusBadRequest, ErrInvalidIdentity},
		{"identity with NUL", "alice\x00", "", "", http.StatusBadRequest, ErrInvalidIdentity},
		{"identity with a bidi override", "alice\u202egnp.exe", "", "", http.StatusBadRequest, ErrInvalidIdentity},
		{"name at the limit", "alice", strings.Repeat("n", MaxNameLength), "", http.StatusOK, nil},
		{"name too long", "alice", strings.Repeat("n", MaxNameLength+1), "", http.StatusBadRequest, ErrInvalidName},
		{"name with a control character", "alice", "Alice\x1b[31m", "", http.StatusBadRequest, ErrInvalidName},
		{"name with a zero-width joiner", "alice", "Al\u200dice", "", http.StatusBadRequest, ErrInvalidName},
		{"matrix room name", "alice", "", "Tn70j06guxxN+dYGsdNhmwlO98IrVWwuPuPWvlhJ9b4", http.StatusOK, nil},
		{"room name at the limit", "alice", "", strings.Repeat("r", MaxRoomNameLength), http.StatusOK, nil},
		{"room name too long", "alice", "", strings.Repeat("r", MaxRoomNameLength+1), http.StatusBadRequest, ErrInvalidRoom},
		{"room name with a newline", "alice", "", "lobby\nfake log line", http.StatusBadRequest, ErrInvalidRoom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := mint(t, tc.identity, &auth.VideoGrant{RoomJoin: true, Room: cmp.Or(tc.room, "lobby")}, func(at *auth.AccessToken) {
				at.SetName(tc.partName)
			})
			g, err := Verify(testKeys(), tok)
			if tc.want == nil {
				require.NoError(t, err)
				require.Equal(t, tc.identity, g.Identity, "identities are kept byte-exact")
			} else {
				require.ErrorIs(t, err, tc.want)
			}
			for _, path := range []string{"/rtc/validate", "/rtc"} {
				resp, err := srv.Client().Get(srv.URL + path + "?access_token=" + tok)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				if path == "/rtc" && tc.want == nil {
					// A plain GET is no websocket upgrade: past the checks.
					require.Equal(t, http.StatusUpgradeRequired, resp.StatusCode, "%s: %s", path, body)
					require.NotContains(t, string(body), "invalid participant")
					continue
				}
				require.Equal(t, tc.status, resp.StatusCode, "%s: %s", path, body)
				if tc.want != nil {
					require.Contains(t, string(body), tc.want.Error())
				}
			}
		})
	}
}

// TestMintRefusesWhatVerifyRefuses: a token that would be refused at join
// is not minted, so `entente token` fails where the mistake is made.
func TestMintRefusesWhatVerifyRefuses(t *testing.T) {
	m := Minter{Key: "k", Secret: strings.Repeat("s", 32), TTL: time.Minute}
	tests := []struct {
		name, room, identity, partName string
		want                           error
	}{
		{"fine", "lobby", "alice", "Alice", nil},
		{"no identity", "lobby", "", "", ErrNoIdentity},
		{"identity with a newline", "lobby", "alice\nbob", "", ErrInvalidIdentity},
		{"name too long", "lobby", "alice", strings.Repeat("n", MaxNameLength+1), ErrInvalidName},
		{"room with a control character", "lob\x1bby", "alice", "", ErrInvalidRoom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := m.Mint(tc.room, tc.identity, MintOptions{Name: tc.partName, CanSubscribe: true})
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.Empty(t, tok)
				return
			}
			require.NoError(t, err)
			_, err = Verify(Keys{"k": m.Secret}, tok)
			require.NoError(t, err)
		})
	}
}
