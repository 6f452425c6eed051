package rtc

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// TestForwardingLeavesNoGoroutines runs a two-party call through an
// in-process SFU with real pion clients, checks that each side receives
// the other's audio and video, then shuts everything down and checks that
// every goroutine the call started has ended (the idea of pion/webrtc's
// test.CheckRoutines).
func TestForwardingLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	runCall(t, clientAPI(t, false), true)
	if t.Failed() {
		return
	}
	requireGoroutinesBack(t, base, 10*time.Second)
}

// requireGoroutinesBack waits until no more goroutines run than before the
// test, and fails with every goroutine's stack when they do not.
func requireGoroutinesBack(t *testing.T, base int, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 4<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines still running %v after the test, %d before:\n%s", n, wait, base, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPionPathWhenTheNodeIsDTLSClient: a client that answers as the DTLS
// server leaves the node without the server random it needs to derive the
// SRTP keys (dtlskeys.go), so its media goes through pion's write path,
// and still arrives.
func TestPionPathWhenTheNodeIsDTLSClient(t *testing.T) {
	runCall(t, clientAPI(t, true), false)
}

// runCall runs a two-party call with clients of api. wantDirect says
// whether the node should send their media itself (direct.go), which the
// call checks from each subscription's SRTP sealer, made on the first
// direct send.
func runCall(t *testing.T, api *webrtc.API, wantDirect bool) {
	runCallOn(t, Config{BindAddress: net.IPv4(127, 0, 0, 1), IncludeLoopback: true}, api, wantDirect, webrtc.ICEProtocolUDP)
}

// TestCallOverICETCP runs the call with clients that gather no UDP
// candidate (as behind a firewall dropping UDP): they reach the node's
// ICE-TCP port, and the node sends through pion's path on that connection
// (the direct path writes to the UDP socket only).
func TestCallOverICETCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	cfg := Config{BindAddress: net.IPv4(127, 0, 0, 1), IncludeLoopback: true, TCPPort: port}
	runCallOn(t, cfg, clientAPIOn(t, false, webrtc.NetworkTypeTCP4), false, webrtc.ICEProtocolTCP)
}

