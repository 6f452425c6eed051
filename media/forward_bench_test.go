package media

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// These benchmarks measure the SFU's own forward path: header parsing,
// caching, layer selection and header rewriting. The sink discards what
// it is given, so SRTP and UDP, which the transport does (media/rtc), are
// not measured.

// discardSink is a TrackSink that counts and drops.
type discardSink struct {
	packets int
	bytes   int
	lastSeq uint16
}

func (w *discardSink) WriteRTP(h *rtp.Header, payload []byte, _ uint32, _ *Fanout) error {
	w.packets++
	w.bytes += len(payload)
	w.lastSeq = h.SequenceNumber
	return nil
}

const benchPayloadSize = 1100

// chromeVP8Packet is a VP8 packet as Chrome sends it: header extensions
// (mid, abs-send-time, transport-cc), a picture id, and a ~1100-byte
// payload. key selects a key frame's first packet or a delta frame's.
func chromeVP8Packet(tb testing.TB, seq uint16, key bool) []byte {
	tb.Helper()
	payload := make([]byte, benchPayloadSize)
	copy(payload, []byte{0x90, 0x80, 0x81, 0x23}) // X, S; I with a 15-bit picture id
	if key {
		copy(payload[4:], []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a})
	} else {
		payload[4] = 0x11
	}
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 90000, SSRC: 0x1234abcd, Marker: false},
		Payload: payload,
	}
	require.NoError(tb, p.SetExtension(4, []byte("1")))
	require.NoError(tb, p.SetExtension(2, []byte{0x12, 0x34, 0x56}))
	require.NoError(tb, p.SetExtension(3, []byte{0x00, 0x07}))
	b, err := p.Marshal()
	require.NoError(tb, err)
	return b
}

// benchTrack is an UpTrack with one live layer and n connected
// subscribers, built without any network.
func benchTrack(n int) (*UpTrack, *Layer, []*discardSink) {
	pub := &Participant{sid: "PA_publisher", identity: "publisher", log: zerolog.Nop()}
	up := newUpTrack("TR_Vbench", "camera", pub, Codec{MimeType: "video/VP8", ClockRate: 90000}, 0)
	l := up.addLayer(0, 0x1234abcd, nil)
	writers := make([]*discardSink, n)
	for i := range writers {
		sub := &Participant{sid: fmt.Sprintf("PA_sub%d", i), log: zerolog.Nop()}
		sub.connected.Store(true)
		d := newDownTrack(up, sub)
		writers[i] = &discardSink{}
		d.sink = writers[i]
		up.addDown(d)
	}
	return up, l, writers
}

func BenchmarkDownTrackForward(b *testing.B) {
	up, _, writers := benchTrack(1)
	d := up.downTracks()[0]
	var h rtp.Header
	key := chromeVP8Packet(b, 1, true)
	hl, err := h.Unmarshal(key)
	require.NoError(b, err)
	now := time.Now().UnixNano()
	d.forward(0, 0, &h, key[hl:], true, now, nil) // the first key frame selects the layer

	delta := chromeVP8Packet(b, 2, false)
	hl, err = h.Unmarshal(delta)
	require.NoError(b, err)
	payload := delta[hl:]
	b.SetBytes(int64(len(delta)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.SequenceNumber++
		h.Timestamp += 3000
		d.forward(0, 0, &h, payload, false, now, nil)
	}
	b.StopTimer()
	require.Equal(b, b.N+1, writers[0].packets, "every packet must be forwarded")
	require.Equal(b, h.SequenceNumber, writers[0].lastSeq)
}

func TestDownTrackForwardDoesNotAllocate(t *testing.T) {
	up, _, writers := benchTrack(1)
	d := up.downTracks()[0]
	var h rtp.Header
	key := chromeVP8Packet(t, 1, true)
	hl, err := h.Unmarshal(key)
	require.NoError(t, err)
	d.forward(0, 0, &h, key[hl:], true, time.Now().UnixNano(), nil)
	allocs := testing.AllocsPerRun(1000, func() {
		h.SequenceNumber++
		d.forward(0, 0, &h, key[hl:], true, time.Now().UnixNano(), nil)
	})
	require.Zero(t, allocs)
	require.Equal(t, 1002, writers[0].packets)
}

func BenchmarkUpTrackFanout(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("downtracks=%d", n), func(b *testing.B) {
			up, l, writers := benchTrack(n)
			benchFanout(b, up, l, 1)
			for _, w := range writers {
				require.Equal(b, b.N+1, w.packets)
			}
		})
	}
}

