package livekit

import (
	"context"
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

// TestRefreshTokens: after the join answer the server sends a fresh token
// with the same identity, room and grants, valid for the refresh TTL, and
// sends another one each refresh period. A client that must rejoin after
// its first token expired uses it (LIVEKIT.md section 6).
func TestRefreshTokens(t *testing.T) {
	sfu, eng := testNode(t, media.Config{
		AutoCreate:   true,
		EmptyTimeout: time.Minute, DepartureTimeout: time.Minute,
	})
	mux := http.NewServeMux()
	NewServer(sfu, eng, testKeys(), zerolog.Nop(), WithTokenRefresh(200*time.Millisecond, 2*time.Minute)).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); sfu.Close() })

	f := false
	tok := mint(t, "ann", &auth.VideoGrant{RoomJoin: true, Room: "r", CanPublishData: &f}, func(at *auth.AccessToken) {
		at.SetName("Ann").SetMetadata("m").SetAttributes(map[string]string{"team": "blue"})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/rtc?access_token="+tok, nil)
	require.NoError(t, err)
	defer conn.CloseNow()

	var kinds []string
	var refreshes []string
	for len(refreshes) < 2 {
		_, data, err := conn.Read(ctx)
		require.NoError(t, err, "frames so far: %v", kinds)
		var m livekit.SignalResponse
		require.NoError(t, proto.Unmarshal(data, &m))
		switch x := m.Message.(type) {
		case *livekit.SignalResponse_Join:
			kinds = append(kinds, "join")
		case *livekit.SignalResponse_RefreshToken:
			kinds = append(kinds, "refresh")
			refreshes = append(refreshes, x.RefreshToken)
		default:
			kinds = append(kinds, "other")
		}
	}
	require.Equal(t, "join", kinds[0], "the join answer comes first")
	for _, r := range refreshes {
		g, err := Verify(testKeys(), r)
		require.NoError(t, err)
		require.Equal(t, "ann", g.Identity)
		require.Equal(t, "Ann", g.Name)
		require.Equal(t, "m", g.Metadata)
		require.Equal(t, "blue", g.Attributes["team"])
		require.Equal(t, "r", g.Room)
		require.Equal(t, testKey, g.APIKey)
		require.True(t, g.CanPublish && g.CanSubscribe)
		require.False(t, g.CanPublishData, "grants are kept, not widened")
		require.WithinDuration(t, time.Now().Add(2*time.Minute), g.ExpiresAt, 5*time.Second)
	}
}
