package federation

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/rtpgen"
	"entente.dev/entente/media"
)

const testRoom = "call1"

// recorder is a Signaller that keeps the last info of every participant
// and whether each was last seen speaking.
type recorder struct {
	mu       sync.Mutex
	infos    map[string]*media.ParticipantInfo // by identity
	speaking map[string]bool                   // by sid
}

func newRecorder() *recorder {
	return &recorder{infos: map[string]*media.ParticipantInfo{}, speaking: map[string]bool{}}
}

func (r *recorder) SendParticipants(infos []*media.ParticipantInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, i := range infos {
		r.infos[i.Identity] = i
	}
}
func (r *recorder) SendTrackPublished(string, *media.TrackInfo) {}
func (r *recorder) SendSpeakers(s []media.SpeakerInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range s {
		r.speaking[x.Sid] = x.Active
	}
}
func (r *recorder) SendLeave(media.DisconnectReason, media.LeaveAction) {}

func (r *recorder) info(identity string) *media.ParticipantInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.infos[identity]
}

func (r *recorder) speaks(sid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.speaking[sid]
}

// endpoint is a local participant's transport in these tests: it counts
// what it receives, and sends nothing.
type endpoint struct {
	mu      sync.Mutex
	downs   map[string]*media.DownTrack
	data    []string
	packets atomic.Uint64
}

func (e *endpoint) Attach(*media.Participant) error { return nil }
func (e *endpoint) AddDownTrack(d *media.DownTrack) error {
	e.mu.Lock()
	e.downs[d.ID()] = d
	e.mu.Unlock()
	d.Bind(e)
	return nil
}
func (e *endpoint) RemoveDownTrack(d *media.DownTrack) {
	e.mu.Lock()
	delete(e.downs, d.ID())
	e.mu.Unlock()
}
func (e *endpoint) Negotiate() {}
func (e *endpoint) SendData(_ media.DataKind, b []byte) {
	e.mu.Lock()
	e.data = append(e.data, string(b))
	e.mu.Unlock()
}

func (e *endpoint) received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.data...)
}
func (e *endpoint) Close() {}
func (e *endpoint) WriteRTP(*rtp.Header, []byte, uint32, *media.Fanout) error {
	e.packets.Add(1)
	return nil
}

func (e *endpoint) video(kind media.Kind) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for sid, d := range e.downs {
		if d.Kind() == kind {
			return sid
		}
	}
	return ""
}

type testNodes struct {
	sfuA, sfuB     *media.SFU
	nodeA, nodeB   *Node
	net            *fakeNet
	calls          *staticCalls
	auditA, auditB *memAudit
	// stop stops both nodes (closing their trunks) and their SFUs; the
	// test's cleanup calls it too.
	stop func()
}

func startNodes(t *testing.T) *testNodes {
	t.Helper()
	return startNodesWith(t, "", "")
}

// startNodesWith starts nodes A and B whose token service URLs are urlA
// and urlB; each names the other's as its peer's URL (empty: the shared
// transport).
func startNodesWith(t *testing.T, urlA, urlB string) *testNodes {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	cfg := media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}
	tn := &testNodes{sfuA: media.New(cfg, log, nil), sfuB: media.New(cfg, log, nil),
		net: &fakeNet{nodes: map[string]*Node{}, wires: map[string]*fakeWire{}},
		calls: &staticCalls{calls: []Call{{RoomID: "!r:a.test", MediaRoom: testRoom, Servers: []string{"a.test", "b.test"}}},
			joined: map[string]bool{"!r:a.test|@entente:a.test": true, "!r:a.test|@entente:b.test": true}}}
	var err error
	tn.nodeA, err = New(Config{ServerName: "a.test", Bot: "@entente:a.test", ServiceURL: urlA,
		Peers: map[string]Peer{"b.test": {Bot: "@entente:b.test", URL: urlB}}},
		tn.sfuA, tn.calls, fakeSignal{tn.net, "@entente:a.test"}, tn.net.newConn(0), nil, log.With().Str("node", "A").Logger())
	require.NoError(t, err)
	tn.nodeB, err = New(Config{ServerName: "b.test", Bot: "@entente:b.test", ServiceURL: urlB,
		Peers: map[string]Peer{"a.test": {Bot: "@entente:a.test", URL: urlA}}},
		tn.sfuB, tn.calls, fakeSignal{tn.net, "@entente:b.test"}, tn.net.newConn(1), nil, log.With().Str("node", "B").Logger())
	require.NoError(t, err)
	tn.net.nodes["@entente:a.test"], tn.net.nodes["@entente:b.test"] = tn.nodeA, tn.nodeB
	tn.auditA, tn.auditB = &memAudit{}, &memAudit{}
	tn.nodeA.SetAuditLog(tn.auditA)
	tn.nodeB.SetAuditLog(tn.auditB)
	tn.nodeA.auditEvery, tn.nodeB.auditEvery = 50*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range []*Node{tn.nodeA, tn.nodeB} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.Run(ctx) }()
	}
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			tn.sfuA.Close()
			tn.sfuB.Close()
		})
	}
	t.Cleanup(tn.stop)
	return tn
}

