package media

import (
	"strings"
	"time"

	"github.com/pion/rtp"
)

// MaxPacketSize is the largest RTP packet the core forwards and caches: an
// Ethernet MTU. A transport drops larger ones before they reach a Layer.
const MaxPacketSize = 1500

// Transport carries one participant's media between it and the node: the
// two WebRTC peer connections of a LiveKit client (media/rtc), and, next,
// a Jingle session, a federation trunk or a recorder with no network at
// all. The core tells it what to send; it tells the core what arrives,
// through the Participant's transport-facing methods (Receive, Connected,
// RelayData, Fail, Reconnect).
//
// Every method returns at once (queue, never block on the network). The
// room calls them from its own goroutines, never with a participant's
// lock held.
type Transport interface {
	// Attach is called once, by Room.Join, before anyone else can see p:
	// from then on the transport reports to p. An error refuses the join.
	Attach(p *Participant) error
	// AddDownTrack makes a sink for a new subscription and binds it to d
	// (DownTrack.Bind), at once or when the far end has accepted it.
	AddDownTrack(d *DownTrack) error
	// RemoveDownTrack ends d's sink; d is never bound again.
	RemoveDownTrack(d *DownTrack)
	// Negotiate tells the far end of the down tracks added and removed so
	// far, if it must be told (a WebRTC offer); the core calls it once
	// after a batch of changes.
	Negotiate()
	// SendData sends one data packet, as the room relays it (stamped by
	// the sender's transport: Participant.RelayData), on a channel
	// of the given kind; a transport that is backed up drops it.
	SendData(kind DataKind, data []byte)
	// Close ends the transport and returns once every goroutine it started
	// (packet readers, RTCP readers) has stopped. A reader ending calls
	// Layer.End, so Close may call back into the core, which holds no
	// lock while calling it.
	Close()
}

// TrackSink takes the packets forwarded to one subscriber of one track.
// Calls for one DownTrack never overlap (the down track's lock is held),
// so a sink needs no lock of its own for them.
type TrackSink interface {
	// WriteRTP sends one packet. h carries the outgoing sequence number
	// and timestamp; the sink sets its own SSRC and payload type in it,
	// and keeps neither h nor payload after the call. roc is the packet's
	// rollover counter (RFC 3711 section 3.3.1): one sequence number is
	// only ever written again with the same roc and the same bytes (a
	// retransmission). f is the fan-out the packet is part of, or nil for
	// a packet sent on its own. WriteRTP must not block on the network
	// and must not allocate.
	WriteRTP(h *rtp.Header, payload []byte, roc uint32, f *Fanout) error
}

// TrackSource is where one incoming stream of a published track comes
// from: what the core may ask of its publisher.
type TrackSource interface {
	// RequestKeyframe asks the publisher for a keyframe on the stream
	// (an RTCP PLI for WebRTC). The core paces the requests.
	RequestKeyframe(ssrc uint32)
}

// SenderReporter is what a Transport may also do: send RTCP sender reports
// for its down tracks (DownTrack.SenderReport), so that the receiver can
// synchronise a publisher's audio and video. The room calls it every few
// seconds.
type SenderReporter interface {
	SendSenderReports(now time.Time)
}

// Batch is a sink's way of sending one fan-out's packets together (one
// system call for many subscribers). A sink finds its batch in the Fanout
// by a key of its choosing and adds one when there is none.
type Batch interface {
	// Between is called between two subscribers' writes, with no lock
	// held: a full batch may be sent now.
	Between()
	// Finish sends what the batch holds and releases it.
	Finish()
}

// maxFanoutBatches is how many batches one fan-out holds; a sink that
// finds no room sends its packet on its own.
const maxFanoutBatches = 4

// Fanout is one incoming packet's trip to its subscribers, on the
// publisher's reader goroutine; each Layer keeps one for its packets.
type Fanout struct {
	keys    [maxFanoutBatches]any
	batches [maxFanoutBatches]Batch
	n       int
}

// Batch returns the batch added under key, or nil.
func (f *Fanout) Batch(key any) Batch {
	for i := 0; i < f.n; i++ {
		if f.keys[i] == key {
			return f.batches[i]
		}
	}
	return nil
}

// AddBatch adds b under key. It reports false, adding nothing, when the
// fan-out holds as many batches as it can.
func (f *Fanout) AddBatch(key any, b Batch) bool {
	if f.n == maxFanoutBatches {
		return false
	}
	f.keys[f.n], f.batches[f.n] = key, b
	f.n++
	return true
}

func (f *Fanout) between() {
	for i := 0; i < f.n; i++ {
		f.batches[i].Between()
	}
}

func (f *Fanout) finish() {
	for i := 0; i < f.n; i++ {
		f.batches[i].Finish()
		f.keys[i], f.batches[i] = nil, nil
	}
	f.n = 0
}

// Kind is a track's kind.
type Kind uint8

const (
	KindAudio Kind = iota + 1
	KindVideo
)

func (k Kind) String() string {
	switch k {
	case KindAudio:
		return "audio"
	case KindVideo:
		return "video"
	}
	return "unknown"
}

// Codec is an incoming stream's codec as its transport negotiated it.
type Codec struct {
	MimeType    string // "audio/opus", "video/VP8", "video/H264"
	ClockRate   uint32
	Channels    uint16
	SDPFmtpLine string
}

// KindOf is the kind of a codec's mime type.
func KindOf(mime string) Kind {
	if len(mime) > 6 && strings.EqualFold(mime[:6], "video/") {
		return KindVideo
	}
	return KindAudio
}

// IncomingStream is an RTP stream a transport has started receiving from
// its participant, for Participant.Receive.
type IncomingStream struct {
	// TrackID is the publisher's own id of the track (a WebRTC msid track
	// id), matched against its add-track requests' cids.
	TrackID string
	Codec   Codec
	// RID names the simulcast layer ("q", "h", "f"); empty: the only one.
	RID  string
	SSRC uint32
	// AudioLevelExt is the RFC 6464 header extension's id, 0 none.
	AudioLevelExt uint8
	// Mid is the stream's media section, announced in the TrackInfo.
	Mid    string
	Source TrackSource
	// Start is called, at most once and on no lock, when the stream has
	// been matched to a published track: the transport feeds l from then
	// on, from one goroutine, and calls l.End when the stream ends.
	Start func(l *Layer)
}
