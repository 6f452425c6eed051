package rtc

import (
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"

	"entente.dev/entente/media"
)

// sendConn is what a connection that sends down tracks (a participant's
// subscriber connection, a federation trunk) shares with its tracks and
// sinks: the engine, a logger, and the direct path once it is known.
type sendConn struct {
	eng *Engine
	log zerolog.Logger
	// direct, set once the connection is connected and before its first
	// packet, sends its RTP without pion (direct.go).
	direct atomic.Pointer[directPath]
}

// localTrack is a subscription as pion negotiates it: a webrtc.TrackLocal
// on a connection that sends. Each Bind (an answer accepting it, with an
// SSRC of its own) gives the down track a new sink.
type localTrack struct {
	c      *sendConn
	d      *media.DownTrack
	kind   webrtc.RTPCodecType
	sender *webrtc.RTPSender

	mu    sync.Mutex
	ssrc  uint32
	bound bool
	sink  *sink // the newest one
}

func newLocalTrack(c *sendConn, d *media.DownTrack) *localTrack {
	kind := webrtc.RTPCodecTypeAudio
	if d.Kind() == media.KindVideo {
		kind = webrtc.RTPCodecTypeVideo
	}
	return &localTrack{c: c, d: d, kind: kind}
}

// ID is the track sid, which clients read as the track id.
func (l *localTrack) ID() string { return l.d.ID() }

// RID is empty: a subscriber always gets one stream.
func (l *localTrack) RID() string { return "" }

// StreamID is "PA_publisher|TR_track", the form LiveKit clients parse.
func (l *localTrack) StreamID() string { return l.d.StreamID() }

// Kind is the published track's kind.
func (l *localTrack) Kind() webrtc.RTPCodecType { return l.kind }

// Bind is called by pion when the subscriber's answer is applied.
func (l *localTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	want := l.d.Codec()
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, want.MimeType) &&
			(l.kind == webrtc.RTPCodecTypeAudio || fmtpCompatible(c.SDPFmtpLine, want.SDPFmtpLine)) {
			ssrc := uint32(ctx.SSRC())
			s := &sink{c: l.c, ssrc: ssrc, pt: uint8(c.PayloadType), writer: ctx.WriteStream(), pionIndex: -1}
			l.mu.Lock()
			l.ssrc, l.bound, l.sink = ssrc, true, s
			l.mu.Unlock()
			l.d.Bind(s)
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, media.ErrCodecNotNegotiated
}

// Unbind is called by pion when the track is removed from the subscriber.
func (l *localTrack) Unbind(webrtc.TrackLocalContext) error {
	l.mu.Lock()
	l.bound = false
	l.mu.Unlock()
	l.d.Unbind()
	return nil
}

// sentDirectly reports whether the track's newest sink sends directly.
func (l *localTrack) sentDirectly() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sink != nil && l.sink.direct.Load()
}

func (l *localTrack) boundSSRC() (uint32, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ssrc, l.bound
}

// fmtpCompatible matches H.264 by packetization mode; other codecs always match.
func fmtpCompatible(a, b string) bool {
	pm := func(s string) string {
		for _, kv := range strings.Split(s, ";") {
			if strings.HasPrefix(strings.TrimSpace(kv), "packetization-mode=") {
				return strings.TrimSpace(kv)
			}
		}
		return ""
	}
	return pm(a) == pm(b)
}

// readRTCP handles the receiver's RTCP for this track until the sender
// stops. It reads the raw compound packets and picks out the feedback for
// this track (parseFeedback) without decoding the rest, which is mostly
// receiver reports arriving every second for every track.
func (l *localTrack) readRTCP() {
	buf := make([]byte, receiveMTU)
	nacks := make([]rtcp.NackPair, 0, maxNackPairs)
	for {
		n, _, err := l.sender.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			continue // larger than an MTU: dropped
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				l.c.log.Trace().Err(err).Str("track", l.d.ID()).Msg("rtcp read ended")
			}
			return
		}
		ssrc, _ := l.boundSSRC()
		keyframe, lost, err := parseFeedback(buf[:n], ssrc, nacks[:0])
		if err != nil {
			l.c.log.Trace().Err(err).Str("track", l.d.ID()).Msg("rtcp from subscriber")
		}
		if keyframe {
			l.d.RequestKeyframe()
		}
		if len(lost) > 0 {
			l.d.AnswerNack(lost, time.Now().UnixNano())
		}
		if rb, ok := parseReport(buf[:n], ssrc); ok {
			l.d.ReceiverReport(rb.fractionLost, rb.jitter, rb.roundTrip(time.Now()))
		}
	}
}

