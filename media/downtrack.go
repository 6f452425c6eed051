package media

import (
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// DownTrack sends one published track to one subscriber: it rewrites each
// forwarded packet's sequence number and timestamp so that layer switches
// look like one continuous stream, and hands it to the subscriber's
// transport through the TrackSink bound to it (which sets the SSRC and
// payload type it negotiated).
type DownTrack struct {
	sid      string
	streamID string
	up       *UpTrack
	sub      *Participant
	// key is the subscriber's key for it (Participant.downs): the track
	// sid, or PinnedID for a pinned layer.
	key string
	// pinned is the one layer a pinned down track carries (a federation
	// trunk sends each simulcast layer as a stream of its own), -1 for a
	// subscriber's ordinary down track, which switches layers.
	pinned int8

	mu       spinMutex
	sink     TrackSink
	paused   bool
	target   int8 // wanted layer, as the subscriber asked
	current  int8 // layer being forwarded, -1 before the first keyframe
	switchTo int8 // live layer to switch to on its next keyframe, -1 none
	started  bool
	seqOff   uint16
	tsOff    uint32
	lastTS   uint32
	lastAt   int64
	// epoch is the publisher's packet cache epoch of the current layer when
	// it became current (packetCache.epoch); gen counts layer switches, so
	// a NACK answer can tell that the mapping it read still holds.
	epoch uint32
	gen   uint32
	// sent records the outgoing sequence numbers used, their rollover
	// counters and retransmissions (sendwindow.go).
	sent sendWindow
	hdr  rtp.Header

	// The retransmission budget (AnswerNack), touched only by the
	// goroutine that reads the subscriber's feedback: bytes it may still
	// resend, d.bytes when it was last credited, and when it was last
	// refilled (UnixNano, 0 never).
	rtxTokens   int64
	rtxCredited uint64
	rtxRefilled int64
	// rtxHdr is the header of the packet being resent, kept so that
	// answering allocates nothing.
	rtxHdr rtp.Header

	packets atomic.Uint64
	bytes   atomic.Uint64
	// nacked counts the packets the subscriber reported lost, resent those
	// answered (SFU.Stats).
	nacked atomic.Uint64
	resent atomic.Uint64
	// quality is what the subscriber's receiver reports say (quality.go).
	quality downStats
}

func newDownTrack(up *UpTrack, sub *Participant) *DownTrack {
	return &DownTrack{
		sid: up.sid, streamID: up.pub.sid + "|" + up.sid, up: up, sub: sub, key: up.sid, pinned: -1,
		target: maxLayers - 1, current: -1, switchTo: -1,
	}
}

// PinnedID is the ID of the down track that carries only layer of the
// track sid: "sid~layer" (msid ids allow '~', RFC 8830 and RFC 4566
// token-char).
func PinnedID(sid string, layer VideoQuality) string {
	return sid + "~" + strconv.Itoa(int(layer))
}

// ParsePinnedID splits an ID made by PinnedID; ok is false for any other.
func ParsePinnedID(id string) (sid string, layer VideoQuality, ok bool) {
	i := strings.LastIndexByte(id, '~')
	if i <= 0 || i != len(id)-2 || id[i+1] < '0' || id[i+1] >= '0'+maxLayers {
		return "", 0, false
	}
	return id[:i], VideoQuality(id[i+1] - '0'), true
}

func newPinnedDownTrack(up *UpTrack, sub *Participant, layer int8) *DownTrack {
	d := newDownTrack(up, sub)
	d.sid = PinnedID(up.sid, VideoQuality(layer))
	d.key = d.sid
	d.pinned, d.target = layer, layer
	return d
}

// Pinned is the layer a pinned down track carries, -1 for an ordinary one.
func (d *DownTrack) Pinned() int8 { return d.pinned }

// ID is the track sid, which clients read as the track id.
func (d *DownTrack) ID() string { return d.sid }

// StreamID is "PA_publisher|TR_track", the form LiveKit clients parse
// (livekit/livekit pkg/rtc/mediatrackreceiver.go PackStreamID).
func (d *DownTrack) StreamID() string { return d.streamID }

// Kind is the published track's kind.
func (d *DownTrack) Kind() Kind { return d.up.kind }

// Codec is the published track's codec.
func (d *DownTrack) Codec() Codec { return d.up.codec }

// Subscriber is the participant the track is sent to.
func (d *DownTrack) Subscriber() *Participant { return d.sub }

// Bind starts sending to sink, a new outgoing stream (a new SSRC, whose
// rollover counter starts at zero: RFC 3711 section 3.3.1) that goes on
// from the next keyframe.
func (d *DownTrack) Bind(sink TrackSink) {
	d.mu.Lock()
	d.sink = sink
	d.current = -1
	if d.started {
		d.sent.newStream()
	}
	d.mu.Unlock()
	d.retarget()
}

// Unbind stops sending: packets are dropped until the next Bind.
func (d *DownTrack) Unbind() {
	d.mu.Lock()
	d.sink = nil
	d.mu.Unlock()
}

// forward sends one packet of layer idx, if that is the layer this
// subscriber gets, as part of fan-out f.
// epoch is the layer's packet cache epoch (0 without a cache). It runs on
// the publisher's reader goroutine and must not allocate.
//
// A packet whose outgoing sequence number was used already, lies before
// the current layer's switch point, or is too old to tell, is dropped
// (sendWindow): sent, it would reuse an SRTP packet index.
func (d *DownTrack) forward(idx int8, epoch uint32, h *rtp.Header, payload []byte, keyframe bool, now int64, f *Fanout) {
	d.mu.Lock()
	if d.sink == nil || d.paused || !d.sub.connected.Load() {
		// What the publisher sends meanwhile goes unrecorded here, so the
		// stream goes on from a keyframe in a new segment, and no NACK is
		// answered from a cache that moved on unseen.
		d.resegment()
		d.mu.Unlock()
		return
	}
	if d.pinned >= 0 && idx != d.pinned {
		d.mu.Unlock()
		return
	}
	if idx == d.current && epoch != d.epoch {
		// The publisher restarted the layer's sequence numbers and its
		// cache: the old mapping would resend new packets under old numbers.
		d.resegment()
	}
	if idx != d.current {
		// Another layer's packet: it becomes current only on a keyframe,
		// and only if it is the layer we are switching to; or, before the
		// first packet, if it is any layer's keyframe: the subscriber sees
		// video at the first keyframe of any layer, and moves on to the
		// layer it wants at that layer's next keyframe.
		starting, target := d.current < 0, d.switchTo
		wanted := (target < 0 && starting) || idx == target
		if !wanted && !(starting && keyframe) {
			d.mu.Unlock()
			return
		}
		if !keyframe {
			d.mu.Unlock()
			d.up.requestKeyframe(idx)
			return
		}
		d.switchLayer(idx, epoch, h, now)
		if !wanted {
			d.switchTo = target
		}
	}
	out := h.SequenceNumber + d.seqOff
	roc, _, ok := d.sent.peek(out)
	if !ok && d.sent.highest-out >= seqRestart {
		// So far behind that the publisher restarted its sequence numbers
		// (packetCache.store drops stragglers of a cached layer before
		// they get here), or nothing was sent for half the sequence space
		// (a sink on pion's path could not send it: media/rtc sink.pionGuesses):
		// go on from a keyframe, this one if it is one.
		d.resegment()
		if keyframe {
			d.switchLayer(idx, epoch, h, now)
			out = h.SequenceNumber + d.seqOff
			roc, _, ok = d.sent.peek(out)
		}
	}
	if !ok {
		restart := d.current < 0
		d.mu.Unlock()
		if restart {
			d.up.requestKeyframe(idx)
		}
		return
	}
	_, newest, _ := d.sent.take(out)
	d.hdr = *h
	d.hdr.SequenceNumber = out
	d.hdr.Timestamp = h.Timestamp + d.tsOff
	d.hdr.Extension = false
	d.hdr.Extensions = nil
	d.hdr.ExtensionProfile = 0
	if newest {
		d.lastTS = d.hdr.Timestamp
		d.lastAt = now
	}
	err := d.sink.WriteRTP(&d.hdr, payload, roc, f)
	d.mu.Unlock()
	if err == nil {
		d.packets.Add(1)
		d.bytes.Add(uint64(len(payload)))
	}
}

// resegment ends the current segment: the stream goes on at the next
// keyframe of the layer being forwarded, or of the one a pending switch
// goes to, under sequence numbers after every one used. Called with d.mu
// held.
func (d *DownTrack) resegment() {
	if d.current < 0 {
		return
	}
	if d.switchTo < 0 {
		d.switchTo = d.current
	}
	d.current = -1
}

// SenderReport is this track's RTCP sender report at now (RFC 3550
// section 6.4.1), for the sink's SSRC, which the caller fills in: the RTP
// time is the last forwarded packet's timestamp advanced by the
// wall-clock time since it was sent, as pion's report interceptor
// computes it; the counts are what this subscriber was sent. ok is false
// before the first packet.
func (d *DownTrack) SenderReport(now time.Time) (sr rtcp.SenderReport, ok bool) {
	d.mu.Lock()
	if d.sink == nil || !d.started {
		d.mu.Unlock()
		return sr, false
	}
	ts, at := d.lastTS, d.lastAt
	d.mu.Unlock()
	if gap := now.UnixNano() - at; gap > 0 {
		ts += uint32(time.Duration(gap) * time.Duration(d.up.codec.ClockRate) / time.Second)
	}
	return rtcp.SenderReport{
		NTPTime: ntpTime(now), RTPTime: ts,
		PacketCount: uint32(d.packets.Load()), OctetCount: uint32(d.bytes.Load()),
	}, true
}

// ntpTime is t as a 64-bit NTP timestamp (RFC 5905 section 6).
func ntpTime(t time.Time) uint64 {
	const unixToNTP = 2208988800
	secs := uint64(t.Unix() + unixToNTP)
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}

// switchLayer makes idx the current layer from its keyframe h on, so that
// h's outgoing sequence number follows the highest one used and its
// timestamp advances by the wall-clock time since then. Every outgoing
// sequence number before h's counts as used from now on, so packets of
// the layer older than h are dropped (sendWindow.restart). Called with
// d.mu held.
func (d *DownTrack) switchLayer(idx int8, epoch uint32, h *rtp.Header, now int64) {
	if !d.started {
		d.started = true
		d.seqOff = 0
		d.tsOff = 0
		d.sent.start(h.SequenceNumber)
	} else {
		d.sent.restart()
		next := d.sent.highest + 1
		d.seqOff = next - h.SequenceNumber
		// Arrival times come from different layers' reader goroutines, so
		// now may precede lastAt by a little: never step backwards.
		elapsed := uint32(1)
		if gap := now - d.lastAt; gap > 0 {
			elapsed = max(1, uint32(time.Duration(gap)*time.Duration(d.up.codec.ClockRate)/time.Second))
		}
		d.tsOff = d.lastTS + elapsed - h.Timestamp
	}
	d.current = idx
	d.switchTo = -1
	d.epoch = epoch
	d.gen++
}

// setTarget records the layer the subscriber wants (from its track
// settings) and whether it wants the track at all.
func (d *DownTrack) setTarget(layer int8, paused bool) {
	d.mu.Lock()
	if d.pinned < 0 {
		d.target = layer
	}
	if d.paused && !paused {
		d.current = -1 // restart on a keyframe
	}
	d.paused = paused
	d.mu.Unlock()
	d.retarget()
}

// retarget picks the live layer closest to the wanted one and, when it
// differs from the current layer, asks the publisher for a keyframe on it.
func (d *DownTrack) retarget() {
	best := d.up.bestLayer(d.targetLayer(), time.Now().UnixNano())
	if d.pinned >= 0 {
		best = d.pinned // live or not: it carries that layer or nothing
	}
	d.mu.Lock()
	if best < 0 || best == d.current {
		d.switchTo = -1
		d.mu.Unlock()
		return
	}
	d.switchTo = best
	d.mu.Unlock()
	d.up.requestKeyframe(best)
}

func (d *DownTrack) targetLayer() int8 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.target
}