// runCallOn is runCall on an engine made with cfg; every client
// connection's selected candidate pair must use proto.
func runCallOn(t *testing.T, cfg Config, api *webrtc.API, wantDirect bool, proto webrtc.ICEProtocol) {
	eng, err := NewEngine(cfg, zerolog.Nop())
	require.NoError(t, err)
	if cfg.TCPPort != 0 {
		require.Equal(t, net.JoinHostPort(cfg.BindAddress.String(), strconv.Itoa(cfg.TCPPort)), eng.TCPAddr())
	}
	sfu := media.New(testConfig(), zerolog.Nop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- sfu.Run(ctx) }()
	stopped := false
	stopSFU := func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-ran)
			_ = eng.Close()
		}
	}
	defer stopSFU()

	room, err := sfu.Room("call", true)
	require.NoError(t, err)
	alice := joinClient(t, api, eng, room, "alice")
	defer alice.close()
	bob := joinClient(t, api, eng, room, "bob")
	defer bob.close()

	aliceAudio, aliceVideo := alice.publish(t)
	bobAudio, bobVideo := bob.publish(t)

	// Send until each side has had a good run of the other's packets.
	const want = 25
	deadline := time.Now().Add(20 * time.Second)
	var seq uint16
	for !(alice.got(webrtc.RTPCodecTypeAudio) >= want && alice.got(webrtc.RTPCodecTypeVideo) >= want &&
		bob.got(webrtc.RTPCodecTypeAudio) >= want && bob.got(webrtc.RTPCodecTypeVideo) >= want) {
		if time.Now().After(deadline) {
			t.Fatalf("media did not flow: alice got %d audio, %d video; bob got %d audio, %d video",
				alice.got(webrtc.RTPCodecTypeAudio), alice.got(webrtc.RTPCodecTypeVideo),
				bob.got(webrtc.RTPCodecTypeAudio), bob.got(webrtc.RTPCodecTypeVideo))
		}
		seq++
		for _, tr := range []*webrtc.TrackLocalStaticRTP{aliceAudio, bobAudio} {
			require.NoError(t, tr.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960},
				Payload: []byte{0xfc, 0xff, 0xfe},
			}))
		}
		for _, tr := range []*webrtc.TrackLocalStaticRTP{aliceVideo, bobVideo} {
			require.NoError(t, tr.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
				Payload: vp8KeyframePayload(200),
			}))
		}
		time.Sleep(10 * time.Millisecond)
	}

	for _, c := range []*testClient{alice, bob} {
		for _, pc := range []*webrtc.PeerConnection{c.pub, c.sub} {
			pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
			require.NoError(t, err)
			require.NotNil(t, pair, "%s: selected pair", c.name)
			require.Equal(t, proto, pair.Remote.Protocol, "%s: selected pair %s", c.name, pair)
		}
		require.True(t, strings.HasPrefix(c.tr.RemotePath(), proto.String()+" "), "%s: node's path %q", c.name, c.tr.RemotePath())
		if proto == webrtc.ICEProtocolUDP {
			require.Equal(t, wantDirect, c.tr.direct.Load() != nil, "%s: direct path", c.name)
		}
		c.tr.mu.Lock()
		require.Len(t, c.tr.tracks, 2)
		for d, lt := range c.tr.tracks {
			require.Equal(t, wantDirect, lt.sentDirectly(), "%s: track %s sent directly", c.name, d.ID())
		}
		c.tr.mu.Unlock()
	}

	// The SFU sends publishers receiver reports, and NACKs a video packet
	// it did not get: alice's video skips one sequence number.
	for i := 0; i < 5; i++ {
		seq += 2
		require.NoError(t, aliceVideo.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
			Payload: vp8KeyframePayload(200),
		}))
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); alice.nacks.Load() == 0 || alice.reports.Load() == 0 || bob.reports.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("alice got %d NACKs and %d receiver reports, bob %d reports",
				alice.nacks.Load(), alice.reports.Load(), bob.reports.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Each received track gets sender reports (Room.sendReports) that
	// count what was sent and map its RTP clock to the wall clock.
	for _, c := range []*testClient{alice, bob} {
		c.requireSenderReports(t, 2)
	}

	// What arrived is the other side's tracks, under the stream id LiveKit
	// clients parse ("PA_publisher|TR_track").
	for _, c := range []struct{ sub, pub *testClient }{{alice, bob}, {bob, alice}} {
		streams := c.sub.streams()
		require.Len(t, streams, 2, "%s should receive two tracks", c.sub.name)
		for _, s := range streams {
			require.True(t, strings.HasPrefix(s, c.pub.p.SID()+"|TR_"), "stream id %q", s)
		}
	}

	alice.ending.Store(true)
	bob.ending.Store(true)
	stopSFU()
	// The SFU told both clients it was going away.
	for _, c := range []*testClient{alice, bob} {
		leaves := c.sig.of("leave")
		require.Len(t, leaves, 1)
		require.Equal(t, media.ReasonServerShutdown, leaves[0].reason)
	}
	require.False(t, sfu.RoomExists("call"))
}

// vp8KeyframePayload is a VP8 key frame's first packet padded to n bytes.
func vp8KeyframePayload(n int) []byte {
	p := make([]byte, n)
	copy(p, []byte{0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01})
	return p
}

// clientAPI is a pion API as a browser-like client would have: default
// codecs and interceptors, host candidates on loopback only. With
// dtlsServer it answers the SFU's offers as the DTLS server.
func clientAPI(t testing.TB, dtlsServer bool) *webrtc.API {
	t.Helper()
	return clientAPIOn(t, dtlsServer, webrtc.NetworkTypeUDP4)
}

// clientAPIOn is clientAPI gathering candidates of network type nt only.
func clientAPIOn(t testing.TB, dtlsServer bool, nt webrtc.NetworkType) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	require.NoError(t, me.RegisterDefaultCodecs())
	ir := &interceptor.Registry{}
	require.NoError(t, webrtc.RegisterDefaultInterceptors(me, ir))
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{nt})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	if dtlsServer {
		require.NoError(t, se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer))
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
}

