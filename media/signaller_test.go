package media

import (
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// sigEvent is one call made on a recordingSignaller.
type sigEvent struct {
	kind     string // offer (a fakeTransport's Negotiate), participants, published, speakers, leave
	cid      string
	track    *TrackInfo
	reason   DisconnectReason
	action   LeaveAction
	infos    []*ParticipantInfo
	mids     map[string]string
	speakers []SpeakerInfo
}

// recordingSignaller is a Signaller that records every call, in order, and
// wakes whoever waits on notify. Like the real ones it never blocks.
type recordingSignaller struct {
	mu     sync.Mutex
	events []sigEvent
	notify chan struct{}
}

var _ Signaller = (*recordingSignaller)(nil)

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

func (r *recordingSignaller) SendParticipants(infos []*ParticipantInfo) {
	r.push(sigEvent{kind: "participants", infos: infos})
}

func (r *recordingSignaller) SendTrackPublished(cid string, info *TrackInfo) {
	r.push(sigEvent{kind: "published", cid: cid, track: info})
}

func (r *recordingSignaller) SendSpeakers(speakers []SpeakerInfo) {
	r.push(sigEvent{kind: "speakers", speakers: speakers})
}

func (r *recordingSignaller) SendLeave(reason DisconnectReason, action LeaveAction) {
	r.push(sigEvent{kind: "leave", reason: reason, action: action})
}

// testConfig is an SFU whose rooms are made on demand.
func testConfig() Config {
	return Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}
}

// newTestSFU returns an SFU closed when the test ends.
func newTestSFU(tb testing.TB) *SFU {
	tb.Helper()
	s := New(testConfig(), zerolog.Nop(), nil)
	tb.Cleanup(s.Close)
	return s
}

// fakeTransport is a Transport with no network, for tests of the room's
// logic: it binds each down track to a sink that counts, and records a
// Negotiate as an "offer" event, with the track sids it carries, in rec.
// media/rtc's tests and test/e2e use real WebRTC clients.
type fakeTransport struct {
	rec *recordingSignaller // nil: nothing recorded

	mu     sync.Mutex
	p      *Participant
	downs  map[string]*DownTrack
	sinks  map[string]*discardSink
	data   [][]byte
	closed bool
}

func newFakeTransport(rec *recordingSignaller) *fakeTransport {
	return &fakeTransport{rec: rec, downs: map[string]*DownTrack{}, sinks: map[string]*discardSink{}}
}

func (f *fakeTransport) Attach(p *Participant) error {
	f.mu.Lock()
	f.p = p
	f.mu.Unlock()
	return nil
}

func (f *fakeTransport) AddDownTrack(d *DownTrack) error {
	s := &discardSink{}
	f.mu.Lock()
	f.downs[d.ID()], f.sinks[d.ID()] = d, s
	f.mu.Unlock()
	d.Bind(s)
	return nil
}

func (f *fakeTransport) RemoveDownTrack(d *DownTrack) {
	f.mu.Lock()
	delete(f.downs, d.ID())
	f.mu.Unlock()
	d.Unbind()
}

func (f *fakeTransport) Negotiate() {
	f.mu.Lock()
	mids := map[string]string{}
	for sid := range f.downs {
		mids["m"+sid] = sid
	}
	f.mu.Unlock()
	if f.rec != nil {
		f.rec.push(sigEvent{kind: "offer", mids: mids})
	}
}

func (f *fakeTransport) SendData(_ DataKind, data []byte) {
	f.mu.Lock()
	f.data = append(f.data, append([]byte(nil), data...))
	f.mu.Unlock()
}

func (f *fakeTransport) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

// allowAll is what a default LiveKit join token grants.
func allowAll() Permissions {
	return Permissions{CanPublish: true, CanSubscribe: true, CanPublishData: true}
}
