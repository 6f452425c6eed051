package federation

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"

	"entente.dev/entente/media"
)

// An in-process stand-in for media/rtc.Trunk, for tests of the links'
// logic: two fakeConns joined as a pair hand control messages to each
// other, and a down track added on one side becomes a stream on the
// other, its packets marshalled and fed to the far layer. The tests in
// test/e2e run the real trunk between real nodes.

type fakeWire struct {
	mu    sync.Mutex
	conns [2]*fakeConn
}

type fakeConn struct {
	wire *fakeWire
	side int
	ev   ConnEvents

	mu      sync.Mutex
	closed  bool
	started bool
	sinks   map[*media.DownTrack]*fakeSink
	p       *media.Participant

	// sent and received count what crossed the fake wire: control
	// messages and marshalled RTP packets.
	sent, received atomic.Uint64
}

func (c *fakeConn) Bytes() (sent, received uint64) { return c.sent.Load(), c.received.Load() }

func (c *fakeConn) far() *fakeConn {
	c.wire.mu.Lock()
	defer c.wire.mu.Unlock()
	return c.wire.conns[1-c.side]
}

func (c *fakeConn) Attach(p *media.Participant) error {
	c.mu.Lock()
	c.p = p
	c.mu.Unlock()
	return nil
}

func (c *fakeConn) Start() error {
	c.ev.SendDescription("offer", "fake offer")
	return nil
}

func (c *fakeConn) HandleDescription(typ, sdp string) error {
	if typ == "offer" {
		c.ev.SendDescription("answer", "fake answer")
	}
	c.up()
	if f := c.far(); f != nil {
		f.up()
	}
	return nil
}

func (c *fakeConn) up() {
	c.mu.Lock()
	was := c.started
	c.started = true
	c.mu.Unlock()
	if !was {
		c.p.Connected()
		c.ev.Up()
	}
}

func (c *fakeConn) HandleCandidate(string, string, uint16) error { return nil }

func (c *fakeConn) Send(b []byte) error {
	f := c.far()
	if f == nil {
		return errors.New("no far end")
	}
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if !closed {
		c.sent.Add(uint64(len(b)))
		f.received.Add(uint64(len(b)))
		f.ev.Message(append([]byte(nil), b...))
	}
	return nil
}

func (c *fakeConn) AddDownTrack(d *media.DownTrack) error {
	s := &fakeSink{d: d, ssrc: uint32(len(d.ID())) + 1000, conn: c}
	c.mu.Lock()
	c.sinks[d] = s
	c.mu.Unlock()
	d.Bind(s)
	if f := c.far(); f != nil {
		f.ev.Track(d.ID(), media.IncomingStream{
			Codec: d.Codec(), SSRC: s.ssrc, Source: s,
			Start: func(l *media.Layer) { s.layer.Store(l) },
		})
	}
	return nil
}

func (c *fakeConn) RemoveDownTrack(d *media.DownTrack) {
	c.mu.Lock()
	s := c.sinks[d]
	delete(c.sinks, d)
	c.mu.Unlock()
	if s != nil {
		if l := s.layer.Swap(nil); l != nil {
			l.End()
		}
	}
}

func (c *fakeConn) Negotiate()                      {}
func (c *fakeConn) SendData(media.DataKind, []byte) {}

func (c *fakeConn) Close() {
	c.mu.Lock()
	c.closed = true
	sinks := c.sinks
	c.sinks = map[*media.DownTrack]*fakeSink{}
	c.mu.Unlock()
	for _, s := range sinks {
		if l := s.layer.Swap(nil); l != nil {
			l.End()
		}
	}
}

// fakeSink carries one exported down track to the far layer and records
// the largest payload it carried (the tests' layers differ in size).
type fakeSink struct {
	d       *media.DownTrack
	conn    *fakeConn
	ssrc    uint32
	layer   atomic.Pointer[media.Layer]
	packets atomic.Uint64
	largest atomic.Int64
	buf     []byte
}

func (s *fakeSink) WriteRTP(h *rtp.Header, payload []byte, _ uint32, _ *media.Fanout) error {
	l := s.layer.Load()
	if l == nil {
		return nil
	}
	h.SSRC = s.ssrc
	pkt := rtp.Packet{Header: *h, Payload: payload}
	b, err := pkt.Marshal()
	if err != nil {
		return err
	}
	s.packets.Add(1)
	s.conn.sent.Add(uint64(len(b)))
	if f := s.conn.far(); f != nil {
		f.received.Add(uint64(len(b)))
	}
	if n := int64(len(payload)); n > s.largest.Load() {
		s.largest.Store(n)
	}
	l.WriteRTP(b, time.Now().UnixNano())
	return nil
}

// RequestKeyframe is the far layer's keyframe request crossing back. It
// arrives later, as over a network: the far layer may ask while this
// sink's down track is writing to it (its lock held).
func (s *fakeSink) RequestKeyframe(uint32) { go s.d.RequestKeyframe() }

// fakeNet routes to-device messages between nodes, as the bots'
// homeservers would, with the sender set by the "homeserver".
type fakeNet struct {
	mu    sync.Mutex
	nodes map[string]*Node // by bot
	wires map[string]*fakeWire
	sent  atomic.Int64
}

type fakeSignal struct {
	net *fakeNet
	bot string
}

func (s fakeSignal) SendToDevice(_ context.Context, userID, _, eventType string, content any) error {
	b, err := json.Marshal(content)
	if err != nil {
		return err
	}
	s.net.sent.Add(1)
	s.net.mu.Lock()
	n := s.net.nodes[userID]
	s.net.mu.Unlock()
	if n != nil {
		n.HandleToDevice(ToDevice{Sender: s.bot, Type: eventType, Content: b})
	}
	return nil
}

// newConn returns the NewConn of one node: the conns of one call (by
// creation order: the offerer makes the wire, the answerer joins it).
func (f *fakeNet) newConn(side int) NewConn {
	return func(offerer bool, ev ConnEvents, _ zerolog.Logger) (Conn, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		w := f.wires["call"]
		if offerer || w == nil {
			w = &fakeWire{}
			f.wires["call"] = w
		}
		c := &fakeConn{wire: w, side: side, ev: ev, sinks: map[*media.DownTrack]*fakeSink{}}
		w.mu.Lock()
		w.conns[side] = c
		w.mu.Unlock()
		return c, nil
	}
}

// staticCalls is a Calls with a fixed list and joined set.
type staticCalls struct {
	mu     sync.Mutex
	calls  []Call
	joined map[string]bool // room|user
}

func (s *staticCalls) ActiveCalls(context.Context) ([]Call, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...), nil
}

func (s *staticCalls) Joined(_ context.Context, room, user string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.joined[room+"|"+user], nil
}
