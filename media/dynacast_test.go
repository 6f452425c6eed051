package media

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// qualityUpdate is one SendSubscribedQualities call.
type qualityUpdate struct {
	at      time.Time
	track   string
	mime    string
	enabled [3]bool
}

// qualitySignaller is a recordingSignaller that is also a
// QualitySignaller, recording what its publisher is told to send.
type qualitySignaller struct {
	*recordingSignaller
	mu      sync.Mutex
	updates []qualityUpdate
}

var _ QualitySignaller = (*qualitySignaller)(nil)

func (q *qualitySignaller) SendSubscribedQualities(track, mime string, enabled [3]bool) {
	q.mu.Lock()
	q.updates = append(q.updates, qualityUpdate{at: time.Now(), track: track, mime: mime, enabled: enabled})
	q.mu.Unlock()
}

func (q *qualitySignaller) all() []qualityUpdate {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]qualityUpdate(nil), q.updates...)
}

// dynacastRoom is a room whose SFU uses short dynacast delays, with a
// publisher whose Signaller records quality updates and that publishes a
// three-layer simulcast VP8 track.
type dynacastRoom struct {
	r     *Room
	pub   *Participant
	sig   *qualitySignaller
	up    *UpTrack
	layer [3]*Layer
}

const (
	testPauseDelay  = time.Second
	testInitialWait = 2 * time.Second
)