// RequestKeyframe asks the publisher for a keyframe of the layer this
// subscriber gets (after a PLI or FIR from it, or when it connects).
func (d *DownTrack) RequestKeyframe() {
	d.mu.Lock()
	if d.paused {
		// Nothing is sent: a keyframe now would be dropped, and would
		// spend the publisher's request budget (keyframeInterval) that the
		// resume needs.
		d.mu.Unlock()
		return
	}
	l := d.current
	if l < 0 {
		l = d.switchTo
	}
	if d.pinned >= 0 {
		l = d.pinned
	}
	d.mu.Unlock()
	if l < 0 {
		l = d.up.bestLayer(d.targetLayer(), time.Now().UnixNano())
	}
	d.up.requestKeyframe(l)
}

// The retransmission budget of one down track. A NACK names up to 17
// packets in 4 bytes (RFC 4585 section 6.2.1), so a subscriber can ask for
// far more than it was sent; each packet is resent at most once per
// rtxIntervalMs and rtxMaxPerPacket times (sendWindow), and the bytes
// resent are capped by a token bucket:
//   - it is credited a quarter of the bytes forwarded to the subscriber:
//     at a loss rate above 25 % retransmission no longer saves the picture
//     (a keyframe does), and it keeps a subscriber from making the node
//     send it more than 1.25 times the stream it receives;
//   - plus rtxFloorRate bytes per second, and one second's worth at the
//     first NACK, so that a low-rate track (a still screen share, a
//     thumbnail layer) or a new subscriber can still repair a lost packet
//     or a few of a keyframe;
//   - up to rtxBurst bytes: a burst loss of a few hundred milliseconds of
//     a 2.5 Mbit/s layer, or most of a 720p keyframe, is repaired at once.
const (
	rtxShare     = 4         // one byte of budget per rtxShare forwarded
	rtxFloorRate = 8 * 1024  // bytes per second
	rtxBurst     = 64 * 1024 // bytes
)

