package matrix

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestNewRegistration(t *testing.T) {
	p := RegistrationParams{ID: "entente", URL: "http://127.0.0.1:29335", ServerName: "127.0.0.1:8448",
		BotLocalpart: "entente", GhostPrefix: "entente_"}
	reg, err := NewRegistration(p)
	require.NoError(t, err)
	other, err := NewRegistration(p)
	require.NoError(t, err)
	require.Len(t, reg.AppToken, 64)
	require.Len(t, reg.ServerToken, 64)
	require.NotEqual(t, reg.AppToken, reg.ServerToken)
	require.NotEqual(t, reg.AppToken, other.AppToken, "tokens are random")

	y, err := reg.YAML()
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(y), &doc))
	require.Equal(t, "entente", doc["id"])
	require.Equal(t, "http://127.0.0.1:29335", doc["url"])
	require.Equal(t, "entente", doc["sender_localpart"])
	require.Equal(t, false, doc["rate_limited"])
	require.Equal(t, reg.AppToken, doc["as_token"])
	require.Equal(t, reg.ServerToken, doc["hs_token"])

	users := reg.Namespaces.UserIDs
	require.Len(t, users, 2)
	match := func(s string) bool {
		for _, ns := range users {
			require.True(t, ns.Exclusive)
			if regexp.MustCompile(ns.Regex).MatchString(s) {
				return true
			}
		}
		return false
	}
	require.True(t, match("@entente:127.0.0.1:8448"))
	require.True(t, match("@entente_xmpp_bob:127.0.0.1:8448"))
	require.False(t, match("@entente:127.0.0.1:84489"))
	require.False(t, match("@entente_x:127x0x0x1:8448"), "dots are literal")
	require.False(t, match("@alice:127.0.0.1:8448"))
	require.False(t, match("@entente_x:other.example"))
	require.True(t, regexp.MustCompile(reg.Namespaces.RoomAliases[0].Regex).MatchString("#entente_meet:127.0.0.1:8448"))
	require.Empty(t, reg.Namespaces.RoomIDs, "without AllRooms: only the bot's rooms")

	// AllRooms: every room ID, not exclusively (the homeserver then sends
	// the node every room's events; nobody loses a room).
	p.AllRooms = true
	all, err := NewRegistration(p)
	require.NoError(t, err)
	require.Len(t, all.Namespaces.RoomIDs, 1)
	require.False(t, all.Namespaces.RoomIDs[0].Exclusive)
	for _, id := range []string{"!abc:127.0.0.1:8448", "!x:other.example", "!v12opaqueid"} {
		require.True(t, regexp.MustCompile(all.Namespaces.RoomIDs[0].Regex).MatchString(id), id)
	}
	y, err = all.YAML()
	require.NoError(t, err)
	require.Contains(t, y, "rooms:")

	for _, bad := range []RegistrationParams{
		{ID: "", URL: p.URL, ServerName: p.ServerName, BotLocalpart: "b", GhostPrefix: "g"},
		{ID: "x", URL: "ftp://x", ServerName: p.ServerName, BotLocalpart: "b", GhostPrefix: "g"},
		{ID: "x", URL: p.URL, ServerName: "a/b", BotLocalpart: "b", GhostPrefix: "g"},
	} {
		_, err := NewRegistration(bad)
		require.ErrorIs(t, err, ErrInvalidConfig)
	}
}
