package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// TestSDKH264: a publisher offering H.264 (packetization-mode 1) is
// forwarded as H.264, and a subscriber starts on an IDR picture.
func TestSDKH264(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	pub, err := lksdk.ConnectToRoomWithToken(n.WSURL, n.Token(t, "h264", "pub"), &lksdk.RoomCallback{})
	require.NoError(t, err)
	t.Cleanup(pub.Disconnect)
	var idrWanted sync.Mutex
	wantIDR := true
	track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	}, lksdk.WithRTCPHandler(func(p rtcp.Packet) {
		if _, ok := p.(*rtcp.PictureLossIndication); ok {
			idrWanted.Lock()
			wantIDR = true
			idrWanted.Unlock()
		}
	}))
	require.NoError(t, err)
	_, err = pub.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA})
	require.NoError(t, err)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var seq uint16
		var ts uint32
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			idrWanted.Lock()
			idr := wantIDR
			wantIDR = false
			idrWanted.Unlock()
			// Single NAL unit packets (RFC 6184 section 5.6): IDR slice (type 5) or non-IDR slice (type 1).
			nal := make([]byte, 600)
			nal[0] = 0x41
			if idr {
				nal[0] = 0x65
			}
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: true}, Payload: nal}, nil)
			seq++
			ts += 3000
		}
	}()

	var mu sync.Mutex
	var mime string
	var first []byte
	count := 0
	var readers sync.WaitGroup
	sub, err := lksdk.ConnectToRoomWithToken(n.WSURL, n.Token(t, "h264", "sub"), &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
				mu.Lock()
				mime = tr.Codec().MimeType
				mu.Unlock()
				readTrack(&readers, tr, func(p *rtp.Packet) {
					mu.Lock()
					if count == 0 {
						first = append([]byte(nil), p.Payload...)
					}
					count++
					mu.Unlock()
				})
			},
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { sub.Disconnect(); readers.Wait() })
	eventually(t, 10*time.Second, "30 H.264 packets", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return count >= 30
	})
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, webrtc.MimeTypeH264, mime)
	require.NotEmpty(t, first)
	require.Equal(t, byte(5), first[0]&0x1f, "the subscriber starts on an IDR picture")
}