// publisher joins sfu's room and publishes a microphone (loud) and a
// three-layer camera whose layers differ in size (q 200, h 600, f 1100
// bytes per packet), fed until the test ends.
func publisher(t *testing.T, sfu *media.SFU, identity string) (*media.Participant, *recorder) {
	t.Helper()
	return publisherIn(t, sfu, testRoom, identity)
}

// publisherIn is publisher in the named room.
func publisherIn(t *testing.T, sfu *media.SFU, roomName, identity string) (*media.Participant, *recorder) {
	t.Helper()
	ctx := context.Background()
	room, err := sfu.CreateRoom(roomName)
	require.NoError(t, err)
	rec := newRecorder()
	p, _, err := room.Join(ctx, media.JoinParams{Identity: identity, AutoSubscribe: true,
		Permissions: media.Permissions{CanPublish: true, CanSubscribe: true, CanPublishData: true},
		Signaller:   rec, Transport: &endpoint{downs: map[string]*media.DownTrack{}}})
	require.NoError(t, err)
	require.NoError(t, p.Start(ctx))
	p.Connected()
	require.NoError(t, p.AddTrack(ctx, &media.AddTrackRequest{Cid: "mic", Kind: media.KindAudio, Source: media.SourceMicrophone}))
	require.NoError(t, p.AddTrack(ctx, &media.AddTrackRequest{Cid: "cam", Kind: media.KindVideo, Source: media.SourceCamera,
		Layers: []media.VideoLayer{{Quality: media.QualityLow}, {Quality: media.QualityMedium}, {Quality: media.QualityHigh}}}))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	feed := func(start func() func(now time.Time) [][]byte, every time.Duration) func(*media.Layer) {
		return func(l *media.Layer) {
			next := start()
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(every)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case now := <-tick.C:
						for _, b := range next(now) {
							l.WriteRTP(b, now.UnixNano())
						}
					}
				}
			}()
		}
	}
	p.Receive(media.IncomingStream{TrackID: "mic", Codec: media.Codec{MimeType: "audio/opus", ClockRate: 48000, Channels: 2},
		SSRC: 1, AudioLevelExt: 1, Source: nopSource{}, Start: feed(func() func(time.Time) [][]byte {
			g := &rtpgen.Opus{Bytes: 80}
			return func(now time.Time) [][]byte {
				pkt := g.Next(now)
				pkt.SSRC = 1
				_ = pkt.SetExtension(1, []byte{0x80 | 10}) // voice, -10 dBov
				b, _ := pkt.Marshal()
				return [][]byte{b}
			}
		}, 20*time.Millisecond)})
	for i, layer := range []struct {
		rid   string
		bytes int
	}{{"q", 200}, {"h", 600}, {"f", 1100}} {
		g := &rtpgen.VP8{FPS: 30, FrameBytes: layer.bytes, KeyframeBytes: layer.bytes, KeyframeEvery: 30, MTU: layer.bytes}
		ssrc := uint32(10 + i)
		p.Receive(media.IncomingStream{TrackID: "cam", Codec: media.Codec{MimeType: "video/VP8", ClockRate: 90000},
			RID: layer.rid, SSRC: ssrc, Source: keyframer{g}, Start: feed(func() func(time.Time) [][]byte {
				return func(now time.Time) [][]byte {
					var out [][]byte
					for _, pkt := range g.NextFrame(now) {
						pkt.SSRC = ssrc
						b, _ := pkt.Marshal()
						out = append(out, b)
					}
					return out
				}
			}, g.Interval())})
	}
	return p, rec
}

type nopSource struct{}

func (nopSource) RequestKeyframe(uint32) {}

type keyframer struct{ g *rtpgen.VP8 }

func (k keyframer) RequestKeyframe(uint32) { k.g.RequestKeyframe() }

// subscriber joins sfu's room as a local participant receiving everything.
func subscriber(t *testing.T, sfu *media.SFU, identity string) (*media.Participant, *endpoint, *recorder) {
	t.Helper()
	return subscriberIn(t, sfu, testRoom, identity)
}

