// Package rtpgen generates synthetic RTP media at realistic packet sizes and
// rates: Opus-sized audio and VP8 video with real payload descriptors and
// keyframe flags, so an SFU can detect keyframes and switch layers. The
// end-to-end tests and the load generator publish it through LiveKit's Go
// SDK. It imports only pion/rtp; media, bridges and federation never import it.
package rtpgen

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// Sender timestamps: the first 8 payload bytes after the codec header carry
// the send time in Unix nanoseconds, so receivers can measure one-way delay
// on one machine.
const stampSize = 8

// Opus produces 20 ms Opus-sized packets (48 kHz clock).
type Opus struct {
	// Bytes is the payload size; about 60-120 for speech at 24-48 kbit/s.
	Bytes int
	seq   uint16
	ts    uint32
}

// Interval is the time between two packets.
func (*Opus) Interval() time.Duration { return 20 * time.Millisecond }

// Next returns the next packet, stamped with now.
func (g *Opus) Next(now time.Time) *rtp.Packet {
	n := max(g.Bytes, stampSize+1)
	p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: g.seq, Timestamp: g.ts}, Payload: make([]byte, n)}
	binary.BigEndian.PutUint64(p.Payload, uint64(now.UnixNano()))
	g.seq++
	g.ts += 960
	return p
}

// VP8 produces VP8 frames split into packets of at most MTU payload bytes,
// each with a VP8 payload descriptor (RFC 7741), a keyframe every
// KeyframeEvery frames and whenever RequestKeyframe was called.
type VP8 struct {
	FPS           int // frames per second, e.g. 30
	FrameBytes    int // delta frame size, e.g. 1500 for ~360 kbit/s at 30 fps
	KeyframeBytes int // keyframe size, e.g. 8000
	KeyframeEvery int // frames between periodic keyframes; 0 = only on request
	MTU           int // payload bytes per packet, e.g. 1100

	seq       uint16
	ts        uint32
	frame     int
	pictureID uint16
	forceKey  atomic.Bool
	keyframes atomic.Uint64
}

// Interval is the time between two frames.
func (g *VP8) Interval() time.Duration { return time.Second / time.Duration(max(g.FPS, 1)) }

// RequestKeyframe makes the next frame a keyframe (call it on PLI or FIR).
func (g *VP8) RequestKeyframe() { g.forceKey.Store(true) }

// Keyframes is how many keyframes were produced.
func (g *VP8) Keyframes() uint64 { return g.keyframes.Load() }

// NextFrame returns the packets of the next frame, stamped with now.
func (g *VP8) NextFrame(now time.Time) []*rtp.Packet {
	key := g.frame == 0 || g.forceKey.Swap(false) || (g.KeyframeEvery > 0 && g.frame%g.KeyframeEvery == 0)
	size := g.FrameBytes
	if key {
		size = g.KeyframeBytes
		g.keyframes.Add(1)
	}
	size = max(size, stampSize+3)
	mtu := max(g.MTU, 64)
	var pkts []*rtp.Packet
	for off := 0; off < size; off += mtu {
		chunk := min(mtu, size-off)
		// Descriptor: X=1, S on the first packet; I=1 with a 15-bit picture id.
		desc := []byte{0x80, 0x80, byte(0x80 | (g.pictureID>>8)&0x7f), byte(g.pictureID)}
		if off == 0 {
			desc[0] |= 0x10
		}
		payload := make([]byte, len(desc)+chunk)
		copy(payload, desc)
		body := payload[len(desc):]
		if off == 0 {
			// VP8 payload header: bit 0 (P) is 0 for a keyframe.
			if key {
				body[0] = 0x10
			} else {
				body[0] = 0x11
			}
			binary.BigEndian.PutUint64(body[1:], uint64(now.UnixNano()))
		}
		pkts = append(pkts, &rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: g.seq, Timestamp: g.ts, Marker: off+chunk >= size},
			Payload: payload,
		})
		g.seq++
	}
	g.frame++
	g.pictureID = (g.pictureID + 1) & 0x7fff
	g.ts += 90000 / uint32(max(g.FPS, 1))
	return pkts
}

// IsVP8Keyframe reports whether a VP8 RTP payload starts a keyframe.
func IsVP8Keyframe(payload []byte) bool {
	if len(payload) < 1 || payload[0]&0x10 == 0 {
		return false
	}
	i := 1
	if payload[0]&0x80 != 0 {
		if len(payload) < 2 {
			return false
		}
		x := payload[1]
		i = 2
		if x&0x80 != 0 {
			if len(payload) <= i {
				return false
			}
			if payload[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if x&0x40 != 0 {
			i++
		}
		if x&0x30 != 0 {
			i++
		}
	}
	return len(payload) > i && payload[i]&0x01 == 0
}

// SentAt returns the send time stamped into a generated packet's payload
// (after the VP8 descriptor and header byte when vp8 is set), or false.
func SentAt(payload []byte, vp8 bool) (time.Time, bool) {
	off := 0
	if vp8 {
		if len(payload) < 5 || payload[0]&0x10 == 0 {
			return time.Time{}, false
		}
		off = 5
	}
	if len(payload) < off+stampSize {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(payload[off:]))), true
}