// testClient acts as a LiveKit client would over its signal connection,
// except that "signalling" is calling the Participant and its Transport
// directly and reading what the SFU said from a recordingSignaller.
type testClient struct {
	t    testing.TB
	name string
	p    *media.Participant
	tr   *Transport
	eng  *Engine
	sig  *recordingSignaller
	pub  *webrtc.PeerConnection // we offer
	sub  *webrtc.PeerConnection // the SFU offers

	mu        sync.Mutex
	pubQueued []webrtc.ICECandidateInit
	subQueued []webrtc.ICECandidateInit
	streamIDs []string
	// lastTS is the last RTP timestamp received per SSRC, srs the last
	// sender report the SFU sent for it.
	lastTS map[uint32]uint32
	srs    map[uint32]rtcp.SenderReport

	audio atomic.Int64
	video atomic.Int64
	// nacks and reports count the NACKs and receiver reports the SFU
	// sent about what this client publishes.
	nacks   atomic.Int64
	reports atomic.Int64
	// ending is set when the test tears the call down: what the SFU
	// sends then races with connections closing and is not checked.
	ending atomic.Bool

	stop    chan struct{}
	done    chan struct{}
	readers sync.WaitGroup
	once    sync.Once
}

func joinClient(t testing.TB, api *webrtc.API, eng *Engine, room *media.Room, name string) *testClient {
	t.Helper()
	c := &testClient{
		t: t, name: name, eng: eng, sig: newRecordingSignaller(), stop: make(chan struct{}), done: make(chan struct{}),
		lastTS: map[uint32]uint32{}, srs: map[uint32]rtcp.SenderReport{},
	}
	var err error
	c.pub, err = api.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	c.sub, err = api.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	c.p, c.tr = join(t, eng, room, media.JoinParams{Identity: name, Permissions: allowAll(), AutoSubscribe: true}, c.sig)

	c.pub.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			_ = c.tr.HandleCandidate(cand.ToJSON(), Publisher)
		}
	})
	c.sub.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			_ = c.tr.HandleCandidate(cand.ToJSON(), Subscriber)
		}
	})
	c.sub.OnTrack(func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		c.mu.Lock()
		c.streamIDs = append(c.streamIDs, tr.StreamID())
		c.mu.Unlock()
		counter := &c.audio
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			counter = &c.video
		}
		c.readers.Add(2)
		go func() {
			defer c.readers.Done()
			for {
				p, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				c.mu.Lock()
				c.lastTS[p.SSRC] = p.Timestamp
				c.mu.Unlock()
				counter.Add(1)
			}
		}()
		go func() {
			defer c.readers.Done()
			for {
				pkts, _, err := recv.ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range pkts {
					if sr, ok := p.(*rtcp.SenderReport); ok {
						c.mu.Lock()
						c.srs[sr.SSRC] = *sr
						c.mu.Unlock()
					}
				}
			}
		}()
	})
	go c.signalLoop()
	c.p.Start(context.Background())
	return c
}

// signalLoop applies what the SFU sends, in order, until close.
func (c *testClient) signalLoop() {
	defer close(c.done)
	cursor := 0
	for {
		select {
		case <-c.stop:
			return
		case <-c.sig.notify:
		}
		for _, e := range c.sig.since(&cursor) {
			if err := c.apply(e); err != nil && !c.ending.Load() {
				c.t.Errorf("%s: applying %s: %v", c.name, e.kind, err)
			}
		}
	}
}

func (c *testClient) apply(e sigEvent) error {
	switch e.kind {
	case "offer":
		if err := c.sub.SetRemoteDescription(e.sd); err != nil {
			return err
		}
		c.flush(c.sub, &c.subQueued)
		answer, err := c.sub.CreateAnswer(nil)
		if err != nil {
			return err
		}
		if err := c.sub.SetLocalDescription(answer); err != nil {
			return err
		}
		return c.tr.HandleAnswer(answer, e.id)
	case "answer":
		if err := c.pub.SetRemoteDescription(e.sd); err != nil {
			return err
		}
		c.flush(c.pub, &c.pubQueued)
	case "candidate":
		// The SFU trickles as soon as it gathers, which can be before
		// the description the candidate belongs to reaches us.
		pc, queue := c.pub, &c.pubQueued
		if e.target == Subscriber {
			pc, queue = c.sub, &c.subQueued
		}
		if pc.RemoteDescription() == nil {
			c.mu.Lock()
			*queue = append(*queue, *e.cand)
			c.mu.Unlock()
			return nil
		}
		return pc.AddICECandidate(*e.cand)
	}
	return nil
}