// subscriberIn is subscriber in the named room.
func subscriberIn(t *testing.T, sfu *media.SFU, roomName, identity string) (*media.Participant, *endpoint, *recorder) {
	t.Helper()
	room, err := sfu.CreateRoom(roomName)
	require.NoError(t, err)
	e, rec := &endpoint{downs: map[string]*media.DownTrack{}}, newRecorder()
	p, _, err := room.Join(context.Background(), media.JoinParams{Identity: identity, AutoSubscribe: true,
		Permissions: media.Permissions{CanSubscribe: true}, Signaller: rec, Transport: e})
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	p.Connected()
	return p, e, rec
}

// exportedLayer is node A's sink of one layer of the camera on the trunk
// (nil when that layer was never asked for).
func (tn *testNodes) exportedLayer(q media.VideoQuality) *fakeSink {
	tn.net.mu.Lock()
	w := tn.net.wires["call"]
	tn.net.mu.Unlock()
	if w == nil {
		return nil
	}
	w.mu.Lock()
	c := w.conns[0]
	w.mu.Unlock()
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, s := range c.sinks {
		if _, layer, ok := media.ParsePinnedID(d.ID()); ok && layer == q && d.Kind() == media.KindVideo {
			return s
		}
	}
	return nil
}

// crossing counts the camera packets of each layer that cross the trunk.
func (tn *testNodes) crossing() [3]uint64 {
	var out [3]uint64
	for q := range out {
		if s := tn.exportedLayer(media.VideoQuality(q)); s != nil {
			out[q] = s.packets.Load()
		}
	}
	return out
}

