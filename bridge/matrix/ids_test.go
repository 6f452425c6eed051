package matrix

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Test vectors from MSC4195's appendix, as used by element-hq/lk-jwt-service
// helper_test.go (TestLiveKitRoomAliasFor_TestVector,
// TestLiveKitIdentityFor_TestVector) and get_token_test.go.
func TestRoomAliasVector(t *testing.T) {
	require.Equal(t, "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc", RoomAlias("!roomid:example.com", "slot1234"))
}

func TestIdentityVector(t *testing.T) {
	require.Equal(t, "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU", Identity("@alice:example.com", "DEVICE123", "memberABC"))
}

func TestLegacyIdentity(t *testing.T) {
	// lk-jwt-service sfu_get_test.go: identity is matrixID + ":" + device_id.
	require.Equal(t, "@alice:example.com:DEVICE123", LegacyIdentity("@alice:example.com", "DEVICE123"))
}

// For inputs without HTML-special characters our encoding is byte-identical
// to Go's encoding/json, which is what lk-jwt-service hashes.
func TestHashMatchesGoJSONForOrdinaryInput(t *testing.T) {
	cases := [][]string{
		{"!room:example.com", LegacySlotID},
		{"@user:server.example:8448", "ABCDEF", "m.call_@user:server.example:8448_ABCDEF"},
		{"\u00e9t\u00e9", "tab\there", "quote\"back\\slash", "\x01\x1f\b\f\n\r"},
		{"", ""},
	}
	for _, c := range cases {
		want, err := json.Marshal(c)
		require.NoError(t, err)
		require.Equal(t, string(want), string(jsStringArray(c)))
		sum := sha256.Sum256(want)
		require.Equal(t, base64.RawStdEncoding.EncodeToString(sum[:]), hashStrings(c...))
	}
}

// JSON.stringify(["<a&b>", "\u2028"]) === '["<a&b>","\u2028"]' (literal
// characters); Go's encoding/json would escape all four.
func TestJSStringifySemantics(t *testing.T) {
	require.Equal(t, "[\"<a&b>\",\"\u2028\"]", string(jsStringArray([]string{"<a&b>", "\u2028"})))
	require.Equal(t, `["\u0000\u001f"]`, string(jsStringArray([]string{"\x00\x1f"})))
	require.Equal(t, "[\"\ufffd\"]", string(jsStringArray([]string{"\xff"})))
}

func TestClaimSafe(t *testing.T) {
	require.True(t, claimSafe("@alice:example.com:ABCDEF"))
	require.True(t, claimSafe(Identity("@a:b", "c", "d")))
	for _, s := range []string{"a?b", "a~", ">", "\u00e9", "\x7f", "\n"} {
		require.False(t, claimSafe(s), s)
	}
	// Every ASCII byte that claimSafe accepts encodes without '-'/'_' in any
	// position of a base64url group.
	var ok []byte
	for c := byte(0x20); c < 0x7f; c++ {
		if claimSafe(string(c)) {
			ok = append(ok, c)
		}
	}
	for _, a := range ok {
		for _, b := range ok {
			for _, c := range ok {
				enc := base64.RawURLEncoding.EncodeToString([]byte{a, b, c})
				require.False(t, strings.ContainsAny(enc, "-_"), "%q", []byte{a, b, c})
			}
		}
	}
}

func TestIsCallRoomName(t *testing.T) {
	require.True(t, IsCallRoomName(RoomAlias("!abc:example.org", "m.call#ROOM")))
	require.True(t, IsCallRoomName(MeetRoom("!abc:example.org", "standup")))
	for _, name := range []string{"", "demo", "standup-meeting", RoomAlias("!a:b", "m.call#ROOM") + "x", "$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$"} {
		require.False(t, IsCallRoomName(name), name)
	}
}
