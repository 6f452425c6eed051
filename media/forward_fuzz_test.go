package media

import (
	"encoding/binary"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// srtpIndex is what an SRTP packet's keystream or nonce is made from
// under one key (RFC 3711 section 3.3.1, RFC 7714 section 8.1).
type srtpIndex struct {
	ssrc, roc uint32
	seq       uint16
}

// indexSink is a TrackSink that keeps what it is given, by SRTP index,
// and fails the test when an index is written twice with other bytes, or
// under a rollover counter a receiver would not estimate: more than half
// the sequence space from the highest index sent (RFC 3711 section
// 3.3.1), or other than 0 for the first packet. Each sink is one
// outgoing stream, as a transport's sink is.
type indexSink struct {
	t       *testing.T
	ssrc    uint32
	sent    map[srtpIndex]string
	highest int64 // -1 before the first packet
	packets int
}

func newIndexSink(t *testing.T, ssrc uint32) *indexSink {
	return &indexSink{t: t, ssrc: ssrc, sent: map[srtpIndex]string{}, highest: -1}
}

func (r *indexSink) WriteRTP(h *rtp.Header, payload []byte, roc uint32, _ *Fanout) error {
	h.SSRC, h.PayloadType = r.ssrc, 96
	b, err := h.Marshal()
	if err != nil {
		return err
	}
	k := srtpIndex{h.SSRC, roc, h.SequenceNumber}
	b = append(b, payload...)
	if old, ok := r.sent[k]; ok && old != string(b) {
		r.t.Fatalf("SRTP index %+v written twice with different bytes", k)
	}
	r.sent[k] = string(b)
	r.packets++
	ext := int64(roc)<<16 | int64(h.SequenceNumber)
	switch {
	case r.highest < 0 && roc != 0:
		r.t.Fatalf("first packet %+v not under rollover counter 0", k)
	case r.highest >= 0 && (ext-r.highest >= 0x8000 || r.highest-ext > 0x8000):
		r.t.Fatalf("packet %+v under a rollover counter a receiver would not guess (highest index %#x)", k, r.highest)
	}
	r.highest = max(r.highest, ext)
	return nil
}

// FuzzForwarderNeverReusesIndex drives one subscriber's down track with a
// publisher's packets on three simulcast layers in any order (reordered,
// duplicated with other bytes, with sequence number jumps and restarts,
// keyframes anywhere), layer switches, pauses, NACKs and new outgoing
// streams (a transport binding the track again under a new SSRC), and
// checks that no SRTP index leaves twice with different bytes and that
// every rollover counter is the one a receiver estimates. media/rtc's
// FuzzSinkNeverReusesIndex checks what its sinks make of the same.
// Each operation is 4 bytes: op, a, b, c.
func FuzzForwarderNeverReusesIndex(f *testing.F) {
	for _, seed := range [][]byte{
		// key 0, deltas, switch to 1, key 1, an older packet of 1, NACK.
		{0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 7, 1, 1, 0, 8, 5, 1, 1, 8, 0xfe, 0, 1, 6, 0, 0xff, 0xff},
		// key 0, a duplicate with other bytes, NACKs over time.
		{0, 1, 1, 0, 0, 1, 0, 0, 5, 0, 0, 9, 6, 1, 0, 1, 7, 20, 0, 0, 6, 2, 0, 3},
		// a jump back far enough to be a restart, then its keyframe.
		{0, 1, 1, 0, 0, 1, 0, 0, 4, 0xc0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 6, 0, 0xff, 0xff},
		// the whole sequence space in four jumps, a new stream, again.
		{7, 0, 3, 0, 0, 1, 1, 0, 4, 0x40, 0, 0, 4, 0x40, 0, 0, 4, 0x40, 0, 0, 4, 0x40, 0, 0, 7, 0, 3, 0, 0, 1, 1, 0, 0, 1, 0, 0},
		// pause, unpause, across a wrap.
		{0, 1, 1, 0, 4, 0x7f, 0xf0, 0, 4, 0x7f, 0xf0, 0, 0, 20, 1, 0, 7, 0, 2, 0, 7, 0, 2, 0, 0, 1, 1, 0, 6, 0, 0, 7},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4*512 {
			return
		}
		up, layers, d, _ := recordTrack(t)
		ssrc := uint32(1)
		d.Bind(newIndexSink(t, ssrc))

		var seq [maxLayers]uint16
		var last [maxLayers][]byte
		now := int64(1) << 40
		var h rtp.Header
		send := func(layer int, key bool, fill byte) {
			pkt := vp8Packet(t, seq[layer], key, fill)
			binary.BigEndian.PutUint32(pkt[4:], uint32(seq[layer])*3000)
			last[layer] = pkt
			up.forward(layers[layer], &h, append([]byte(nil), pkt...), now)
		}
		for ; len(ops) >= 4; ops = ops[4:] {
			op, a, b, c := ops[0], ops[1], ops[2], ops[3]
			layer := int(op>>3) % maxLayers
			switch op % 8 {
			case 0, 1, 2, 3: // the next packet, a steps on (or back)
				seq[layer] += uint16(int8(a))
				send(layer, b&1 == 1, c)
			case 4: // a jump
				seq[layer] += uint16(a)<<8 | uint16(b)
				send(layer, c&1 == 1, c)
			case 5: // the last packet again, with other bytes
				if last[layer] != nil {
					pkt := append([]byte(nil), last[layer]...)
					pkt[len(pkt)-1] ^= c | 1
					up.forward(layers[layer], &h, pkt, now)
				}
			case 6: // a NACK for a run of recent packets
				d.mu.Lock()
				id := d.sent.highest - uint16(a)
				d.mu.Unlock()
				d.AnswerNack([]rtcp.NackPair{{PacketID: id, LostPackets: rtcp.PacketBitmap(uint16(b)<<8 | uint16(c))}}, now)
			case 7:
				switch b % 4 {
				case 0: // time passes
					now += int64(a) * 10e6
				case 1: // the subscriber wants another layer
					d.mu.Lock()
					d.switchTo = int8(a % maxLayers)
					d.mu.Unlock()
				case 2: // pause or resume
					d.mu.Lock()
					if d.paused {
						d.current = -1
					}
					d.paused = !d.paused
					d.mu.Unlock()
				case 3: // the transport binds the track again: a new stream
					ssrc++
					d.Bind(newIndexSink(t, ssrc))
				}
			}
		}
	})
}