// TestTrunkCarriesACall: a publisher on A, five subscribers on B. The
// camera crosses once, each layer someone on B watches as a stream of its
// own; a layer nobody on B watches does not cross; mute, speaking, leave and a
// newcomer show on the other side; nothing comes back to its origin.
func TestTrunkCarriesACall(t *testing.T) {
	tn := startNodes(t)
	alice, _ := publisher(t, tn.sfuA, "@alice:a.test:DEV")
	require.Eventually(t, func() bool { return tn.sfuB.HasParticipant(testRoom, "@alice:a.test:DEV") }, 10*time.Second, 20*time.Millisecond,
		"alice appears on B")

	var subs []*media.Participant
	var ends []*endpoint
	var recs []*recorder
	for _, id := range []string{"s1", "s2", "s3", "s4", "s5"} {
		p, e, rec := subscriber(t, tn.sfuB, "@"+id+":b.test:DEV")
		subs, ends, recs = append(subs, p), append(ends, e), append(recs, rec)
	}
	var cam string
	require.Eventually(t, func() bool { cam = ends[0].video(media.KindVideo); return cam != "" }, 10*time.Second, 20*time.Millisecond,
		"B's subscribers get alice's camera")
	for _, s := range subs {
		require.Eventually(t, func() bool {
			return s.UpdateTrackSettings(context.Background(), &media.TrackSettings{TrackSids: []string{cam}, Quality: media.QualityLow}) == nil
		}, 5*time.Second, 50*time.Millisecond)
	}
	require.Eventually(t, func() bool { return tn.exportedLayer(media.QualityLow) != nil }, 5*time.Second, 20*time.Millisecond)

	// window counts what crossed, per layer, and what one subscriber got,
	// while that subscriber gets 120 packets (a count, not a time: a busy
	// machine feeds the publisher more slowly).
	window := func() (crossed [3]uint64, got uint64) {
		c0, g0 := tn.crossing(), ends[0].packets.Load()
		require.Eventually(t, func() bool { return ends[0].packets.Load() >= g0+120 }, 30*time.Second, 10*time.Millisecond)
		c1 := tn.crossing()
		for q := range crossed {
			crossed[q] = c1[q] - c0[q]
		}
		return crossed, ends[0].packets.Load() - g0
	}

	// Everyone on B wants the low layer: only that one crosses.
	time.Sleep(1500 * time.Millisecond)
	crossed, got := window()
	t.Logf("all low: crossed per layer %v; one subscriber of five on B got %d packets in all", crossed, got)
	require.Greater(t, crossed[0], uint64(20))
	require.Zero(t, crossed[1]+crossed[2], "only the low layer crosses while everyone on B wants it")
	require.Less(t, crossed[0], got*2, "a packet crosses once for five subscribers")

	// One subscriber on B wants the high layer: it crosses beside the low
	// one, which the four others still watch; then it stops.
	require.NoError(t, subs[0].UpdateTrackSettings(context.Background(), &media.TrackSettings{TrackSids: []string{cam}, Quality: media.QualityHigh}))
	time.Sleep(1500 * time.Millisecond)
	crossed, _ = window()
	t.Logf("one high: crossed per layer %v", crossed)
	require.Greater(t, crossed[2], uint64(10), "the high layer crosses")
	require.Greater(t, crossed[0], uint64(10), "the low layer still crosses for the others")
	require.Zero(t, crossed[1], "the medium layer, which nobody on B watches, does not")
	require.NoError(t, subs[0].UpdateTrackSettings(context.Background(), &media.TrackSettings{TrackSids: []string{cam}, Quality: media.QualityLow}))
	time.Sleep(1500 * time.Millisecond)
	crossed, _ = window()
	require.Zero(t, crossed[1]+crossed[2], "the high layer stops crossing when nobody on B wants it")

	// Nobody on A was sent back to A: A's link has B's five, not alice.
	require.Eventually(t, func() bool {
		l := tn.nodeA.Links()
		return len(l) == 1 && l[0].Up && l[0].Remotes == 5
	}, 10*time.Second, 50*time.Millisecond, "A sees B's five subscribers")
	lb := tn.nodeB.Links()
	require.Len(t, lb, 1)
	require.Equal(t, 1, lb[0].Remotes, "B sees alice only")
	require.Zero(t, lb[0].Exported, "B exports none of what came from A")

	// Speaking, mute, leave, newcomer.
	require.Eventually(t, func() bool {
		info := recs[1].info("@alice:a.test:DEV")
		return info != nil && recs[1].speaks(info.Sid)
	}, 10*time.Second, 50*time.Millisecond, "B hears alice speak")
	var camA string
	require.Eventually(t, func() bool {
		for _, tr := range tn.aliceTracks(alice) {
			if tr.Kind == media.KindVideo {
				camA = tr.Sid
			}
		}
		return camA != ""
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, alice.SetMuted(context.Background(), camA, true))
	require.Eventually(t, func() bool {
		info := recs[2].info("@alice:a.test:DEV")
		for _, tr := range info.Tracks {
			if tr.Kind == media.KindVideo && tr.Muted {
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "B sees alice's camera muted")

	// Data: a broadcast reaches everyone on B, a packet for one only them.
	alice.RelayData(media.DataReliable, []byte("to all"), nil)
	alice.RelayData(media.DataReliable, []byte("to s2"), []string{"@s2:b.test:DEV"})
	require.Eventually(t, func() bool {
		for _, e := range ends {
			if !slices.Contains(e.received(), "to all") {
				return false
			}
		}
		return slices.Contains(ends[1].received(), "to s2")
	}, 10*time.Second, 20*time.Millisecond, "alice's data reaches B")
	for i, e := range ends {
		if i != 1 {
			require.NotContains(t, e.received(), "to s2", "a packet for one person reaches only them")
		}
	}

	carol, _ := publisher2(t, tn.sfuA, "@carol:a.test:DEV")
	require.Eventually(t, func() bool { return tn.sfuB.HasParticipant(testRoom, "@carol:a.test:DEV") }, 10*time.Second, 20*time.Millisecond,
		"a newcomer on A appears on B")
	_ = carol
	alice.Leave()
	require.Eventually(t, func() bool { return !tn.sfuB.HasParticipant(testRoom, "@alice:a.test:DEV") }, 10*time.Second, 20*time.Millisecond,
		"alice's leave reaches B")
}

// aliceTracks reads a participant's published tracks through a fresh
// observer of its room.
func (tn *testNodes) aliceTracks(p *media.Participant) []*media.TrackInfo {
	rec := newRecorder()
	room, _ := tn.sfuA.Room(testRoom, false)
	o, join, err := room.Join(context.Background(), media.JoinParams{Identity: "observer", Signaller: rec,
		Permissions: media.Permissions{Hidden: true}, Transport: &endpoint{downs: map[string]*media.DownTrack{}}})
	if err != nil {
		return nil
	}
	defer o.Leave()
	for _, other := range join.Others {
		if other.Sid == p.SID() {
			return other.Tracks
		}
	}
	return nil
}

// publisher2 is a second publisher of the same room.
func publisher2(t *testing.T, sfu *media.SFU, identity string) (*media.Participant, *recorder) {
	return publisher(t, sfu, identity)
}

// TestTrunkInterruptedAndResumed: while the trunk hears nothing from the
// far node, each side's remote participants leave its room; when it
// resumes they come back, with their media flowing again through the
// streams the trunk delivered at first (a trunk's streams are never
// delivered twice), without a new trunk.
func TestTrunkInterruptedAndResumed(t *testing.T) {
	tn := startNodes(t)
	publisher(t, tn.sfuA, "@alice:a.test:DEV")
	_, end, _ := subscriber(t, tn.sfuB, "@bob:b.test:DEV")
	require.Eventually(t, func() bool { return end.packets.Load() > 20 }, 10*time.Second, 20*time.Millisecond, "bob receives alice")
	require.Eventually(t, func() bool { l := tn.nodeA.Links(); return len(l) == 1 && l[0].Remotes == 1 }, 10*time.Second, 20*time.Millisecond)

	tn.net.mu.Lock()
	conns := tn.net.wires["call"].conns
	tn.net.mu.Unlock()
	for _, c := range conns {
		c.ev.Interrupted()
	}
	require.Eventually(t, func() bool {
		return !tn.sfuB.HasParticipant(testRoom, "@alice:a.test:DEV") && !tn.sfuA.HasParticipant(testRoom, "@bob:b.test:DEV")
	}, 5*time.Second, 20*time.Millisecond, "each side's remote participants leave while the trunk is interrupted")
	for _, n := range []*Node{tn.nodeA, tn.nodeB} {
		l := n.Links()
		require.Len(t, l, 1, "the trunk stays")
		require.True(t, l[0].Interrupted)
		require.Zero(t, l[0].Remotes)
	}

	before := end.packets.Load()
	for _, c := range conns {
		c.ev.Resumed()
	}
	require.Eventually(t, func() bool {
		return tn.sfuB.HasParticipant(testRoom, "@alice:a.test:DEV") && tn.sfuA.HasParticipant(testRoom, "@bob:b.test:DEV")
	}, 5*time.Second, 20*time.Millisecond, "the remote participants come back when the trunk resumes")
	require.Eventually(t, func() bool { return end.packets.Load() > before+20 }, 10*time.Second, 20*time.Millisecond,
		"bob receives alice again, through the streams the trunk delivered at first")
	for _, n := range []*Node{tn.nodeA, tn.nodeB} {
		l := n.Links()
		require.Len(t, l, 1)
		require.False(t, l[0].Interrupted)
		require.Equal(t, 1, l[0].Remotes)
	}
}

// TestTrunkRequestAfterRestart: the answering node, restarted, has no
// trunk for a call the offerer still holds one for (to its previous
// session): it asks for one, and the offerer replaces its trunk at once.
// A node that has its trunk never asks (the trunk stays).
func TestTrunkRequestAfterRestart(t *testing.T) {
	tn := startNodes(t)
	publisher(t, tn.sfuA, "@alice:a.test:DEV")
	require.Eventually(t, func() bool { l := tn.nodeA.Links(); return len(l) == 1 && l[0].Up && l[0].Remotes == 0 }, 10*time.Second, 20*time.Millisecond)
	first := tn.nodeA.Links()[0].CallID
	time.Sleep(3 * requestAfter)
	require.Equal(t, first, tn.nodeA.Links()[0].CallID, "a linked answerer asks for nothing: the trunk stays")

	// B restarts: a new node (new session, empty SFU) in its place.
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	sfuB2 := media.New(media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}, log, nil)
	b2, err := New(Config{ServerName: "b.test", Bot: "@entente:b.test", Peers: map[string]Peer{"a.test": {Bot: "@entente:a.test"}}},
		sfuB2, tn.calls, fakeSignal{tn.net, "@entente:b.test"}, tn.net.newConn(1), nil, log.With().Str("node", "B2").Logger())
	require.NoError(t, err)
	tn.net.mu.Lock()
	tn.net.nodes["@entente:b.test"] = b2
	tn.net.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b2.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; sfuB2.Close() })
	restarted := time.Now()

	require.Eventually(t, func() bool {
		la, lb := tn.nodeA.Links(), b2.Links()
		return len(la) == 1 && la[0].CallID != first && la[0].Up && len(lb) == 1 && lb[0].Up && lb[0].CallID == la[0].CallID
	}, 10*time.Second, 20*time.Millisecond, "A replaces its trunk with one to the restarted B")
	require.Eventually(t, func() bool { return sfuB2.HasParticipant(testRoom, "@alice:a.test:DEV") }, 5*time.Second, 20*time.Millisecond,
		"alice is in the restarted B's room")
	t.Logf("a new trunk with the restarted node %v after it started (asks after %v)", time.Since(restarted).Round(time.Millisecond), requestAfter)
}
