package e2e

import (
	"context"
	"fmt"
	"github.com/pion/rtp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/rtpgen"
)

// sdkClient is one LiveKit Go SDK participant that publishes generated
// audio and video and counts what it receives from each other participant.
type sdkClient struct {
	identity string
	room     *lksdk.Room
	vp8      *rtpgen.VP8
	plis     atomic.Int64
	audioPub *lksdk.LocalTrackPublication

	mu       sync.Mutex
	got      map[string]int // "identity/audio|video" -> packets
	bytes    map[string]int // "identity/audio|video" -> RTP bytes (header and payload)
	firstKey map[string]bool
	firstAt  map[string]time.Time
	subAt    map[string]time.Time
	muted    map[string]bool
	gone     map[string]bool
	data     []string
	started  time.Time       // when the client began connecting
	speakers map[string]bool // identities ever reported speaking
	// quality is the last connection quality the node reported of each
	// identity (the client's own included), and qualities all it reported.
	quality   map[string]livekit.ConnectionQuality
	qualities []string // "identity:QUALITY" in order
	readers   sync.WaitGroup
}

func key(identity string, kind webrtc.RTPCodecType) string { return identity + "/" + kind.String() }

func connectClient(t *testing.T, ctx context.Context, n *Node, room, identity string, opts ...TokenOption) *sdkClient {
	t.Helper()
	return connectClientWithToken(t, ctx, n.WSURL, n.Token(t, room, identity, opts...), identity)
}

// connectClientWithToken connects to the SFU at wsURL with a token from
// elsewhere (a node's token service).
func connectClientWithToken(t *testing.T, ctx context.Context, wsURL, jwt, identity string) *sdkClient {
	t.Helper()
	c := &sdkClient{
		identity: identity, got: map[string]int{}, bytes: map[string]int{}, firstKey: map[string]bool{}, firstAt: map[string]time.Time{},
		subAt: map[string]time.Time{}, muted: map[string]bool{}, gone: map[string]bool{}, speakers: map[string]bool{},
		quality: map[string]livekit.ConnectionQuality{},
	}
	cb := &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
				k := key(rp.Identity(), tr.Kind())
				c.mu.Lock()
				c.subAt[k] = time.Now()
				c.mu.Unlock()
				readTrack(&c.readers, tr, func(p *rtp.Packet) { c.count1(tr, k, p) })
			},
			OnTrackMuted: func(pub lksdk.TrackPublication, p lksdk.Participant) {
				c.mu.Lock()
				c.muted[p.Identity()+"/"+pub.Kind().String()] = true
				c.mu.Unlock()
			},
			OnTrackUnmuted: func(pub lksdk.TrackPublication, p lksdk.Participant) {
				c.mu.Lock()
				c.muted[p.Identity()+"/"+pub.Kind().String()] = false
				c.mu.Unlock()
			},
			OnConnectionQualityChanged: func(u *livekit.ConnectionQualityInfo, p lksdk.Participant) {
				c.mu.Lock()
				c.quality[p.Identity()] = u.Quality
				c.qualities = append(c.qualities, p.Identity()+":"+u.Quality.String())
				c.mu.Unlock()
			},
			OnDataPacket: func(d lksdk.DataPacket, params lksdk.DataReceiveParams) {
				if u, ok := d.(*lksdk.UserDataPacket); ok {
					c.mu.Lock()
					c.data = append(c.data, params.SenderIdentity+":"+string(u.Payload))
					c.mu.Unlock()
				}
			},
		},
		OnActiveSpeakersChanged: func(ps []lksdk.Participant) {
			c.mu.Lock()
			for _, p := range ps {
				c.speakers[p.Identity()] = true
			}
			c.mu.Unlock()
		},
		OnParticipantDisconnected: func(rp *lksdk.RemoteParticipant) {
			c.mu.Lock()
			c.gone[rp.Identity()] = true
			c.mu.Unlock()
		},
	}
	c.started = time.Now()
	r, err := lksdk.ConnectToRoomWithToken(wsURL, jwt, cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err, "%s connects", identity)
	c.room = r
	t.Cleanup(func() { c.room.Disconnect(); c.readers.Wait() })
	return c
}

