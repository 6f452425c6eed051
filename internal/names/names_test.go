package names

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"Ann", true},
		{"Zoë Ä 李", true},
		{"", false},
		{"a\x00b", false},
		{"a\u202eb", false}, // right-to-left override
		{"a\u200db", false}, // zero-width joiner
		{"\xff", false},
		{strings.Repeat("é", 64), true},
		{strings.Repeat("é", 65), false},
	} {
		require.Equal(t, tc.ok, Printable(tc.s, 64), "%q", tc.s)
	}
}

func TestGuestIdentity(t *testing.T) {
	a, b := GuestIdentity(), GuestIdentity()
	require.True(t, strings.HasPrefix(a, GuestPrefix))
	require.Len(t, a, len(GuestPrefix)+10)
	require.Equal(t, strings.ToLower(a), a)
	require.NotEqual(t, a, b)
}
