package media

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRemoteParticipant covers what the core keeps for federation: a
// participant that joined at another node carries its origin in every
// snapshot, speaks as its node reports (and only as it reports), and its
// track's demand follows what this node's subscribers ask for.
func TestRemoteParticipant(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("fed", true)
	require.NoError(t, err)
	ctx := context.Background()

	remote, _, err := r.Join(ctx, JoinParams{Identity: "@bob:b.example:DEV", Origin: "b.example",
		Permissions: Permissions{CanPublish: true}, Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, remote.Start(ctx))
	require.Equal(t, "b.example", remote.Origin())
	require.NoError(t, remote.AddTrack(ctx, &AddTrackRequest{Cid: "TR_cam", Kind: KindVideo,
		Layers: []VideoLayer{{Quality: QualityLow}, {Quality: QualityMedium}, {Quality: QualityHigh}}}))
	layers := make(chan *Layer, 1)
	remote.Receive(IncomingStream{TrackID: "TR_cam", Codec: Codec{MimeType: "video/VP8", ClockRate: 90000}, SSRC: 9,
		Start: func(l *Layer) { layers <- l }})
	var up *UpTrack
	select {
	case l := <-layers:
		up = l.Track()
	case <-time.After(5 * time.Second):
		t.Fatal("the remote stream never started")
	}
	require.Zero(t, up.DemandMask(), "nobody here subscribes")

	sig := newRecordingSignaller()
	local, join, err := r.Join(ctx, JoinParams{Identity: "alice", Permissions: allowAll(), Signaller: sig, Transport: newFakeTransport(sig)})
	require.NoError(t, err)
	require.Len(t, join.Others, 1)
	require.Equal(t, "b.example", join.Others[0].Origin, "the snapshot says where the participant joined")
	require.Empty(t, join.Participant.Origin, "a local participant has no origin")
	require.NoError(t, local.Start(ctx))
	require.Equal(t, []Connection{{Room: "fed", Identity: "@bob:b.example:DEV", Origin: "b.example"}, {Room: "fed", Identity: "alice"}},
		s.Connections(ctx), "the connection list says who joined elsewhere")
	require.NoError(t, local.UpdateSubscription(ctx, []string{up.SID()}, true))
	require.Eventually(t, func() bool { return up.DemandMask() == 0b100 }, 5*time.Second, 10*time.Millisecond,
		"a new subscription wants the best layer")
	require.NoError(t, local.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{up.SID()}, Quality: QualityLow}))
	require.Eventually(t, func() bool { return up.DemandMask() == 0b001 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, local.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{up.SID()}, Disabled: true}))
	require.Eventually(t, func() bool { return up.DemandMask() == 0 }, 5*time.Second, 10*time.Millisecond,
		"a hidden tile wants nothing")

	// Speaking: the remote node's report, merged at the room's tick.
	local.ReportSpeaking(0.9) // ignored: the room measures its own participants
	remote.ReportSpeaking(0.5)
	speaker := func(active bool) bool {
		for _, e := range sig.of("speakers") {
			for _, sp := range e.speakers {
				if sp.Sid == local.SID() {
					t.Errorf("a local participant's report counted")
				}
				if sp.Sid == remote.SID() && sp.Active == active {
					return true
				}
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return speaker(true) }, 5*time.Second, 20*time.Millisecond)
	remote.ReportSpeaking(0)
	require.Eventually(t, func() bool { return speaker(false) }, 5*time.Second, 20*time.Millisecond)
}

