package media

import (
	"context"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// recordSink is a TrackSink that keeps every packet it is given, by
// sequence number, and counts those given again.
type recordSink struct {
	sent    map[uint16][]byte // header and payload as marshalled
	order   []uint16
	again   int // sequence numbers written more than once
	changed int // of which with other bytes
	bytes   int
}

func newRecordSink() *recordSink { return &recordSink{sent: map[uint16][]byte{}} }

func (w *recordSink) WriteRTP(h *rtp.Header, payload []byte, _ uint32, _ *Fanout) error {
	h.SSRC, h.PayloadType = 0x5eed, 96
	b, err := h.Marshal()
	if err != nil {
		return err
	}
	b = append(b, payload...)
	if old, ok := w.sent[h.SequenceNumber]; ok {
		w.again++
		if string(old) != string(b) {
			w.changed++
		}
	}
	w.sent[h.SequenceNumber] = b
	w.order = append(w.order, h.SequenceNumber)
	w.bytes += len(b)
	return nil
}

// recordTrack is benchTrack with one subscriber whose packets are
// recorded, on layers 0 to 2 each with a packet cache, and NACK buffers.
func recordTrack(t testing.TB) (*UpTrack, [maxLayers]*Layer, *DownTrack, *recordSink) {
	up, l0, _ := benchTrack(1)
	layers := [maxLayers]*Layer{l0}
	for i := int8(1); i < maxLayers; i++ {
		layers[i] = up.addLayer(i, 0x1234abcd+uint32(i), nil)
	}
	for _, l := range layers {
		// No publisher to ask for keyframes: never due.
		l.lastPLI.Store(1 << 62)
	}
	d := up.downTracks()[0]
	w := newRecordSink()
	d.sink = w
	sfu := New(Config{}, zerolog.Nop(), nil)
	d.sub.room = &Room{sfu: sfu}
	return up, layers, d, w
}

// vp8Packet is a raw VP8 packet with sequence number seq whose payload
// ends in fill, so that two packets of one number can differ.
func vp8Packet(t testing.TB, seq uint16, key bool, fill byte) []byte {
	pkt := chromeVP8Packet(t, seq, key)
	pkt[len(pkt)-1] = fill
	return pkt
}

// TestSwitchDropsPacketsBehindTheSwitchPoint: after a switch to layer 1
// at its keyframe, a packet of layer 1 older than that keyframe would map
// to an outgoing sequence number already used by layer 0; it is dropped,
// and a reordered packet after the switch point is still sent.
func TestSwitchDropsPacketsBehindTheSwitchPoint(t *testing.T) {
	up, l, d, w := recordTrack(t)
	now := time.Now().UnixNano()
	var h rtp.Header
	for seq := uint16(100); seq <= 102; seq++ {
		up.forward(l[0], &h, vp8Packet(t, seq, seq == 100, 0), now)
	}
	d.mu.Lock()
	d.switchTo = 1
	d.mu.Unlock()
	up.forward(l[1], &h, vp8Packet(t, 500, true, 1), now)  // the switch: outgoing 103
	up.forward(l[1], &h, vp8Packet(t, 499, false, 1), now) // behind it: would be 102
	up.forward(l[1], &h, vp8Packet(t, 502, false, 1), now) // 105
	up.forward(l[1], &h, vp8Packet(t, 501, false, 1), now) // 104, reordered
	up.forward(l[0], &h, vp8Packet(t, 103, false, 0), now) // the old layer
	require.Zero(t, w.again, "no sequence number leaves twice")
	require.Equal(t, []uint16{100, 101, 102, 103, 105, 104}, w.order)
	require.Equal(t, byte(0), w.sent[102][len(w.sent[102])-1], "102 is layer 0's")
}

// TestDuplicateIsDroppedAndNotResent: a publisher's duplicate, with other
// bytes, is not forwarded, and a NACK for its number resends the copy
// that was forwarded.
func TestDuplicateIsDroppedAndNotResent(t *testing.T) {
	up, l, d, w := recordTrack(t)
	now := time.Now().UnixNano()
	var h rtp.Header
	up.forward(l[0], &h, vp8Packet(t, 7, true, 0), now)
	up.forward(l[0], &h, vp8Packet(t, 8, false, 0xaa), now)
	up.forward(l[0], &h, vp8Packet(t, 8, false, 0xbb), now) // the duplicate
	up.forward(l[0], &h, vp8Packet(t, 9, false, 0), now)
	require.Zero(t, w.again, "the duplicate is not forwarded")
	first := append([]byte(nil), w.sent[8]...)
	d.AnswerNack([]rtcp.NackPair{{PacketID: 8}}, now)
	require.Equal(t, 1, w.again, "resent")
	require.Zero(t, w.changed, "with the bytes first sent")
	require.Equal(t, first, w.sent[8])
}

// nackPairs is the most NACK pairs media/rtc takes from one compound RTCP
// packet (its maxNackPairs).
const nackPairs = 64

// TestNackAmplificationIsBounded: the largest compound NACK the parser
// takes (64 pairs naming 1,088 packets in 268 bytes) makes the node resend
// each packet it still holds at most once and at most rtxBurst bytes;
// repeating it within rtxIntervalMs resends nothing, and repeating it for
// 10 s, with nothing new forwarded, adds at most 10 s of rtxFloorRate. The
// node sent 1,078 packets (1.2 MB) for one such NACK before.
func TestNackAmplificationIsBounded(t *testing.T) {
	up, l, d, w := recordTrack(t)
	now := time.Now().UnixNano()
	var h rtp.Header
	const last = 2000
	for seq := uint16(1); seq <= last; seq++ {
		up.forward(l[0], &h, vp8Packet(t, seq, seq == 1, 0), now)
	}
	sent, forwarded := len(w.order), w.bytes
	require.Equal(t, last, sent)

	pairs := make([]rtcp.NackPair, nackPairs)
	for i := range pairs {
		pairs[i] = rtcp.NackPair{PacketID: last - 17*nackPairs + 1 + uint16(17*i), LostPackets: 0xffff}
	}
	raw, err := (&rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: 0x5eed, Nacks: pairs}).Marshal()
	require.NoError(t, err)
	require.Len(t, raw, 268)
	parsed := pairs

	resent := func() int { return w.bytes - forwarded }
	d.AnswerNack(parsed, now)
	require.Zero(t, w.changed)
	require.Equal(t, len(w.order)-sent, w.again, "each packet at most once")
	require.Positive(t, resent())
	require.LessOrEqual(t, resent(), rtxBurst)
	first := resent()

	for range 100 {
		d.AnswerNack(parsed, now)
	}
	require.Equal(t, first, resent(), "nothing more within %d ms", rtxIntervalMs)

	const repeats = 50
	for i := 1; i <= repeats; i++ {
		d.AnswerNack(parsed, now+int64(i)*int64(200*time.Millisecond))
	}
	require.Zero(t, w.changed)
	require.LessOrEqual(t, resent(), rtxBurst+10*rtxFloorRate)
	// The counters the metrics read: every sequence number asked for,
	// every packet resent; the SFU keeps them when the track ends.
	require.Equal(t, uint64((repeats+101)*nackPairs*17), d.nacked.Load())
	require.Equal(t, uint64(len(w.order)-sent), d.resent.Load())
	require.Equal(t, uint64(last), d.packets.Load())
	sfu := d.sub.room.sfu
	sfu.retire(d)
	st := sfu.Stats(context.Background())
	require.Equal(t, uint64(last), st.ForwardedPackets)
	require.Equal(t, d.nacked.Load(), st.NackedPackets)
	require.Equal(t, d.resent.Load(), st.Retransmitted)
	t.Logf("%d NACKs of %d bytes: %d bytes resent (%.1f per NACK byte), %d forwarded",
		repeats+101, len(raw), resent(), float64(resent())/float64((repeats+101)*len(raw)), forwarded)
}
