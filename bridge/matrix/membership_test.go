package matrix

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClientMembership(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "Bearer as-token", r.Header.Get("Authorization"))
		require.Equal(t, "@bot:example.com", r.URL.Query().Get("user_id"))
		switch r.URL.EscapedPath() {
		case "/prefix/_matrix/client/v3/rooms/%21room:example.com/joined_members":
			_, _ = w.Write([]byte(`{"joined":{"@alice:example.com":{"display_name":"Alice"},"@bob:remote.org":{}}}`))
		case "/prefix/_matrix/client/v3/rooms/%21odd%2Fid:example.com/joined_members":
			_, _ = w.Write([]byte(`{"joined":{}}`))
		case "/prefix/_matrix/client/v3/rooms/%21private:example.com/joined_members":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"not in room"}`))
		default:
			t.Errorf("unexpected path %s", r.URL.EscapedPath())
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	c, err := NewClientMembership(srv.URL+"/prefix/", "as-token", "@bot:example.com", nil)
	require.NoError(t, err)
	ctx := context.Background()

	ok, err := c.IsJoined(ctx, "!room:example.com", "@bob:remote.org")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = c.IsJoined(ctx, "!room:example.com", "@carol:example.com")
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = c.IsJoined(ctx, "!odd/id:example.com", "@alice:example.com")
	require.NoError(t, err)
	require.False(t, ok)
	_, err = c.IsJoined(ctx, "!private:example.com", "@alice:example.com")
	require.ErrorIs(t, err, ErrMembershipUnavailable)
	require.ErrorIs(t, err, ErrBotNotInRoom)

	_, err = NewClientMembership("ftp://x", "t", "@bot:x", nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
}

func TestClientMembershipJoinRoom(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "Bearer as-token", r.Header.Get("Authorization"))
		require.Equal(t, "@bot:example.com", r.URL.Query().Get("user_id"))
		switch r.URL.EscapedPath() {
		case "/_matrix/client/v3/join/%21public:example.com":
			require.Equal(t, []string{"remote.org", "example.com"}, r.URL.Query()["server_name"])
			_, _ = w.Write([]byte(`{"room_id":"!public:example.com"}`))
		case "/_matrix/client/v3/join/%21private%2Fx:example.com":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"You are not invited to this room."}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	c, err := NewClientMembership(srv.URL, "as-token", "@bot:example.com", nil)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, c.JoinRoom(ctx, "!public:example.com", []string{"remote.org", "", "example.com", "remote.org"}))
	err = c.JoinRoom(ctx, "!private/x:example.com", nil)
	require.ErrorIs(t, err, ErrBotCannotJoin)
	err = c.JoinRoom(ctx, "!down:example.com", nil)
	require.ErrorIs(t, err, ErrMembershipUnavailable)
	require.NotErrorIs(t, err, ErrBotCannotJoin)
}

func TestRoomIDServer(t *testing.T) {
	for in, want := range map[string]string{
		"!abc:example.com": "example.com", "!abc:127.0.0.1:8448": "127.0.0.1:8448",
		"!v12roomhashwithoutserver": "", "!abc:": "", "@u:example.com": "", "": "", "!a:bad host": "",
	} {
		require.Equal(t, want, roomIDServer(in), in)
	}
}