// TestPinnedLayers: a bridge participant asks for layers of a simulcast
// track one by one: each crosses as a stream of its own carrying only its
// layer; a layer taken out of the mask is paused, not removed; the
// node's own subscribers' wishes (DemandMask) ignore the pinned streams;
// the track's end removes them all.
func TestPinnedLayers(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("pinned", true)
	require.NoError(t, err)
	ctx := context.Background()
	pub, _, err := r.Join(ctx, JoinParams{Identity: "pub", Permissions: allowAll(), Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, pub.Start(ctx))
	require.NoError(t, pub.AddTrack(ctx, &AddTrackRequest{Cid: "cam", Kind: KindVideo,
		Layers: []VideoLayer{{Quality: QualityLow}, {Quality: QualityMedium}, {Quality: QualityHigh}}}))
	layers := make(chan *Layer, 3)
	plis := &countingSource{}
	for i, rid := range []string{"q", "h", "f"} {
		pub.Receive(IncomingStream{TrackID: "cam", Codec: Codec{MimeType: "video/VP8", ClockRate: 90000}, RID: rid, SSRC: uint32(10 + i),
			Source: plis, Start: func(l *Layer) { layers <- l }})
	}
	var ls [3]*Layer
	for range 3 {
		select {
		case l := <-layers:
			ls[l.idx] = l
		case <-time.After(5 * time.Second):
			t.Fatal("a layer never started")
		}
	}
	up := ls[0].Track()

	bt := newFakeTransport(nil)
	bridge, _, err := r.Join(ctx, JoinParams{Identity: "trunk", Kind: ParticipantBridge,
		Permissions: Permissions{CanSubscribe: true, Hidden: true}, Signaller: newRecordingSignaller(), Transport: bt})
	require.NoError(t, err)
	require.NoError(t, bridge.Start(ctx))
	bridge.Connected()
	require.NoError(t, bridge.SetLayers(ctx, up.SID(), 0b101))
	bt.mu.Lock()
	require.ElementsMatch(t, []string{PinnedID(up.SID(), QualityLow), PinnedID(up.SID(), QualityHigh)}, keysOf(bt.downs))
	bt.mu.Unlock()
	sid, q, ok := ParsePinnedID(PinnedID(up.SID(), QualityHigh))
	require.True(t, ok)
	require.Equal(t, up.SID(), sid)
	require.Equal(t, QualityHigh, q)
	_, _, ok = ParsePinnedID(up.SID())
	require.False(t, ok)

	now := time.Now().UnixNano()
	seq := [3]uint16{100, 200, 300}
	feed := func(frames int) {
		for range frames {
			for i, l := range ls {
				l.WriteRTP(vp8Packet(t, seq[i], true, byte(i)), now)
				seq[i]++
			}
		}
	}
	count := func(layer VideoQuality) int {
		bt.mu.Lock()
		defer bt.mu.Unlock()
		return bt.sinks[PinnedID(up.SID(), layer)].packets
	}
	feed(5)
	require.Equal(t, 5, count(QualityLow), "the low stream carries the low layer's packets, all of them")
	require.Equal(t, 5, count(QualityHigh), "the high stream carries the high layer's packets only")

	require.NoError(t, bridge.SetLayers(ctx, up.SID(), 0b001))
	feed(5)
	require.Equal(t, 10, count(QualityLow))
	require.Equal(t, 5, count(QualityHigh), "a layer out of the mask is paused")
	bt.mu.Lock()
	require.Len(t, bt.downs, 2, "and kept")
	bt.mu.Unlock()
	require.Zero(t, up.DemandMask(), "pinned streams are not this node's subscribers")
	bt.mu.Lock()
	high, low := bt.downs[PinnedID(up.SID(), QualityHigh)], bt.downs[PinnedID(up.SID(), QualityLow)]
	bt.mu.Unlock()
	time.Sleep(keyframeInterval) // past the pacing of the requests made so far
	highBefore, lowBefore := plis.count(12), plis.count(10)
	high.RequestKeyframe()
	require.Equal(t, highBefore, plis.count(12), "a paused stream asks for no keyframe: it would spend the publisher's budget for nothing")
	low.RequestKeyframe()
	require.Equal(t, lowBefore+1, plis.count(10), "a pinned stream asks for its own layer's keyframe")

	sub, _, err := r.Join(ctx, JoinParams{Identity: "sub", Permissions: allowAll(), Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, sub.Start(ctx))
	require.NoError(t, sub.UpdateSubscription(ctx, []string{up.SID()}, true))
	require.NoError(t, sub.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{up.SID()}, Quality: QualityMedium}))
	require.Equal(t, uint8(0b010), up.DemandMask())

	pub.Leave()
	require.Eventually(t, func() bool {
		bt.mu.Lock()
		defer bt.mu.Unlock()
		return len(bt.downs) == 0
	}, 5*time.Second, 10*time.Millisecond, "the track's end removes every pinned stream")
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// countingSource counts keyframe requests per SSRC.
type countingSource struct {
	mu sync.Mutex
	n  map[uint32]int
}

func (c *countingSource) RequestKeyframe(ssrc uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[uint32]int{}
	}
	c.n[ssrc]++
}

func (c *countingSource) count(ssrc uint32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[ssrc]
}