// sinkMode is how a sink sends, decided at its first packet and kept for
// its life: every packet of one SSRC goes through one SRTP context, so
// no two contexts ever guess a rollover counter for it.
type sinkMode uint8

const (
	sinkUndecided sinkMode = iota
	sinkDirect             // sealed by the sink, sent on the node's socket (direct.go)
	sinkPion               // through pion's write path and its SRTP context
)

// errNotSent means a sink dropped a packet it could not send safely.
var errNotSent = errors.New("packet not sent")

// sink is one outgoing stream (one SSRC) of a subscriber connection: a
// media.TrackSink. Its down track's lock serialises every call.
type sink struct {
	c      *sendConn
	ssrc   uint32
	pt     uint8
	writer webrtc.TrackLocalWriter
	mode   sinkMode
	direct atomic.Bool // mode is sinkDirect, for those outside the down track's lock
	path   *directPath
	sealer rtpSealer
	// pionIndex is the highest SRTP index (ROC and sequence number) given
	// to pion's writer, -1 none (pionGuesses).
	pionIndex int64
}

// WriteRTP implements media.TrackSink.
func (s *sink) WriteRTP(h *rtp.Header, payload []byte, roc uint32, f *media.Fanout) error {
	h.SSRC, h.PayloadType = s.ssrc, s.pt
	if s.mode == sinkUndecided {
		s.decide()
	}
	if s.mode == sinkDirect {
		return s.sendDirect(h, payload, roc, f)
	}
	if !s.pionGuesses(h.SequenceNumber, roc) {
		return errNotSent
	}
	if f != nil && s.c.eng.batch != nil {
		// pion's writes of this fan-out go into the socket's shared batch.
		shared := s.c.eng.batch.shared
		if f.Batch(shared) == nil && f.AddBatch(shared, shared) {
			shared.conn.begin()
		}
	}
	_, err := s.writer.WriteRTP(h, payload)
	return err
}

// decide picks the sink's path at its first packet: direct when the
// transport learnt the connection's keys, else pion's.
func (s *sink) decide() {
	s.mode = sinkPion
	if path := s.c.direct.Load(); path != nil {
		if sealer, err := path.newSealer(); err == nil {
			s.mode, s.path, s.sealer = sinkDirect, path, sealer
			s.direct.Store(true)
		}
	}
}

// sendDirect seals the packet under roc into the fan-out's batch for the
// socket, or sends it at once when there is no fan-out (a
// retransmission). While ICE's selected pair is not on the node's socket
// (directPath.addr nil) the packet is dropped: the stream stays with this
// SRTP context.
func (s *sink) sendDirect(h *rtp.Header, payload []byte, roc uint32, f *media.Fanout) error {
	a := s.path.addr.Load()
	if a == nil {
		return errDirectUnusable
	}
	conn := s.path.conn
	if f == nil {
		bufs := &s.c.eng.sealed
		bp := bufs.Get().(*[]byte)
		defer bufs.Put(bp)
		sealed, err := s.sealer.seal(*bp, h, payload, roc)
		if err != nil {
			return err
		}
		n, err := conn.WriteToAddrPort(sealed, *a)
		s.path.sent.Add(uint64(n))
		return err
	}
	b, _ := f.Batch(conn).(*udpBatch)
	if b == nil {
		b = conn.acquire()
		if !f.AddBatch(conn, b) {
			conn.release(b)
			return s.sendDirect(h, payload, roc, nil)
		}
	}
	i := b.n
	sealed, err := s.sealer.seal(b.bufs[i][:], h, payload, roc)
	if err != nil {
		return err
	}
	b.put(i, sealed, *a)
	s.path.sent.Add(uint64(len(sealed)))
	return nil
}

// pionGuesses reports whether pion's SRTP writer sends seq under roc, and
// if so records that it does. pion guesses the counter from the packets
// it was given (srtp.Context's nextRolloverCount): its first packet of an
// SSRC goes under counter 0, and each next one under the counter that puts
// it nearest the highest so far. The core's send window gives a sink only
// numbers near the highest it used, so this holds; a packet for which it
// would not is dropped rather than sent under an index pion guessed.
func (s *sink) pionGuesses(seq uint16, roc uint32) bool {
	ext := int64(roc)<<16 | int64(seq)
	if s.pionIndex < 0 {
		if roc != 0 {
			return false
		}
	} else if diff := ext - s.pionIndex; diff >= 0x8000 || diff <= -0x8000 {
		return false
	}
	s.pionIndex = max(s.pionIndex, ext)
	return true
}