func TestUpTrackFanoutDoesNotAllocate(t *testing.T) {
	up, l, writers := benchTrack(10)
	var h rtp.Header
	up.forward(l, &h, chromeVP8Packet(t, 0, true), time.Now().UnixNano())
	pkt := chromeVP8Packet(t, 1, false)
	seq := requireFanoutDoesNotAllocate(t, up, l, pkt, 0, 1000)
	require.Equal(t, 1002, writers[9].packets)
	// The packets went through the cache too.
	buf := make([]byte, MaxPacketSize)
	require.Equal(t, len(pkt), l.cache.get(seq, 0, buf))
}

func BenchmarkPacketCacheStore(b *testing.B) {
	var c packetCache
	pkt := chromeVP8Packet(b, 0, false)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.store(uint16(i), pkt)
	}
}

func BenchmarkPacketCacheGet(b *testing.B) {
	var c packetCache
	pkt := chromeVP8Packet(b, 0, false)
	for i := 0; i < packetCacheSize; i++ {
		c.store(uint16(i), pkt)
	}
	buf := make([]byte, MaxPacketSize)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if c.get(uint16(i%packetCacheSize), 0, buf) != len(pkt) {
			b.Fatal("cache miss")
		}
	}
}

func TestPacketCache(t *testing.T) {
	var c packetCache
	buf := make([]byte, MaxPacketSize)
	require.Zero(t, c.get(0, 0, buf), "empty cache")
	require.True(t, c.store(10, []byte{1, 2, 3}))
	require.Equal(t, 3, c.get(10, 0, buf))
	require.Equal(t, []byte{1, 2, 3}, buf[:3])
	require.Zero(t, c.get(11, 0, buf))
	require.Zero(t, c.get(10, 1, buf), "other epoch")
	require.Zero(t, c.get(10+packetCacheSize, 0, buf), "same slot, other sequence number")
	require.True(t, c.store(10+packetCacheSize, []byte{4}))
	require.Zero(t, c.get(10, 0, buf), "overwritten")
	require.Equal(t, 1, c.get(10+packetCacheSize, 0, buf))
	require.Zero(t, c.get(10+packetCacheSize, 0, make([]byte, 0)), "destination too small")
	require.True(t, c.store(520, make([]byte, MaxPacketSize+1)), "forwarded")
	require.Zero(t, c.get(520, 0, buf), "oversized packets are not cached")
	// Sequence numbers wrap.
	c = packetCache{}
	require.True(t, c.store(65535, []byte{9}))
	require.True(t, c.store(0, []byte{8}))
	require.Equal(t, 1, c.get(65535, 0, buf))
	require.Equal(t, 1, c.get(0, 0, buf))
}

