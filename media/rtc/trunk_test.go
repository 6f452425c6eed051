package rtc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// trunkPump is a test owner's TrunkEvents: what a trunk sends the far node
// is applied to the far trunk in order on a goroutine of its own, as
// federation would carry it over Matrix; the rest is recorded.
type trunkPump struct {
	name string
	// trickle sends the candidates of the first description apart, before
	// it, as candidate messages.
	trickle bool
	apart   atomic.Int64 // candidates sent apart
	far     atomic.Pointer[Trunk]
	queue   chan func(*Trunk)
	stop    chan struct{}
	done    chan struct{}
	up      chan struct{}
	upOnce  sync.Once
	downs   chan error
	msgs    chan []byte
	tracks  chan trunkTrack
	errs    chan error
	// interrupts and resumes count Interrupted and Resumed.
	interrupts, resumes atomic.Int64
}

type trunkTrack struct {
	id string
	s  media.IncomingStream
}

func newTrunkPump(name string) *trunkPump {
	p := &trunkPump{
		name: name, queue: make(chan func(*Trunk), 256), stop: make(chan struct{}), done: make(chan struct{}),
		up: make(chan struct{}), downs: make(chan error, 4), msgs: make(chan []byte, 64),
		tracks: make(chan trunkTrack, 16), errs: make(chan error, 16),
	}
	go func() {
		defer close(p.done)
		for {
			select {
			case f := <-p.queue:
				if far := p.far.Load(); far != nil {
					f(far)
				}
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

func (p *trunkPump) close() {
	close(p.stop)
	<-p.done
}

func (p *trunkPump) report(err error) {
	if err != nil {
		select {
		case p.errs <- fmt.Errorf("%s: %w", p.name, err):
		default:
		}
	}
}

func (p *trunkPump) SendDescription(typ, sdp string) {
	if p.trickle {
		var kept []string
		for _, line := range strings.Split(sdp, "\r\n") {
			if c, ok := strings.CutPrefix(line, "a="); ok && strings.HasPrefix(c, "candidate:") {
				p.apart.Add(1)
				p.SendCandidate(c, "", 0)
				continue
			}
			kept = append(kept, line)
		}
		sdp = strings.Join(kept, "\r\n")
	}
	p.queue <- func(far *Trunk) { p.report(far.HandleDescription(typ, sdp)) }
}

func (p *trunkPump) SendCandidate(candidate, mid string, index uint16) {
	p.queue <- func(far *Trunk) { p.report(far.HandleCandidate(candidate, mid, index)) }
}

func (p *trunkPump) Up() { p.upOnce.Do(func() { close(p.up) }) }

func (p *trunkPump) Down(err error) { p.downs <- err }

func (p *trunkPump) Interrupted() { p.interrupts.Add(1) }

func (p *trunkPump) Resumed() { p.resumes.Add(1) }

func (p *trunkPump) Message(b []byte) { p.msgs <- b }

func (p *trunkPump) Track(id string, s media.IncomingStream) { p.tracks <- trunkTrack{id, s} }

// nopTransport is a participant's transport with no network: a publisher
// whose layers the test feeds, or the far node's publishers as one
// participant.
type nopTransport struct{}

func (nopTransport) Attach(*media.Participant) error     { return nil }
func (nopTransport) AddDownTrack(*media.DownTrack) error { return nil }
func (nopTransport) RemoveDownTrack(*media.DownTrack)    {}
func (nopTransport) Negotiate()                          {}
func (nopTransport) SendData(media.DataKind, []byte)     {}
func (nopTransport) Close()                              {}

// viewerTransport is a subscriber with no network: every down track is
// bound to a sink that counts the packets of each test track (named by
// the payload's last byte) and checks that the payload arrived unchanged.
type viewerTransport struct {
	nopTransport
	want    map[byte][]byte // tag -> the payload sent
	mu      sync.Mutex
	got     map[byte]int
	changed int
	removed int
}

func newViewer(want map[byte][]byte) *viewerTransport {
	return &viewerTransport{want: want, got: map[byte]int{}}
}

func (v *viewerTransport) AddDownTrack(d *media.DownTrack) error {
	d.Bind(viewerSink{v})
	return nil
}

func (v *viewerTransport) RemoveDownTrack(d *media.DownTrack) {
	v.mu.Lock()
	v.removed++
	v.mu.Unlock()
	d.Unbind()
}

func (v *viewerTransport) removals() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.removed
}

type viewerSink struct{ v *viewerTransport }

func (s viewerSink) WriteRTP(h *rtp.Header, payload []byte, _ uint32, _ *media.Fanout) error {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	if len(payload) == 0 {
		s.v.changed++
		return nil
	}
	tag := payload[len(payload)-1]
	if !bytes.Equal(payload, s.v.want[tag]) {
		s.v.changed++
	}
	s.v.got[tag]++
	return nil
}

func (v *viewerTransport) count(tag byte) (int, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.got[tag], v.changed
}

// keyframeSource counts the keyframe requests that reach a publisher.
type keyframeSource struct{ n atomic.Int64 }

func (k *keyframeSource) RequestKeyframe(uint32) { k.n.Add(1) }

// trunkNode is one node of the test: an engine, an SFU, the room of the
// call, its end of the trunk and its export participant (subscribed by
// the test to what the far node wants), the far node's publishers as one
// participant, a viewer of everything, and local publishers the test feeds.
type trunkNode struct {
	t      *testing.T
	name   string
	eng    *Engine
	sfu    *media.SFU
	room   *media.Room
	trunk  *Trunk
	pump   *trunkPump
	export *media.Participant
	remote *media.Participant
	viewer *viewerTransport
	pub    *media.Participant
	pubSig *recordingSignaller
}

func newTrunkNode(t *testing.T, name string, want map[byte][]byte) *trunkNode {
	eng, err := NewEngine(Config{BindAddress: net.IPv4(127, 0, 0, 1), IncludeLoopback: true}, zerolog.Nop())
	require.NoError(t, err)
	n := &trunkNode{t: t, name: name, eng: eng, sfu: media.New(testConfig(), zerolog.Nop(), nil), pump: newTrunkPump(name)}
	n.room, err = n.sfu.CreateRoom("call")
	require.NoError(t, err)
	n.viewer = newViewer(want)
	n.join("viewer", n.viewer, true)
	n.remote = n.join("far-node", nopTransport{}, false)
	n.pubSig = newRecordingSignaller()
	n.pub = n.joinWith("publisher", nopTransport{}, false, n.pubSig)
	return n
}

func (n *trunkNode) join(identity string, tr media.Transport, auto bool) *media.Participant {
	return n.joinWith(identity, tr, auto, newRecordingSignaller())
}

func (n *trunkNode) joinWith(identity string, tr media.Transport, auto bool, sig *recordingSignaller) *media.Participant {
	perms := allowAll()
	p, _, err := n.room.Join(context.Background(), media.JoinParams{
		Identity: identity, Permissions: perms, AutoSubscribe: auto, Signaller: sig, Transport: tr,
	})
	require.NoError(n.t, err)
	require.NoError(n.t, p.Start(context.Background()))
	p.Connected()
	return p
}

// publish publishes a track of kind on the node's publisher and returns
// its sid, its layer and its keyframe counter.
func (n *trunkNode) publish(cid string, kind media.Kind, ssrc uint32) (string, *media.Layer, *keyframeSource) {
	ctx := context.Background()
	require.NoError(n.t, n.pub.AddTrack(ctx, &media.AddTrackRequest{Cid: cid, Kind: kind, Source: media.SourceCamera}))
	codec := media.Codec{MimeType: "video/VP8", ClockRate: 90000}
	if kind == media.KindAudio {
		codec = media.Codec{MimeType: "audio/opus", ClockRate: 48000, Channels: 2}
	}
	src := &keyframeSource{}
	layers := make(chan *media.Layer, 1)
	n.pub.Receive(media.IncomingStream{TrackID: cid, Codec: codec, SSRC: ssrc, Source: src, Start: func(l *media.Layer) { layers <- l }})
	var layer *media.Layer
	select {
	case layer = <-layers:
	case <-time.After(5 * time.Second):
		n.t.Fatalf("%s: track %s not started", n.name, cid)
	}
	for _, e := range n.pubSig.of("published") {
		if e.cid == cid {
			return e.track.Sid, layer, src
		}
	}
	n.t.Fatalf("%s: track %s not published", n.name, cid)
	return "", nil, nil
}

// receive takes the next track the far node sends and publishes it on
// the node's far-node participant, as federation would.
func (n *trunkNode) receive() trunkTrack {
	select {
	case tr := <-n.pump.tracks:
		kind := media.KindOf(tr.s.Codec.MimeType)
		require.NoError(n.t, n.remote.AddTrack(context.Background(), &media.AddTrackRequest{Cid: tr.id, Kind: kind, Source: media.SourceCamera}))
		tr.s.TrackID = tr.id
		n.remote.Receive(tr.s)
		return tr
	case err := <-n.pump.errs:
		n.t.Fatalf("%v", err)
	case <-time.After(15 * time.Second):
		n.t.Fatalf("%s: no track from the far node", n.name)
	}
	return trunkTrack{}
}

// feeder writes a packet to every layer it has every 5 ms, on one
// goroutine (a layer is fed from one goroutine).
type feeder struct {
	mu     sync.Mutex
	layers []*feed
	stop   chan struct{}
	done   chan struct{}
}

type feed struct {
	l       *media.Layer
	kind    media.Kind
	ssrc    uint32
	payload []byte
	seq     uint16
	stopped bool
}

func newFeeder() *feeder {
	f := &feeder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			f.mu.Lock()
			for _, fd := range f.layers {
				if fd.stopped {
					continue
				}
				fd.seq++
				ts := uint32(fd.seq) * 960
				if fd.kind == media.KindVideo {
					ts = uint32(fd.seq) * 3000
				}
				pkt := rtp.Packet{
					Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: fd.seq, Timestamp: ts, SSRC: fd.ssrc, Marker: true},
					Payload: fd.payload,
				}
				b, _ := pkt.Marshal()
				fd.l.WriteRTP(b, time.Now().UnixNano())
			}
			f.mu.Unlock()
		}
	}()
	return f
}

