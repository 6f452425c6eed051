package e2e

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/rtpgen"
	"entente.dev/entente/media"
	lkfront "entente.dev/entente/media/livekit"
	"entente.dev/entente/media/rtc"
)

// probe is a participant with no WebRTC at all: a media.Transport written
// here, as the federation trunk, the Jingle gateway and the recorder will
// write theirs. It publishes generated VP8 straight into the core and
// keeps what the core forwards to it.
type probe struct {
	vp8  *rtpgen.VP8
	plis atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	sinks map[string]*probeSink // by track sid
}

func (x *probe) Attach(*media.Participant) error { return nil }

func (x *probe) AddDownTrack(d *media.DownTrack) error {
	s := &probeSink{kind: d.Kind()}
	x.mu.Lock()
	x.sinks[d.ID()] = s
	x.mu.Unlock()
	d.Bind(s)
	return nil
}

func (x *probe) RemoveDownTrack(d *media.DownTrack) { d.Unbind() }
func (x *probe) Negotiate()                         {}
func (x *probe) SendData(media.DataKind, []byte)    {}

// Close stops the publishing goroutine, as a transport's Close must.
func (x *probe) Close() {
	x.mu.Lock()
	select {
	case <-x.stop:
	default:
		close(x.stop)
	}
	x.mu.Unlock()
	x.wg.Wait()
}

// RequestKeyframe implements media.TrackSource.
func (x *probe) RequestKeyframe(uint32) {
	x.plis.Add(1)
	x.vp8.RequestKeyframe()
}

// publish feeds l with a VP8 frame every 1/30 s until Close.
func (x *probe) publish(l *media.Layer) {
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer l.End()
		tick := time.NewTicker(x.vp8.Interval())
		defer tick.Stop()
		for {
			select {
			case <-x.stop:
				return
			case now := <-tick.C:
				for _, p := range x.vp8.NextFrame(now) {
					p.SSRC, p.PayloadType = 0x50be, 96
					b, err := p.Marshal()
					if err == nil {
						l.WriteRTP(b, now.UnixNano())
					}
				}
			}
		}
	}()
}

// probeSink keeps the packets of one track forwarded to the probe.
type probeSink struct {
	kind media.Kind

	mu   sync.Mutex
	pkts []*rtp.Packet
}

func (s *probeSink) WriteRTP(h *rtp.Header, payload []byte, _ uint32, _ *media.Fanout) error {
	h.SSRC, h.PayloadType = 0x7e57, 96
	p := &rtp.Packet{Header: *h, Payload: append([]byte(nil), payload...)}
	p.Header.Extensions = nil
	s.mu.Lock()
	if len(s.pkts) < 10000 {
		s.pkts = append(s.pkts, p)
	}
	s.mu.Unlock()
	return nil
}

func (s *probeSink) packets() []*rtp.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rtp.Packet(nil), s.pkts...)
}

// vp8Frames reassembles VP8 packets into frames with pion's depacketizer
// and returns them in order.
func vp8Frames(pkts []*rtp.Packet) [][]byte {
	sb := samplebuilder.New(64, &codecs.VP8Packet{}, 90000)
	var frames [][]byte
	for _, p := range pkts {
		sb.Push(p)
		for s := sb.Pop(); s != nil; s = sb.Pop() {
			frames = append(frames, s.Data)
		}
	}
	return frames
}

// frameSentAt reads the send time rtpgen stamps after a VP8 frame's first
// byte (its payload header), or false when the frame is too short.
func frameSentAt(f []byte) (time.Time, bool) {
	if len(f) < 9 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(f[1:9]))), true
}

