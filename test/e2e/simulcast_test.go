package e2e

import (
	"context"
	"github.com/pion/rtp"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/rtpgen"
)

// Each simulcast layer's frames have sizes no other layer uses, so a
// subscriber can tell which layer it is receiving from the payload length
// (4 bytes of VP8 descriptor + frame). Keyframes come only on request.
var simLayers = []struct {
	rid             string
	quality         livekit.VideoQuality
	w, h            uint32
	delta, keyframe int
}{
	{"q", livekit.VideoQuality_LOW, 320, 180, 200, 400},
	{"h", livekit.VideoQuality_MEDIUM, 640, 360, 500, 700},
	{"f", livekit.VideoQuality_HIGH, 1280, 720, 900, 1000},
}

func layerOf(payloadLen int) string {
	for _, l := range simLayers {
		if payloadLen == l.delta+4 || payloadLen == l.keyframe+4 {
			return l.rid
		}
	}
	return "?"
}

// TestSDKSimulcastLayers: a Go SDK publisher sends three VP8 simulcast
// layers; a subscriber gets the layer it asks for, switched on a keyframe,
// with sequence numbers and timestamps continuous across switches.
func TestSDKSimulcastLayers(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })

	pub, err := lksdk.ConnectToRoomWithToken(n.WSURL, n.Token(t, "simulcast", "pub"), &lksdk.RoomCallback{})
	require.NoError(t, err)
	t.Cleanup(pub.Disconnect)

	publishSimulcast(t, ctx, pub, &gens)

	type rx struct {
		layer    string
		key      bool
		seq      uint16
		ts       uint32
		received time.Time
	}
	var mu sync.Mutex
	var got []rx
	var remote *lksdk.RemoteTrackPublication
	var reader sync.WaitGroup
	sub, err := lksdk.ConnectToRoomWithToken(n.WSURL, n.Token(t, "simulcast", "sub"), &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(tr *webrtc.TrackRemote, p *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
				mu.Lock()
				remote = p
				mu.Unlock()
				readTrack(&reader, tr, func(pkt *rtp.Packet) {
					mu.Lock()
					got = append(got, rx{layerOf(len(pkt.Payload)), rtpgen.IsVP8Keyframe(pkt.Payload), pkt.SequenceNumber, pkt.Timestamp, time.Now()})
					mu.Unlock()
				})
			},
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { sub.Disconnect(); reader.Wait() })

	// lastLayer reports the layer of the newest packet and how many packets arrived.
	lastLayer := func() (string, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return "", 0
		}
		return got[len(got)-1].layer, len(got)
	}
	waitLayer := func(want string) {
		t.Helper()
		start := time.Now()
		eventually(t, 10*time.Second, "receiving layer "+want, func() bool {
			l, n := lastLayer()
			return l == want && n > 0
		})
		t.Logf("switched to layer %s in %v", want, time.Since(start).Round(time.Millisecond))
		// Stay a while to collect packets of this layer.
		time.Sleep(500 * time.Millisecond)
	}

	waitLayer("f") // nothing asked: the highest layer
	mu.Lock()
	p := remote
	mu.Unlock()
	require.NoError(t, p.SetVideoQuality(livekit.VideoQuality_LOW))
	waitLayer("q")
	p.SetVideoDimensions(640, 360)
	waitLayer("h")
	require.NoError(t, p.SetVideoQuality(livekit.VideoQuality_HIGH))
	p.SetVideoDimensions(1280, 720)
	waitLayer("f")

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, got)
	// In sequence order: at a layer switch the old layer's last packet and
	// the new layer's first leave from two reader goroutines' send batches
	// (media/direct.go) and may arrive swapped, as UDP allows and a jitter
	// buffer undoes. Gaps and repeats still fail below.
	first := got[0].seq
	sort.SliceStable(got, func(i, j int) bool { return got[i].seq-first < got[j].seq-first })
	require.True(t, got[0].key, "the first packet starts a keyframe")
	var runs []string
	for i := 1; i < len(got); i++ {
		prev, cur := got[i-1], got[i]
		require.Equal(t, prev.seq+1, cur.seq, "packet %d: sequence numbers continue across layers (%s -> %s)", i, prev.layer, cur.layer)
		require.GreaterOrEqual(t, int32(cur.ts-prev.ts), int32(0), "packet %d: timestamps never go back", i)
		if i == 1 {
			runs = append(runs, prev.layer)
		}
		if cur.layer != prev.layer {
			runs = append(runs, cur.layer)
			require.True(t, cur.key, "packet %d: a switch from %s to %s starts on a keyframe", i, prev.layer, cur.layer)
			require.Greater(t, cur.ts, prev.ts, "packet %d: a new layer's frame gets a later timestamp", i)
		}
	}
	// The subscriber may start on whichever layer arrives first and move up
	// to f; after that it follows what it asked for.
	require.GreaterOrEqual(t, len(runs), 4, "layers received: %v", runs)
	require.Equal(t, []string{"f", "q", "h", "f"}, runs[len(runs)-4:], "layers received: %v", runs)
}

// publishSimulcast publishes a three-layer VP8 camera (simLayers) from
// room's local participant, fed until ctx ends; keyframes on PLI only.
func publishSimulcast(t *testing.T, ctx context.Context, pub *lksdk.Room, gens *sync.WaitGroup) {
	t.Helper()
	var tracks []*lksdk.LocalTrack
	var vp8s []*rtpgen.VP8
	for _, l := range simLayers {
		g := &rtpgen.VP8{FPS: 30, FrameBytes: l.delta, KeyframeBytes: l.keyframe, MTU: 1100}
		tr, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
			lksdk.WithSimulcast("cam", &livekit.VideoLayer{Quality: l.quality, Width: l.w, Height: l.h}),
			lksdk.WithRTCPHandler(func(p rtcp.Packet) {
				if _, ok := p.(*rtcp.PictureLossIndication); ok {
					g.RequestKeyframe()
				}
			}))
		require.NoError(t, err)
		tracks, vp8s = append(tracks, tr), append(vp8s, g)
	}
	_, err := pub.LocalParticipant.PublishSimulcastTrack(tracks, &lksdk.TrackPublicationOptions{
		Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 1280, VideoHeight: 720,
	})
	require.NoError(t, err)
	for i := range tracks {
		tr, g := tracks[i], vp8s[i]
		gens.Add(1)
		go func() {
			defer gens.Done()
			tick := time.NewTicker(g.Interval())
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-tick.C:
					for _, p := range g.NextFrame(now) {
						_ = tr.WriteRTP(p, nil)
					}
				}
			}
		}()
	}

}
