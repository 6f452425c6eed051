package matrix

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseServerName(t *testing.T) {
	good := map[string]ServerName{
		"example.com":        {Host: "example.com"},
		"Matrix.Example.com": {Host: "matrix.example.com"},
		"example.com:8448":   {Host: "example.com", Port: 8448},
		"127.0.0.1:8448":     {Host: "127.0.0.1", Port: 8448, IP: true},
		"1.2.3.4":            {Host: "1.2.3.4", IP: true},
		"[::1]:8448":         {Host: "::1", Port: 8448, IP: true},
		"[1234:5678::abcd]":  {Host: "1234:5678::abcd", IP: true},
		"localhost:1":        {Host: "localhost", Port: 1},
	}
	for in, want := range good {
		got, err := ParseServerName(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	bad := []string{
		"", ":8448", "example.com:", "example.com:0", "example.com:65536", "example.com:+1",
		"example.com/path", "user@example.com", "https://example.com", "example.com?x=1",
		"example.com#f", "exa mple.com", "-example.com", "example..com", "::1", "[::1",
		"[::1]x", "[1.2.3.4]", "example.com:8448:1", "[fe80::1%eth0]", "ex_ample.com",
		"\u00e9xample.com", "example.com:0x10", "1.2.3.4.5:80/",
	}
	for _, in := range bad {
		_, err := ParseServerName(in)
		require.True(t, errors.Is(err, ErrInvalidServerName), "%q: %v", in, err)
	}
}

func TestServerNameString(t *testing.T) {
	for _, s := range []string{"example.com", "example.com:8448", "[::1]:8448", "1.2.3.4"} {
		sn, err := ParseServerName(s)
		require.NoError(t, err)
		require.Equal(t, s, sn.String())
	}
}

func TestUserIDServer(t *testing.T) {
	require.Equal(t, "example.com", userIDServer("@alice:example.com"))
	require.Equal(t, "127.0.0.1:8448", userIDServer("@a:127.0.0.1:8448"))
	require.Equal(t, "", userIDServer("alice:example.com"))
	require.Equal(t, "", userIDServer("@:example.com"))
	require.Equal(t, "", userIDServer("@alice:"))
	require.Equal(t, "", userIDServer("@alice"))
}

func TestValidUserID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"@alice:example.com", true},
		{"@a:127.0.0.1:8448", true},
		{"@=40old/User!:[::1]:8448", true}, // historical localpart characters
		{"@al ice:example.com", false},
		{"@al\x00ice:example.com", false},
		{"@\u00e9:example.com", false},
		{"@alice\n:example.com", false},
		{"@alice:example.com/path", false},
		{"@alice:", false},
		{"@:example.com", false},
		{"alice:example.com", false},
		{"@" + strings.Repeat("a", 255) + ":example.com", false},
	} {
		require.Equal(t, tc.want, validUserID(tc.id), "%q", tc.id)
	}
}