func newDynacastRoom(t *testing.T, rids ...string) *dynacastRoom {
	t.Helper()
	cfg := testConfig()
	cfg.DynacastPauseDelay, cfg.DynacastInitialWait = testPauseDelay, testInitialWait
	s := New(cfg, zerolog.Nop(), nil)
	t.Cleanup(s.Close)
	r, err := s.Room("dynacast", true)
	require.NoError(t, err)
	ctx := context.Background()
	dr := &dynacastRoom{r: r, sig: &qualitySignaller{recordingSignaller: newRecordingSignaller()}}
	dr.pub, _, err = r.Join(ctx, JoinParams{Identity: "pub", Permissions: allowAll(), Signaller: dr.sig, Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, dr.pub.Start(ctx))
	req := &AddTrackRequest{Cid: "cam", Kind: KindVideo}
	if len(rids) > 0 {
		req.Layers = []VideoLayer{{Quality: QualityLow}, {Quality: QualityMedium}, {Quality: QualityHigh}}
	}
	require.NoError(t, dr.pub.AddTrack(ctx, req))
	started := make(chan *Layer, 3)
	if len(rids) == 0 {
		rids = []string{""}
	}
	for i, rid := range rids {
		dr.pub.Receive(IncomingStream{TrackID: "cam", Codec: Codec{MimeType: "video/VP8", ClockRate: 90000}, RID: rid,
			SSRC: uint32(10 + i), Start: func(l *Layer) { started <- l }})
	}
	for range rids {
		select {
		case l := <-started:
			dr.layer[l.idx] = l
		case <-time.After(5 * time.Second):
			t.Fatal("a layer never started")
		}
	}
	dr.up = dr.layer[0].Track()
	return dr
}

// join adds a participant that subscribes to nothing by itself.
func (dr *dynacastRoom) join(t *testing.T, identity string, kind ParticipantKind) *Participant {
	t.Helper()
	ctx := context.Background()
	p, _, err := dr.r.Join(ctx, JoinParams{Identity: identity, Kind: kind, Permissions: allowAll(),
		Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, p.Start(ctx))
	return p
}

// next waits for the update after the n first ones and returns it with
// how long after since it came.
func (dr *dynacastRoom) next(t *testing.T, n int, since time.Time, within time.Duration) (qualityUpdate, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if u := dr.sig.all(); len(u) > n {
			require.Len(t, u, n+1, "one update at a time: %+v", u[n:])
			return u[n], u[n].at.Sub(since)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no update %d within %s; updates: %+v", n+1, within, dr.sig.all())
	return qualityUpdate{}, 0
}

// quiet checks that no update beyond the n first comes for d.
func (dr *dynacastRoom) quiet(t *testing.T, n int, d time.Duration, why string) {
	t.Helper()
	time.Sleep(d)
	u := dr.sig.all()
	require.Len(t, u, n, "%s: %+v", why, u[min(n, len(u)):])
}

var (
	allOn   = [3]bool{true, true, true}
	lowOnly = [3]bool{true, false, false}
	lowMid  = [3]bool{true, true, false}
	allOff  = [3]bool{}
)

// TestDynacastFollowsSubscribers: the publisher is told the layers up to
// the highest one anyone subscribes to (the lowest one always, while
// anyone does), at once when that rises, only after the pause delay when
// it falls (and then what is wanted at that moment, once, however the
// subscribers flipped meanwhile), never twice the same; a track nobody
// subscribes to is turned off after the initial wait, as livekit-server
// does.
func TestDynacastFollowsSubscribers(t *testing.T) {
	ctx := context.Background()
	published := time.Now() // a little before the track is
	dr := newDynacastRoom(t, "q", "h", "f")

	// Nobody subscribes: nothing until the initial wait, then all off.
	dr.quiet(t, 0, testInitialWait/2, "before the initial wait")
	u, after := dr.next(t, 0, published, 2*testInitialWait)
	require.Equal(t, allOff, u.enabled, "nobody subscribes")
	require.Equal(t, dr.up.SID(), u.track)
	require.Equal(t, "video/VP8", u.mime)
	require.GreaterOrEqual(t, after, testInitialWait)
	t.Logf("first update (nobody subscribed) %s after publication", after.Round(time.Microsecond))

	// A subscriber: a new subscription wants the best layer, sent at once.
	alice := dr.join(t, "alice", ParticipantStandard)
	asked := time.Now()
	require.NoError(t, alice.UpdateSubscription(ctx, []string{dr.up.SID()}, true))
	u, after = dr.next(t, 1, asked, testPauseDelay/2)
	require.Equal(t, allOn, u.enabled)
	t.Logf("rise sent %s after the subscription", after.Round(time.Microsecond))

	// Down to the low layer: only after the pause delay.
	asked = time.Now()
	require.NoError(t, alice.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{dr.up.SID()}, Quality: QualityLow}))
	dr.quiet(t, 2, testPauseDelay/2, "a fall waits")
	u, after = dr.next(t, 2, asked, 3*testPauseDelay)
	require.Equal(t, lowOnly, u.enabled)
	require.GreaterOrEqual(t, after, testPauseDelay)
	t.Logf("fall sent %s after the request", after.Round(time.Microsecond))

	// Flipping: up (at once), then down, up to medium, down again within
	// the delay: one update, after the delay, with the last wish.
	require.NoError(t, alice.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{dr.up.SID()}, Quality: QualityHigh}))
	u, _ = dr.next(t, 3, time.Now(), testPauseDelay/2)
	require.Equal(t, allOn, u.enabled)
	asked = time.Now()
	for _, q := range []VideoQuality{QualityLow, QualityMedium, QualityLow, QualityMedium} {
		require.NoError(t, alice.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{dr.up.SID()}, Quality: q}))
		time.Sleep(testPauseDelay / 8)
	}
	u, after = dr.next(t, 4, asked, 3*testPauseDelay)
	require.Equal(t, lowMid, u.enabled, "the wish when the delay ran out")
	require.GreaterOrEqual(t, after, testPauseDelay)
	dr.quiet(t, 5, 2*testPauseDelay, "nothing changed since")

	// A second subscriber (at once on the best layer, then low), and a
	// federation trunk's export participant pinning the high layer: the
	// highest wish counts.
	bob := dr.join(t, "bob", ParticipantStandard)
	require.NoError(t, bob.UpdateSubscription(ctx, []string{dr.up.SID()}, true))
	require.NoError(t, bob.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{dr.up.SID()}, Quality: QualityLow}))
	trunk := dr.join(t, "trunk", ParticipantBridge)
	require.NoError(t, trunk.SetLayers(ctx, dr.up.SID(), 0b100))
	u, _ = dr.next(t, 5, time.Now(), 3*testPauseDelay)
	require.Equal(t, allOn, u.enabled, "a pinned layer counts")
	require.Zero(t, dr.up.DemandMask()&0b100, "while DemandMask, for the trunk's own asks, ignores it")

	// The trunk pauses the high layer, alice hides her tile: bob's low
	// layer is what is left.
	asked = time.Now()
	require.NoError(t, trunk.SetLayers(ctx, dr.up.SID(), 0))
	require.NoError(t, alice.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{dr.up.SID()}, Disabled: true}))
	u, after = dr.next(t, 6, asked, 3*testPauseDelay)
	require.Equal(t, lowOnly, u.enabled, "the lowest layer stays on while anyone watches")
	require.GreaterOrEqual(t, after, testPauseDelay)

	// Bob leaves: nobody watches, all off after the delay.
	asked = time.Now()
	bob.Leave()
	u, after = dr.next(t, 7, asked, 3*testPauseDelay)
	require.Equal(t, allOff, u.enabled)
	require.GreaterOrEqual(t, after, testPauseDelay)

	// The trunk asks for the medium layer alone: it and the one below.
	require.NoError(t, trunk.SetLayers(ctx, dr.up.SID(), 0b010))
	u, _ = dr.next(t, 8, time.Now(), testPauseDelay/2)
	require.Equal(t, lowMid, u.enabled)
	dr.quiet(t, 9, 2*testPauseDelay, "nothing changed since")
}