// add feeds l with packets whose payload ends in tag (a VP8 key frame for
// video), and returns the payload.
func (f *feeder) add(l *media.Layer, kind media.Kind, ssrc uint32, tag byte) []byte {
	payload := []byte{0xfc, 0xff, 0xfe, 0x01, tag}
	if kind == media.KindVideo {
		payload = vp8KeyframePayload(200)
		payload[len(payload)-1] = tag
	}
	f.mu.Lock()
	f.layers = append(f.layers, &feed{l: l, kind: kind, ssrc: ssrc, payload: payload})
	f.mu.Unlock()
	return payload
}

// end ends a fed track, as its publisher would.
func (f *feeder) end(l *media.Layer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range f.layers {
		if fd.l == l && !fd.stopped {
			fd.stopped = true
			l.End()
		}
	}
}

func (f *feeder) close() {
	close(f.stop)
	<-f.done
}

// requireArrives waits until v has counted at least n more packets of tag
// than from, all unchanged.
func requireArrives(t *testing.T, v *viewerTransport, tag byte, from, n int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, changed := v.count(tag)
		require.Zero(t, changed, "payloads changed on the way")
		if got >= from+n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("track %#x: %d packets arrived, want %d", tag, got-from, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTrunk links two nodes' SFUs with one trunk, each a real engine with
// its own UDP port, and checks: control messages both ways; a track of
// the offerer's node arriving at the answerer's viewer unchanged; the
// answerer's tracks arriving at the offerer (receive slots asked for and
// offered), a third track added later; a track removed and another added;
// a keyframe request from the answerer's side reaching the offerer's
// publisher; and, closing both, no goroutine left.
func TestTrunk(t *testing.T) {
	base := runtime.NumGoroutine()
	want := map[byte][]byte{}
	var wantMu sync.Mutex
	a := newTrunkNode(t, "a", want)
	b := newTrunkNode(t, "b", want)
	f := newFeeder()
	setWant := func(tag byte, p []byte) {
		wantMu.Lock()
		defer wantMu.Unlock()
		a.viewer.mu.Lock()
		b.viewer.mu.Lock()
		want[tag] = p
		b.viewer.mu.Unlock()
		a.viewer.mu.Unlock()
	}

	var err error
	a.trunk, err = a.eng.NewTrunk(true, a.pump, zerolog.Nop())
	require.NoError(t, err)
	b.trunk, err = b.eng.NewTrunk(false, b.pump, zerolog.Nop())
	require.NoError(t, err)
	a.pump.far.Store(b.trunk)
	b.pump.far.Store(a.trunk)
	require.ErrorIs(t, b.trunk.Start(), ErrTrunkState)
	require.ErrorIs(t, a.trunk.Send([]byte("early")), ErrTrunkNotOpen)
	require.NoError(t, a.trunk.Start())
	for _, n := range []*trunkNode{a, b} {
		select {
		case <-n.pump.up:
		case err := <-n.pump.errs:
			t.Fatalf("%v", err)
		case err := <-n.pump.downs:
			t.Fatalf("%s down: %v", n.name, err)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: trunk not up", n.name)
		}
	}

	// (1) Control messages, both ways, and their bounds.
	require.NoError(t, a.trunk.Send([]byte(`{"hello":"b"}`)))
	require.NoError(t, b.trunk.Send([]byte(`{"hello":"a"}`)))
	big := bytes.Repeat([]byte{'x'}, MaxTrunkMessage)
	require.NoError(t, a.trunk.Send(big))
	require.ErrorIs(t, a.trunk.Send(append(big, 'x')), ErrTrunkMessageTooLarge)
	for _, c := range []struct {
		n    *trunkNode
		want []byte
	}{{b, []byte(`{"hello":"b"}`)}, {a, []byte(`{"hello":"a"}`)}, {b, big}} {
		select {
		case m := <-c.n.pump.msgs:
			require.Equal(t, c.want, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no control message", c.n.name)
		}
	}

	// The export participants, which the test subscribes to what the far
	// node wants.
	a.export = a.join("export-b", a.trunk, false)
	b.export = b.join("export-a", b.trunk, false)
	ctx := context.Background()

	// (2) The offerer's camera reaches the answerer's viewer.
	camA, layerCamA, keysA := a.publish("cam-a", media.KindVideo, 0xa1)
	setWant(0xa1, f.add(layerCamA, media.KindVideo, 0xa1, 0xa1))
	require.NoError(t, a.export.UpdateSubscription(ctx, []string{camA}, true))
	got := b.receive()
	require.Equal(t, camA, got.id, "the track arrives under its sid on the sending node")
	require.Equal(t, "video/VP8", got.s.Codec.MimeType)
	require.NotZero(t, got.s.SSRC)
	require.NotEmpty(t, got.s.Mid)
	requireArrives(t, b.viewer, 0xa1, 0, 50)
	// The offerer is the DTLS server, so it knows the SRTP keys and sends
	// directly; the answerer sends through pion.
	require.NotNil(t, a.trunk.direct.Load(), "offerer sends directly")
	require.Nil(t, b.trunk.direct.Load(), "answerer sends through pion")

	// (3) The answerer's microphone and camera reach the offerer: the
	// answerer asks for receive slots and the offerer offers them.
	micB, layerMicB, _ := b.publish("mic-b", media.KindAudio, 0xb1)
	setWant(0xb1, f.add(layerMicB, media.KindAudio, 0xb1, 0xb1))
	camB, layerCamB, _ := b.publish("cam-b", media.KindVideo, 0xb2)
	setWant(0xb2, f.add(layerCamB, media.KindVideo, 0xb2, 0xb2))
	require.NoError(t, b.export.UpdateSubscription(ctx, []string{micB, camB}, true))
	ids := map[string]bool{a.receive().id: true, a.receive().id: true}
	require.Equal(t, map[string]bool{micB: true, camB: true}, ids)
	requireArrives(t, a.viewer, 0xb1, 0, 50)
	requireArrives(t, a.viewer, 0xb2, 0, 50)
	// A third track, later.
	scrB, layerScrB, _ := b.publish("screen-b", media.KindVideo, 0xb3)
	setWant(0xb3, f.add(layerScrB, media.KindVideo, 0xb3, 0xb3))
	require.NoError(t, b.export.UpdateSubscription(ctx, []string{scrB}, true))
	require.Equal(t, scrB, a.receive().id)
	requireArrives(t, a.viewer, 0xb3, 0, 50)

	// (4) Removing a track on each side and adding another: the removed
	// track's stream ends on the far node (its reader ends the layer, the
	// track is unpublished there and the viewer unsubscribed), the new one
	// arrives, the others go on.
	removedA, removedB := a.viewer.removals(), b.viewer.removals()
	require.NoError(t, b.export.UpdateSubscription(ctx, []string{micB}, false))
	require.NoError(t, a.export.UpdateSubscription(ctx, []string{camA}, false))
	for deadline := time.Now().Add(10 * time.Second); a.viewer.removals() == removedA || b.viewer.removals() == removedB; {
		if time.Now().After(deadline) {
			t.Fatalf("removed tracks not ended on the far node: %d and %d removals", a.viewer.removals()-removedA, b.viewer.removals()-removedB)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	mic0, _ := a.viewer.count(0xb1)
	cam0, _ := b.viewer.count(0xa1)
	time.Sleep(500 * time.Millisecond)
	mic1, _ := a.viewer.count(0xb1)
	cam1, _ := b.viewer.count(0xa1)
	require.Equal(t, mic0, mic1, "the removed microphone still arrives")
	require.Equal(t, cam0, cam1, "the removed camera still arrives")
	n, _ := a.viewer.count(0xb2)
	requireArrives(t, a.viewer, 0xb2, n, 50)
	mic2B, layerMic2B, _ := b.publish("mic2-b", media.KindAudio, 0xb4)
	setWant(0xb4, f.add(layerMic2B, media.KindAudio, 0xb4, 0xb4))
	require.NoError(t, b.export.UpdateSubscription(ctx, []string{mic2B}, true))
	require.Equal(t, mic2B, a.receive().id)
	requireArrives(t, a.viewer, 0xb4, 0, 50)
	cam2A, layerCam2A, keys2A := a.publish("cam2-a", media.KindVideo, 0xa2)
	setWant(0xa2, f.add(layerCam2A, media.KindVideo, 0xa2, 0xa2))
	require.NoError(t, a.export.UpdateSubscription(ctx, []string{cam2A}, true))
	cam2 := b.receive()
	require.Equal(t, cam2A, cam2.id)
	requireArrives(t, b.viewer, 0xa2, 0, 50)

	// (5) A keyframe request on the answerer's side (its core asking the
	// trunk, the track's source) reaches the offerer's publisher as a PLI
	// on the trunk. The requests of the subscriptions' start are over and
	// the core paces them (300 ms), so the next one is ours.
	time.Sleep(time.Second)
	before := keys2A.n.Load()
	cam2.s.Source.RequestKeyframe(cam2.s.SSRC)
	deadline := time.Now().Add(5 * time.Second)
	for keys2A.n.Load() == before {
		if time.Now().After(deadline) {
			t.Fatalf("the keyframe request did not reach the publisher")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = keysA

	select {
	case err := <-a.pump.errs:
		t.Fatalf("%v", err)
	case err := <-b.pump.errs:
		t.Fatalf("%v", err)
	case err := <-a.pump.downs:
		t.Fatalf("a down: %v", err)
	case err := <-b.pump.downs:
		t.Fatalf("b down: %v", err)
	default:
	}

	// (6) The byte counts: what each side counts as sent (the offerer's
	// media on the direct path, which pion never sees, plus pion's pair
	// counters) is what the other counts as received on its own, and at
	// least the media payloads its viewer got. The feeder stops first, so
	// that little is in flight between the two readings.
	f.close()
	time.Sleep(300 * time.Millisecond)
	sentA, recvA := a.trunk.Bytes()
	sentB, recvB := b.trunk.Bytes()
	t.Logf("a sent %d (%d directly), received %d; b sent %d, received %d",
		sentA, a.trunk.direct.Load().sent.Load(), recvA, sentB, recvB)
	requireClose := func(what string, x, y uint64) {
		t.Helper()
		diff := max(x, y) - min(x, y)
		require.LessOrEqual(t, diff, 4096+max(x, y)/50, "%s: %d and %d", what, x, y)
	}
	requireClose("a sent, b received", sentA, recvB)
	requireClose("b sent, a received", sentB, recvA)
	videoA := 0
	for _, tag := range []byte{0xa1, 0xa2} {
		n, _ := b.viewer.count(tag)
		videoA += n
	}
	require.Greater(t, a.trunk.direct.Load().sent.Load(), uint64(videoA*(200+12)), "the offerer's media counted on the direct path")
	videoB := 0
	for _, tag := range []byte{0xb2, 0xb3} {
		n, _ := a.viewer.count(tag)
		videoB += n
	}
	require.Greater(t, sentB, uint64(videoB*(200+12)), "the answerer's media counted by pion")

	// (7) Closing: the answerer sees the offerer go, the offerer reports
	// nothing after its own Close, and nothing is left running. Bytes then
	// keeps the counts Close found.
	a.trunk.Close()
	finalA, _ := a.trunk.Bytes()
	require.GreaterOrEqual(t, finalA, sentA, "the counts survive Close")
	select {
	case err := <-b.pump.downs:
		require.ErrorIs(t, err, ErrTrunkPeerClosed)
	case <-time.After(15 * time.Second):
		t.Fatalf("b was not told that a closed the trunk")
	}
	b.trunk.Close()
	require.Empty(t, a.pump.downs)
	require.ErrorIs(t, a.trunk.Send([]byte("late")), ErrTrunkClosed)
	for _, n := range []*trunkNode{a, b} {
		n.sfu.Close()
		_ = n.eng.Close() // the mux closed the socket already
		n.pump.close()
	}
	requireGoroutinesBack(t, base, 10*time.Second)
}

// TestTrunkTrickledCandidates: a trunk whose first descriptions carry no
// candidate connects with the candidates sent apart, before the
// descriptions (queued until then), as federation may carry them.
func TestTrunkTrickledCandidates(t *testing.T) {
	var trunks [2]*Trunk
	var pumps [2]*trunkPump
	for i := range trunks {
		eng := newTestEngine(t)
		pumps[i] = newTrunkPump(fmt.Sprint("node", i))
		pumps[i].trickle = true
		defer pumps[i].close()
		var err error
		trunks[i], err = eng.NewTrunk(i == 0, pumps[i], zerolog.Nop())
		require.NoError(t, err)
		defer trunks[i].Close()
	}
	pumps[0].far.Store(trunks[1])
	pumps[1].far.Store(trunks[0])
	require.NoError(t, trunks[0].Start())
	for _, p := range pumps {
		select {
		case <-p.up:
		case err := <-p.errs:
			t.Fatalf("%v", err)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: trunk not up", p.name)
		}
	}
	for _, p := range pumps {
		require.NotZero(t, p.apart.Load(), "%s sent no candidate apart", p.name)
	}
	require.NoError(t, trunks[1].Send([]byte("hello")))
	select {
	case m := <-pumps[0].msgs:
		require.Equal(t, "hello", string(m))
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
}