// count1 records one packet of track k.
func (c *sdkClient) count1(tr *webrtc.TrackRemote, k string, p *rtp.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got[k] == 0 {
		c.firstAt[k] = time.Now()
		c.firstKey[k] = tr.Kind() == webrtc.RTPCodecTypeAudio || rtpgen.IsVP8Keyframe(p.Payload)
	}
	c.got[k]++
	if c.bytes == nil {
		c.bytes = map[string]int{} // clients made elsewhere (connectMatrixClient) start without it
	}
	c.bytes[k] += p.MarshalSize()
}

func (c *sdkClient) count(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[k]
}

// sendOpus feeds audio generated Opus, loud enough to count as speech,
// until ctx ends.
func sendOpus(ctx context.Context, wg *sync.WaitGroup, audio *lksdk.LocalTrack) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		g := &rtpgen.Opus{Bytes: 90}
		level := uint8(20)
		tick := time.NewTicker(g.Interval())
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				_ = audio.WriteRTP(g.Next(now), &lksdk.SampleWriteOptions{AudioLevel: &level})
			}
		}
	}()
}

// publishMicrophone publishes a microphone fed by sendOpus.
func (c *sdkClient) publishMicrophone(t *testing.T, ctx context.Context, wg *sync.WaitGroup) {
	t.Helper()
	audio, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	require.NoError(t, err)
	c.audioPub, err = c.room.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "mic", Source: livekit.TrackSource_MICROPHONE})
	require.NoError(t, err)
	sendOpus(ctx, wg, audio)
}

// publish starts generated Opus (50 packets/s) and VP8 (30 fps, a
// keyframe every 10 s and on each PLI) until ctx ends.
func (c *sdkClient) publish(t *testing.T, ctx context.Context, wg *sync.WaitGroup) {
	t.Helper()
	audio, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	require.NoError(t, err)
	c.vp8 = &rtpgen.VP8{FPS: 30, FrameBytes: 1400, KeyframeBytes: 7000, KeyframeEvery: 300, MTU: 1100}
	video, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
		lksdk.WithRTCPHandler(func(p rtcp.Packet) {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				c.plis.Add(1)
				c.vp8.RequestKeyframe()
			}
		}))
	require.NoError(t, err)
	c.audioPub, err = c.room.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "mic", Source: livekit.TrackSource_MICROPHONE})
	require.NoError(t, err)
	_, err = c.room.LocalParticipant.PublishTrack(video, &lksdk.TrackPublicationOptions{Name: "camera", Source: livekit.TrackSource_CAMERA, VideoWidth: 640, VideoHeight: 360})
	require.NoError(t, err)
	sendOpus(ctx, wg, audio)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(c.vp8.Interval())
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				for _, p := range c.vp8.NextFrame(now) {
					_ = video.WriteRTP(p, nil)
				}
			}
		}
	}()
}