// TestDynacastFirstSubscriber: a track subscribed to before the initial
// wait is reported at once, and nothing goes out while the track is
// muted; unmuting reports the current wish at once.
func TestDynacastFirstSubscriber(t *testing.T) {
	ctx := context.Background()
	dr := newDynacastRoom(t, "q", "h", "f")
	alice := dr.join(t, "alice", ParticipantStandard)
	asked := time.Now()
	require.NoError(t, alice.UpdateSubscription(ctx, []string{dr.up.SID()}, true))
	u, after := dr.next(t, 0, asked, testInitialWait/2)
	require.Equal(t, allOn, u.enabled)
	t.Logf("first update %s after the first subscription", after.Round(time.Microsecond))

	require.NoError(t, dr.pub.SetMuted(ctx, dr.up.SID(), true))
	require.NoError(t, alice.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{dr.up.SID()}, Quality: QualityLow}))
	dr.quiet(t, 1, 2*testPauseDelay, "a muted track is told nothing")
	asked = time.Now()
	require.NoError(t, dr.pub.SetMuted(ctx, dr.up.SID(), false))
	u, after = dr.next(t, 1, asked, testPauseDelay/2)
	require.Equal(t, lowOnly, u.enabled, "unmuting sends the wish at once")
	t.Logf("unmute update %s after unmuting", after.Round(time.Microsecond))
}

// TestDynacastSingleLayer: a video track of one layer is the low quality
// (livekit-client reads an encoding without RID as "q"): on while anyone
// subscribes, whatever quality they ask, off when nobody does.
func TestDynacastSingleLayer(t *testing.T) {
	ctx := context.Background()
	dr := newDynacastRoom(t)
	alice := dr.join(t, "alice", ParticipantStandard)
	require.NoError(t, alice.UpdateSubscription(ctx, []string{dr.up.SID()}, true))
	u, _ := dr.next(t, 0, time.Now(), testInitialWait/2)
	require.Equal(t, lowOnly, u.enabled)
	require.NoError(t, alice.UpdateSubscription(ctx, []string{dr.up.SID()}, false))
	u, _ = dr.next(t, 1, time.Now(), 3*testPauseDelay)
	require.Equal(t, allOff, u.enabled)
}
