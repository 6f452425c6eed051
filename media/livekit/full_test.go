package livekit

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
)

// A join beyond room.max_participants is refused before the upgrade with
// 403 "room is full", the answer livekit-client shows to its user; the
// same identity joining again is not refused.
func TestFullRoomRefusedClearly(t *testing.T) {
	sfu, eng := testNode(t, media.Config{
		AutoCreate: true, MaxParticipants: 1,
		EmptyTimeout: time.Minute, DepartureTimeout: time.Minute,
	})
	mux := http.NewServeMux()
	NewServer(sfu, eng, testKeys(), zerolog.Nop()).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); sfu.Close() })
	token := func(identity string) string {
		return mint(t, identity, &auth.VideoGrant{RoomJoin: true, Room: "r"}, nil)
	}
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/rtc?access_token="

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL+token("ann"), nil)
	require.NoError(t, err)
	defer conn.CloseNow()
	_, data, err := conn.Read(ctx)
	require.NoError(t, err)
	var m livekit.SignalResponse
	require.NoError(t, proto.Unmarshal(data, &m))
	require.NotNil(t, m.GetJoin(), "ann is in")

	for _, tc := range []struct {
		identity string
		status   int
		body     string
	}{
		{"bob", http.StatusForbidden, media.ErrRoomFull.Error()},
		{"ann", http.StatusOK, "success"},
	} {
		resp, err := http.Get(srv.URL + "/rtc/validate?access_token=" + token(tc.identity))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, tc.identity)
		require.Equal(t, tc.body, strings.TrimSpace(string(b)), tc.identity)
	}
	_, resp, err := websocket.Dial(ctx, wsURL+token("bob"), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "refused before the upgrade")
}