func eventually(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSDKThreeParticipants: three Go SDK clients publish audio and video;
// each receives the other two's tracks; mute, unmute, data and leave reach
// the others; a late joiner starts on a keyframe it asked for.
func TestSDKThreeParticipants(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })

	room := "sdk-three"
	names := []string{"alice", "bob", "carol"}
	clients := map[string]*sdkClient{}
	for _, id := range names {
		clients[id] = connectClient(t, ctx, n, room, id)
		clients[id].publish(t, ctx, &gens)
	}

	const want = 50
	for _, rx := range names {
		for _, tx := range names {
			if rx == tx {
				continue
			}
			for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
				k := key(tx, kind)
				eventually(t, 20*time.Second, fmt.Sprintf("%s receives %d %s packets", rx, want, k), func() bool {
					return clients[rx].count(k) >= want
				})
				c := clients[rx]
				c.mu.Lock()
				require.True(t, c.firstKey[k], "%s: first %s packet starts a keyframe", rx, k)
				t.Logf("%s <- %s: first packet %v after %s began connecting", rx, k, c.firstAt[k].Sub(c.started).Round(time.Millisecond), rx)
				c.mu.Unlock()
			}
		}
	}

	// Everyone sends loud audio (level -20 dBov): the others are reported speaking.
	for _, rx := range names {
		for _, tx := range names {
			if rx == tx {
				continue
			}
			c, who := clients[rx], tx
			eventually(t, 5*time.Second, rx+" sees "+tx+" speaking", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.speakers[who]
			})
		}
	}

	// Mute and unmute reach the others.
	alice, bob, carol := clients["alice"], clients["bob"], clients["carol"]
	alice.audioPub.SetMuted(true)
	for _, rx := range []*sdkClient{bob, carol} {
		eventually(t, 5*time.Second, rx.identity+" sees alice muted", func() bool {
			rx.mu.Lock()
			defer rx.mu.Unlock()
			return rx.muted["alice/audio"]
		})
	}
	alice.audioPub.SetMuted(false)
	for _, rx := range []*sdkClient{bob, carol} {
		eventually(t, 5*time.Second, rx.identity+" sees alice unmuted", func() bool {
			rx.mu.Lock()
			defer rx.mu.Unlock()
			return !rx.muted["alice/audio"]
		})
	}

	// Data: reliable, to everyone, and to one destination only.
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hello all")), lksdk.WithDataPublishReliable(true)))
	require.NoError(t, alice.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("for carol")),
		lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination([]string{"carol"})))
	eventually(t, 5*time.Second, "carol gets both data packets", func() bool {
		carol.mu.Lock()
		defer carol.mu.Unlock()
		return len(carol.data) == 2
	})
	eventually(t, 5*time.Second, "bob gets the broadcast", func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return len(bob.data) == 1
	})
	time.Sleep(300 * time.Millisecond)
	bob.mu.Lock()
	require.Equal(t, []string{"alice:hello all"}, bob.data, "bob gets only the broadcast, stamped with alice's identity")
	bob.mu.Unlock()
	alice.mu.Lock()
	require.Empty(t, alice.data, "nothing is echoed to the sender")
	alice.mu.Unlock()

	// A message far larger than the node's initial data read buffer
	// (media/datachannel.go) arrives whole, and small ones still follow it.
	big := strings.Repeat("0123456789abcdef", 2500) // 40,000 bytes
	require.NoError(t, bob.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte(big)), lksdk.WithDataPublishReliable(true)))
	require.NoError(t, bob.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("after")), lksdk.WithDataPublishReliable(true)))
	eventually(t, 5*time.Second, "alice gets the large message and the next", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return len(alice.data) == 2
	})
	alice.mu.Lock()
	require.Equal(t, []string{"bob:" + big, "bob:after"}, alice.data)
	alice.mu.Unlock()

	// A late joiner gets a keyframe it asked for.
	plisBefore := alice.plis.Load()
	keysBefore := alice.vp8.Keyframes()
	dave := connectClient(t, ctx, n, room, "dave")
	eventually(t, 10*time.Second, "dave receives alice's video", func() bool { return dave.count("alice/video") >= 10 })
	dave.mu.Lock()
	require.True(t, dave.firstKey["alice/video"], "the late joiner's first video packet starts a keyframe")
	t.Logf("late joiner: first alice video packet (a keyframe) %v after dave began connecting",
		dave.firstAt["alice/video"].Sub(dave.started).Round(time.Millisecond))
	dave.mu.Unlock()
	require.Greater(t, alice.plis.Load(), plisBefore, "the node asked the publisher for a keyframe for the late joiner")
	require.Greater(t, alice.vp8.Keyframes(), keysBefore)

	// Leave reaches the others, and carol's media stops.
	carol.room.Disconnect()
	for _, rx := range []*sdkClient{alice, bob, dave} {
		eventually(t, 5*time.Second, rx.identity+" sees carol leave", func() bool {
			rx.mu.Lock()
			defer rx.mu.Unlock()
			return rx.gone["carol"]
		})
	}
}