// refillRtx credits the retransmission budget at now (UnixNano). Called
// by the RTCP goroutine only.
func (d *DownTrack) refillRtx(now int64) {
	fwd := d.bytes.Load()
	credit := int64((fwd - d.rtxCredited) / rtxShare)
	d.rtxCredited = fwd
	if d.rtxRefilled == 0 {
		credit += rtxFloorRate // a first second's worth of the floor
	} else if now > d.rtxRefilled {
		// At most rtxBurst/rtxFloorRate seconds count: more would not fit.
		elapsed := min(now-d.rtxRefilled, int64(rtxBurst/rtxFloorRate+1)*int64(time.Second))
		credit += elapsed * rtxFloorRate / int64(time.Second)
	}
	if now > d.rtxRefilled {
		d.rtxRefilled = now
	}
	d.rtxTokens = min(d.rtxTokens+credit, rtxBurst)
}

// AnswerNack resends the packets a subscriber lost from the publisher's
// packet cache (RFC 4585 section 6.2.1), at now (UnixNano): only packets
// this down track sent in the current layer's segment, under the same
// sequence number, rollover counter and bytes, so no SRTP packet index is
// used for two different packets; each at most once per rtxIntervalMs and
// rtxMaxPerPacket times, and within the budget above. It does not
// allocate. Its transport calls it from one goroutine per down track.
func (d *DownTrack) AnswerNack(pairs []rtcp.NackPair, now int64) {
	var lost uint64
	for _, pair := range pairs {
		lost += 1 + uint64(bits.OnesCount16(uint16(pair.LostPackets)))
	}
	d.nacked.Add(lost)
	bufs := &d.sub.room.sfu.rtxBufs
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	d.refillRtx(now)
	nowMs := uint32(now / int64(time.Millisecond))
	h := &d.rtxHdr
	for _, pair := range pairs {
		// Bit i of lost is PacketID+i: the packet itself, then its bitmap.
		lost := uint32(pair.LostPackets)<<1 | 1
		for i := uint16(0); lost != 0; i, lost = i+1, lost>>1 {
			if lost&1 == 0 {
				continue
			}
			seq := pair.PacketID + i
			d.mu.Lock()
			if d.sink == nil || d.current < 0 || !d.sent.mayResend(seq, nowMs) {
				d.mu.Unlock()
				continue
			}
			layer, epoch, gen, in := d.current, d.epoch, d.gen, seq-d.seqOff
			d.mu.Unlock()
			n := d.up.retransmit(layer, epoch, in, *bp)
			if n == 0 {
				continue
			}
			if int64(n) > d.rtxTokens {
				return // over budget: the rest waits for the next NACK
			}
			hl, err := h.Unmarshal((*bp)[:n])
			if err != nil {
				continue
			}
			d.mu.Lock()
			// The mapping read above must still hold.
			if d.sink == nil || d.gen != gen || !d.sent.mayResend(seq, nowMs) {
				d.mu.Unlock()
				continue
			}
			roc, _ := d.sent.sent(seq)
			d.sent.resent(seq, nowMs)
			d.rtxTokens -= int64(n)
			h.SequenceNumber = seq
			h.Timestamp += d.tsOff
			// Extensions are not marshalled without the flag; keeping the
			// slice lets the next Unmarshal reuse it rather than allocate.
			h.Extension, h.ExtensionProfile = false, 0
			if d.sink.WriteRTP(h, (*bp)[hl:n], roc, nil) == nil {
				d.resent.Add(1)
			}
			d.mu.Unlock()
		}
	}
}