func (c *testClient) flush(pc *webrtc.PeerConnection, queue *[]webrtc.ICECandidateInit) {
	c.mu.Lock()
	q := *queue
	*queue = nil
	c.mu.Unlock()
	for _, cand := range q {
		if err := pc.AddICECandidate(cand); err != nil {
			c.t.Errorf("%s: queued candidate: %v", c.name, err)
		}
	}
}

// publish adds an Opus and a VP8 track the way livekit-client does:
// add_track with the track's id as cid, then the publisher offer.
func (c *testClient) publish(t *testing.T) (audio, video *webrtc.TrackLocalStaticRTP) {
	t.Helper()
	var err error
	audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, c.name+"-mic", c.name+"-stream")
	require.NoError(t, err)
	video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, c.name+"-cam", c.name+"-stream")
	require.NoError(t, err)
	for _, tr := range []*webrtc.TrackLocalStaticRTP{audio, video} {
		sender, err := c.pub.AddTrack(tr)
		require.NoError(t, err)
		// Read RTCP so the interceptors see it (and PLIs are consumed).
		c.readers.Add(1)
		go func() {
			defer c.readers.Done()
			for {
				pkts, _, err := sender.ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range pkts {
					switch p.(type) {
					case *rtcp.TransportLayerNack:
						c.nacks.Add(1)
					case *rtcp.ReceiverReport:
						c.reports.Add(1)
					}
				}
			}
		}()
	}
	require.NoError(t, c.p.AddTrack(context.Background(), &media.AddTrackRequest{Cid: audio.ID(), Name: "microphone", Kind: media.KindAudio, Source: media.SourceMicrophone}))
	require.NoError(t, c.p.AddTrack(context.Background(), &media.AddTrackRequest{Cid: video.ID(), Name: "camera", Kind: media.KindVideo, Source: media.SourceCamera, Width: 640, Height: 360}))
	published := c.sig.of("published")
	require.Len(t, published, 2)
	require.Equal(t, audio.ID(), published[0].cid)
	require.Equal(t, video.ID(), published[1].cid)

	offer, err := c.pub.CreateOffer(nil)
	require.NoError(t, err)
	require.NoError(t, c.pub.SetLocalDescription(offer))
	require.NoError(t, c.tr.HandleOffer(offer, 1))
	return audio, video
}

// requireSenderReports waits until the SFU has sent a sender report for n
// received tracks, while media keeps flowing, and checks each one.
func (c *testClient) requireSenderReports(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.srs)
		c.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: sender reports for %d of %d tracks", c.name, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ssrc, sr := range c.srs {
		last, ok := c.lastTS[ssrc]
		require.True(t, ok, "%s: a sender report for SSRC %d, which carries no media", c.name, ssrc)
		require.NotZero(t, sr.PacketCount, "%s: SSRC %d", c.name, ssrc)
		require.Greater(t, sr.OctetCount, sr.PacketCount, "%s: SSRC %d octets", c.name, ssrc)
		// The report's RTP time is the last packet's advanced by the time
		// since; packets here carry 20 ms of timestamp every 10 ms, so
		// allow a few seconds of either clock.
		ahead := int32(sr.RTPTime - last)
		require.Less(t, ahead, int32(5*90000), "%s: SSRC %d report RTP time %d, last packet %d", c.name, ssrc, sr.RTPTime, last)
		require.Greater(t, ahead, int32(-5*90000), "%s: SSRC %d report RTP time %d, last packet %d", c.name, ssrc, sr.RTPTime, last)
		wall := time.Unix(int64(sr.NTPTime>>32)-2208988800, 0)
		require.WithinDuration(t, time.Now(), wall, 10*time.Second, "%s: SSRC %d NTP time", c.name, ssrc)
	}
}

func (c *testClient) got(kind webrtc.RTPCodecType) int64 {
	if kind == webrtc.RTPCodecTypeVideo {
		return c.video.Load()
	}
	return c.audio.Load()
}

func (c *testClient) streams() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.streamIDs...)
}

// close stops the signal loop and both peer connections, and waits for
// every goroutine the client started.
func (c *testClient) close() {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		_ = c.pub.Close()
		_ = c.sub.Close()
		c.readers.Wait()
	})
}