// TestNonWebRTCParticipant: the media core serves a participant whose
// transport is not WebRTC. It publishes VP8 that a LiveKit Go SDK client
// receives, reassembles into frames starting on a keyframe and reads the
// sender's timestamps from, having asked the probe for that keyframe;
// and it receives the SDK client's audio and VP8, intact, the same way.
func TestNonWebRTCParticipant(t *testing.T) {
	eng, err := rtc.NewEngine(rtc.Config{BindAddress: net.IPv4(127, 0, 0, 1), IncludeLoopback: true}, zerolog.Nop())
	require.NoError(t, err)
	sfu := media.New(media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}, zerolog.Nop(), nil)
	t.Cleanup(func() { sfu.Close(); _ = eng.Close() })
	keys := lkfront.Keys{"APIcore": "core-secret-0123456789-abcdefghijklmnop"}
	mux := http.NewServeMux()
	lkfront.NewServer(sfu, eng, keys, zerolog.Nop()).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	n := &Node{WSURL: "ws" + strings.TrimPrefix(srv.URL, "http"), APIKey: "APIcore", APISecret: keys["APIcore"]}

	room, err := sfu.CreateRoom("core")
	require.NoError(t, err)
	x := &probe{vp8: &rtpgen.VP8{FPS: 30, FrameBytes: 1400, KeyframeBytes: 7000, MTU: 1100}, stop: make(chan struct{}), sinks: map[string]*probeSink{}}
	p, _, err := room.Join(context.Background(), media.JoinParams{
		Identity: "probe", Name: "Probe", Kind: media.ParticipantStandard, AutoSubscribe: true,
		Permissions: media.Permissions{CanPublish: true, CanSubscribe: true, CanPublishData: true},
		Signaller:   nopSignaller{}, Transport: x,
	})
	require.NoError(t, err)
	p.Start(context.Background())
	p.Connected()
	require.NoError(t, p.AddTrack(context.Background(), &media.AddTrackRequest{Cid: "probe-cam", Name: "camera", Kind: media.KindVideo,
		Source: media.SourceCamera, Width: 640, Height: 360}))
	p.Receive(media.IncomingStream{
		TrackID: "probe-cam", Codec: media.Codec{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, SSRC: 0x50be,
		Source: x, Start: x.publish,
	})

	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })
	// The SDK client keeps every packet of the probe's video.
	var mu sync.Mutex
	var fromProbe []*rtp.Packet
	var readers sync.WaitGroup
	cb := &lksdk.RoomCallback{ParticipantCallback: lksdk.ParticipantCallback{
		OnTrackSubscribed: func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			if rp.Identity() != "probe" {
				return
			}
			readTrack(&readers, tr, func(pkt *rtp.Packet) {
				mu.Lock()
				if len(fromProbe) < 10000 {
					fromProbe = append(fromProbe, pkt)
				}
				mu.Unlock()
			})
		},
	}}
	r, err := lksdk.ConnectToRoomWithToken(n.WSURL, n.Token(t, "core", "alice"), cb, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	t.Cleanup(func() { r.Disconnect(); readers.Wait() })
	c := &sdkClient{identity: "alice", room: r, got: map[string]int{}}
	c.publish(t, ctx, &gens)

	// The SDK client decodes the probe's video: whole frames, the first a
	// keyframe, each carrying the time the probe made it.
	eventually(t, 20*time.Second, "alice receives 30 frames of the probe's video", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(vp8Frames(fromProbe)) >= 30
	})
	mu.Lock()
	frames := vp8Frames(fromProbe)
	mu.Unlock()
	require.Zero(t, frames[0][0]&0x01, "the first frame alice decodes is a keyframe (VP8 P bit clear)")
	for i, f := range frames {
		at, ok := frameSentAt(f)
		require.True(t, ok, "frame %d carries its send time", i)
		require.WithinDuration(t, time.Now(), at, 30*time.Second, "frame %d", i)
	}
	require.Positive(t, x.plis.Load(), "the keyframe was asked of the probe, through the core")

	// The probe receives alice's audio and video, payloads intact.
	sinkOf := func(kind media.Kind) *probeSink {
		x.mu.Lock()
		defer x.mu.Unlock()
		for _, s := range x.sinks {
			if s.kind == kind {
				return s
			}
		}
		return nil
	}
	eventually(t, 20*time.Second, "the probe receives alice's audio and 30 frames of her video", func() bool {
		a, v := sinkOf(media.KindAudio), sinkOf(media.KindVideo)
		return a != nil && v != nil && len(a.packets()) >= 50 && len(vp8Frames(v.packets())) >= 30
	})
	for _, pkt := range sinkOf(media.KindAudio).packets() {
		_, ok := rtpgen.SentAt(pkt.Payload, false)
		require.True(t, ok, "audio packet %d carries alice's send time", pkt.SequenceNumber)
	}
	vframes := vp8Frames(sinkOf(media.KindVideo).packets())
	require.Zero(t, vframes[0][0]&0x01, "the probe's first frame of alice's video is a keyframe")
	for i, f := range vframes {
		_, ok := frameSentAt(f)
		require.True(t, ok, "frame %d of alice's video carries its send time", i)
	}
}

// nopSignaller is a media.Signaller for a participant that needs no
// signalling.
type nopSignaller struct{}

func (nopSignaller) SendParticipants([]*media.ParticipantInfo)           {}
func (nopSignaller) SendTrackPublished(string, *media.TrackInfo)         {}
func (nopSignaller) SendSpeakers([]media.SpeakerInfo)                    {}
func (nopSignaller) SendLeave(media.DisconnectReason, media.LeaveAction) {}