// TestPacketCacheKeepsTheFirstCopy: a duplicate is refused and does not
// replace the copy that was forwarded; a packet as old as the cache is
// refused rather than evicting a newer one; a packet seqRestart behind
// starts a new epoch, in which nothing stored before is fetched.
func TestPacketCacheKeepsTheFirstCopy(t *testing.T) {
	var c packetCache
	buf := make([]byte, MaxPacketSize)
	for _, tc := range []struct {
		name  string
		seq   uint16
		b     byte
		store bool
	}{
		{"first", 1000, 1, true},
		{"next", 1001, 2, true},
		{"reordered", 999, 3, true},
		{"duplicate with other bytes", 1000, 4, false},
		{"duplicate of a reordered one", 999, 5, false},
		{"jump ahead", 1600, 6, true},
		{"older than the cache", 1600 - packetCacheSize, 7, false},
		{"just inside the cache", 1600 - packetCacheSize + 1, 8, true},
		{"restart", 1600 + 0x10000 - seqRestart, 9, true},
	} {
		require.Equal(t, tc.store, c.store(tc.seq, []byte{tc.b}), tc.name)
	}
	require.Equal(t, uint32(1), c.epoch)
	require.Equal(t, 1, c.get(1600+0x10000-seqRestart, 1, buf))
	require.Equal(t, byte(9), buf[0])
	require.Zero(t, c.get(1600, 0, buf), "stored before the restart")
	require.Zero(t, c.get(1600, 1, buf), "not stored since the restart")
	c = packetCache{}
	c.store(1000, []byte{1})
	c.store(1000, []byte{4})
	require.Equal(t, 1, c.get(1000, 0, buf))
	require.Equal(t, byte(1), buf[0], "the first copy stays")
}

// requireFanoutDoesNotAllocate forwards pkt runs times (plus one warm-up
// run) with sequence numbers after seq, asserts that no run allocates,
// and returns the last sequence number.
func requireFanoutDoesNotAllocate(t *testing.T, up *UpTrack, l *Layer, pkt []byte, seq uint16, runs int) uint16 {
	t.Helper()
	var h rtp.Header
	allocs := testing.AllocsPerRun(runs, func() {
		seq++
		binary.BigEndian.PutUint16(pkt[2:], seq)
		up.forward(l, &h, pkt, time.Now().UnixNano())
	})
	require.Zero(t, allocs)
	return seq
}

// benchFanout forwards a key frame's packet, then b.N delta packets, with
// the timer running for the latter; bytes counts each packet copies times.
func benchFanout(b *testing.B, up *UpTrack, l *Layer, copies int) {
	var h rtp.Header
	now := time.Now().UnixNano()
	up.forward(l, &h, chromeVP8Packet(b, 0, true), now)
	pkt := chromeVP8Packet(b, 1, false)
	b.SetBytes(int64(len(pkt) * copies))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(pkt[2:], uint16(i+1))
		up.forward(l, &h, pkt, now)
	}
	b.StopTimer()
}

// TestDownTrackStartsOnAnyLayersKeyframe: a subscriber that wants layer 2
// starts on the first keyframe of any layer, is sent nothing of another
// layer's delta frames before that, and moves to layer 2 at its next
// keyframe, with sequence numbers that continue.
func TestDownTrackStartsOnAnyLayersKeyframe(t *testing.T) {
	up, _, writers := benchTrack(1)
	d := up.downTracks()[0]
	d.switchTo = 2
	w := writers[0]
	send := func(layer int8, seq uint16, key bool) {
		var h rtp.Header
		pkt := chromeVP8Packet(t, seq, key)
		hl, err := h.Unmarshal(pkt)
		require.NoError(t, err)
		d.forward(layer, 0, &h, pkt[hl:], key, time.Now().UnixNano(), nil)
	}
	send(0, 100, false)
	send(2, 500, false)
	require.Zero(t, w.packets, "no keyframe yet")
	send(0, 101, true)
	require.Equal(t, 1, w.packets, "started on layer 0's keyframe")
	send(0, 102, false)
	send(1, 300, true)
	require.Equal(t, 2, w.packets, "stays on layer 0 until layer 2's keyframe")
	send(2, 501, true)
	require.Equal(t, 3, w.packets)
	require.Equal(t, int8(2), d.current)
	require.Equal(t, int8(-1), d.switchTo)
	send(0, 103, true)
	send(2, 502, false)
	require.Equal(t, 4, w.packets, "layer 2 only from now on")
	require.Equal(t, uint16(104), w.lastSeq, "outgoing sequence numbers continue: 101, 102 (layer 0), 103, 104 (layer 2)")
}
