package rtc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// sigEvent is one call made on a recordingSignaller.
type sigEvent struct {
	kind   string // offer, answer, candidate, participants, published, speakers, leave
	sd     webrtc.SessionDescription
	id     uint32
	cand   *webrtc.ICECandidateInit
	target Target
	cid    string
	track  *media.TrackInfo
	reason media.DisconnectReason
	action media.LeaveAction
	infos  []*media.ParticipantInfo
	mids   map[string]string
}

// recordingSignaller is a Signaller that records every call, in order, and
// wakes whoever waits on notify. Like the real ones it never blocks.
type recordingSignaller struct {
	mu     sync.Mutex
	events []sigEvent
	notify chan struct{}
}

var (
	_ Signaller       = (*recordingSignaller)(nil)
	_ media.Signaller = (*recordingSignaller)(nil)
)

func newRecordingSignaller() *recordingSignaller {
	return &recordingSignaller{notify: make(chan struct{}, 1)}
}

func (r *recordingSignaller) push(e sigEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// since returns the events after *cursor and advances it.
func (r *recordingSignaller) since(cursor *int) []sigEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]sigEvent(nil), r.events[*cursor:]...)
	*cursor = len(r.events)
	return out
}

// of returns every event of one kind recorded so far.
func (r *recordingSignaller) of(kind string) []sigEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sigEvent
	for _, e := range r.events {
		if e.kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (r *recordingSignaller) SendOffer(sd webrtc.SessionDescription, id uint32, mids map[string]string) {
	r.push(sigEvent{kind: "offer", sd: sd, id: id, mids: mids})
}

func (r *recordingSignaller) SendAnswer(sd webrtc.SessionDescription, id uint32) {
	r.push(sigEvent{kind: "answer", sd: sd, id: id})
}

func (r *recordingSignaller) SendCandidate(c *webrtc.ICECandidateInit, target Target) {
	r.push(sigEvent{kind: "candidate", cand: c, target: target})
}

func (r *recordingSignaller) SendParticipants(infos []*media.ParticipantInfo) {
	r.push(sigEvent{kind: "participants", infos: infos})
}

func (r *recordingSignaller) SendTrackPublished(cid string, info *media.TrackInfo) {
	r.push(sigEvent{kind: "published", cid: cid, track: info})
}

func (r *recordingSignaller) SendSpeakers([]media.SpeakerInfo) {
	r.push(sigEvent{kind: "speakers"})
}

func (r *recordingSignaller) SendLeave(reason media.DisconnectReason, action media.LeaveAction) {
	r.push(sigEvent{kind: "leave", reason: reason, action: action})
}

// testConfig is an SFU whose rooms are made on demand.
func testConfig() media.Config {
	return media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}
}

// newTestEngine is an engine on a free loopback UDP port, closed when the
// test ends (after the SFUs made later, whose cleanups run first).
func newTestEngine(tb testing.TB) *Engine {
	tb.Helper()
	e, err := NewEngine(Config{BindAddress: net.IPv4(127, 0, 0, 1), IncludeLoopback: true}, zerolog.Nop())
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

// newTestSFU returns an SFU and its engine, closed when the test ends.
func newTestSFU(tb testing.TB) (*media.SFU, *Engine) {
	tb.Helper()
	e := newTestEngine(tb)
	s := media.New(testConfig(), zerolog.Nop(), nil)
	tb.Cleanup(s.Close)
	return s, e
}

// join adds a participant with a new transport of e, signalling to sig.
func join(tb testing.TB, e *Engine, room *media.Room, jp media.JoinParams, sig *recordingSignaller) (*media.Participant, *Transport) {
	tb.Helper()
	t := e.NewTransport(sig, zerolog.Nop())
	jp.Signaller, jp.Transport = sig, t
	p, _, err := room.Join(context.Background(), jp)
	require.NoError(tb, err)
	return p, t
}

// allowAll is what a default LiveKit join token grants.
func allowAll() media.Permissions {
	return media.Permissions{CanPublish: true, CanSubscribe: true, CanPublishData: true}
}
