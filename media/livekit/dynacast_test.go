package livekit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestSubscribedQualityUpdate: what the core tells a publisher of the
// layers anyone subscribes to reaches the client as livekit-server sends
// it (pkg/rtc/participant.go onSubscribedMaxQualityChange): the track
// sid, subscribed_codecs with the codec lowercase without "video/" (what
// livekit-client compares with its own codec) and the three qualities in
// order, and the same qualities in subscribed_qualities for older clients.
func TestSubscribedQualityUpdate(t *testing.T) {
	sessions := make(chan *session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		sessions <- newSession(conn, zerolog.Nop())
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	s := <-sessions
	t.Cleanup(s.wait)                           // second: the writer stops
	t.Cleanup(func() { _ = client.CloseNow() }) // first: no close handshake to wait for

	qualities := func(low, medium, high bool) []*livekit.SubscribedQuality {
		return []*livekit.SubscribedQuality{
			{Quality: livekit.VideoQuality_LOW, Enabled: low},
			{Quality: livekit.VideoQuality_MEDIUM, Enabled: medium},
			{Quality: livekit.VideoQuality_HIGH, Enabled: high},
		}
	}
	for _, tc := range []struct {
		mime    string
		enabled [3]bool
		codec   string
		want    []*livekit.SubscribedQuality
	}{
		{"video/VP8", [3]bool{true, false, false}, "vp8", qualities(true, false, false)},
		{"video/VP8", [3]bool{true, true, true}, "vp8", qualities(true, true, true)},
		{"video/H264", [3]bool{true, true, false}, "h264", qualities(true, true, false)},
		{"video/vp9", [3]bool{}, "vp9", qualities(false, false, false)},
		{"video/AV1", [3]bool{true, false, false}, "av1", qualities(true, false, false)},
	} {
		s.SendSubscribedQualities("TR_Vcam", tc.mime, tc.enabled)
		_, data, err := client.Read(ctx)
		require.NoError(t, err)
		var got livekit.SignalResponse
		require.NoError(t, proto.Unmarshal(data, &got))
		want := &livekit.SignalResponse{Message: &livekit.SignalResponse_SubscribedQualityUpdate{
			SubscribedQualityUpdate: &livekit.SubscribedQualityUpdate{
				TrackSid:            "TR_Vcam",
				SubscribedQualities: tc.want,
				SubscribedCodecs:    []*livekit.SubscribedCodec{{Codec: tc.codec, Qualities: tc.want}},
			},
		}}
		require.True(t, proto.Equal(want, &got), "%s %v:\nwant %v\n got %v", tc.mime, tc.enabled, want, &got)
	}
}
