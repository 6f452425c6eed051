package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API's HMAC
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCredentials(t *testing.T) {
	c, err := NewCredentials(time.Hour)
	require.NoError(t, err)
	now := time.Unix(1_800_000_000, 0)
	user, pass := c.Mint("alice", now)
	require.Equal(t, strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+":alice", user)

	// The TURN REST API's password: base64(HMAC-SHA1(secret, username)).
	mac := hmac.New(sha1.New, c.secret)
	mac.Write([]byte(user))
	require.Equal(t, base64.StdEncoding.EncodeToString(mac.Sum(nil)), pass)

	cases := []struct {
		name         string
		user, pass   string
		at           time.Time
		allowExpired bool
		want         error
	}{
		{"fresh", user, pass, now, false, nil},
		{"last second", user, pass, now.Add(time.Hour), false, nil},
		{"expired", user, pass, now.Add(time.Hour + time.Second), false, ErrExpired},
		{"expired, refreshing", user, pass, now.Add(48 * time.Hour), true, nil},
		{"wrong password", user, base64.StdEncoding.EncodeToString(make([]byte, 20)), now, false, ErrBadPassword},
		{"other user's password", strings.Replace(user, "alice", "bob", 1), pass, now, false, ErrBadPassword},
		{"later expiry, same password", strconv.FormatInt(now.Add(90*24*time.Hour).Unix(), 10) + ":alice", pass, now, false, ErrBadPassword},
		{"no expiry", "alice", pass, now, false, ErrMalformedUsername},
		{"no identity", "1800003600:", pass, now, false, ErrMalformedUsername},
		{"expiry not a number", "soon:alice", pass, now, false, ErrMalformedUsername},
		{"negative expiry", "-5:alice", pass, now, false, ErrMalformedUsername},
		{"huge expiry", "99999999999999999999:alice", pass, now, false, ErrMalformedUsername},
		{"too long", "1800003600:" + strings.Repeat("a", maxUsername), pass, now, false, ErrMalformedUsername},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.allowExpired {
				var got string
				got, err = c.Check(tc.user, tc.at, true)
				if err == nil && got != tc.pass {
					err = ErrBadPassword
				}
			} else {
				err = c.Verify(tc.user, tc.pass, tc.at)
			}
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}

	// Another node's (or an earlier run's) secret mints passwords this one refuses.
	other, err := NewCredentials(time.Hour)
	require.NoError(t, err)
	u2, p2 := other.Mint("alice", now)
	require.Equal(t, user, u2)
	require.ErrorIs(t, c.Verify(u2, p2, now), ErrBadPassword)
}

func TestCredentialsIdentity(t *testing.T) {
	c, err := NewCredentials(time.Minute)
	require.NoError(t, err)
	now := time.Now()
	for _, id := range []string{"@alice:agency.example:DEVICE", "guest-Zq3v8R1x", "x"} {
		u, p := c.Mint(id, now)
		require.True(t, strings.HasSuffix(u, ":"+id), u)
		require.NoError(t, c.Verify(u, p, now))
	}
	// Identities a client could mangle (spaces, non-ASCII) or too long
	// for a STUN username become a digest; still valid.
	for _, id := range []string{"Joan Doe", "Jérôme", strings.Repeat("a", maxIdentity+1), ""} {
		u, p := c.Mint(id, now)
		_, rest, _ := strings.Cut(u, ":")
		require.True(t, strings.HasPrefix(rest, "sha256-"), u)
		require.LessOrEqual(t, len(u), 64)
		require.NoError(t, c.Verify(u, p, now))
	}
	_, err = NewCredentials(0)
	require.ErrorIs(t, err, ErrConfig)
}

// FuzzCheck: any username a client sends is refused or accepted without a
// panic, and an accepted one has a password only this secret gives.
func FuzzCheck(f *testing.F) {
	c, err := NewCredentials(time.Hour)
	require.NoError(f, err)
	now := time.Unix(1_800_000_000, 0)
	u, _ := c.Mint("alice", now)
	for _, seed := range []string{u, "", ":", "1:", ":x", "99999999999:x", "-1:x", "1800000000:" + strings.Repeat("é", 200)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, username string) {
		pass, err := c.Check(username, now, false)
		if err != nil && !errors.Is(err, ErrMalformedUsername) && !errors.Is(err, ErrExpired) {
			t.Fatalf("unexpected error %v", err)
		}
		if err == nil && (len(username) > maxUsername || pass == "") {
			t.Fatalf("accepted %q", username)
		}
	})
}
