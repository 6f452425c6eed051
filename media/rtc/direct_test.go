package rtc

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

var (
	testSRTPKey  = []byte("0123456789abcdef")
	testSRTPSalt = []byte("0123456789ab")
)

// chromeVP8Packet is a VP8 packet as Chrome sends it: header extensions
// (mid, abs-send-time, transport-cc), a picture id, and a ~1100-byte
// payload. key selects a key frame's first packet or a delta frame's.
func chromeVP8Packet(tb testing.TB, seq uint16, key bool) []byte {
	tb.Helper()
	payload := make([]byte, 1100)
	copy(payload, []byte{0x90, 0x80, 0x81, 0x23}) // X, S; I with a 15-bit picture id
	if key {
		copy(payload[4:], []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a})
	} else {
		payload[4] = 0x11
	}
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 90000, SSRC: 0x1234abcd},
		Payload: payload,
	}
	require.NoError(tb, p.SetExtension(4, []byte("1")))
	require.NoError(tb, p.SetExtension(2, []byte{0x12, 0x34, 0x56}))
	require.NoError(tb, p.SetExtension(3, []byte{0x00, 0x07}))
	b, err := p.Marshal()
	require.NoError(tb, err)
	return b
}

// sinkTransport is a media.Transport with no peer connection whose down
// tracks are bound to this package's sinks on t, which sends on the
// engine's socket: the send path of a connected subscriber, without ICE
// and DTLS.
type sinkTransport struct {
	t     *Transport
	ssrc  uint32
	downs []*media.DownTrack
	sinks []*sink
}

func (s *sinkTransport) Attach(*media.Participant) error { return nil }
func (s *sinkTransport) AddDownTrack(d *media.DownTrack) error {
	k := &sink{c: &s.t.sendConn, ssrc: s.ssrc, pt: 96, writer: &discardWriter{}, pionIndex: -1}
	s.downs, s.sinks = append(s.downs, d), append(s.sinks, k)
	d.Bind(k)
	return nil
}
func (s *sinkTransport) RemoveDownTrack(d *media.DownTrack) { d.Unbind() }
func (s *sinkTransport) Negotiate()                         {}
func (s *sinkTransport) SendData(media.DataKind, []byte)    {}
func (s *sinkTransport) Close()                             {}
func (s *sinkTransport) RequestKeyframe(uint32)             {}
func (s *sinkTransport) direct(conn *batchConn, peer *netip.AddrPort) *directPath {
	p := &directPath{conn: conn, key: testSRTPKey, salt: testSRTPSalt, profile: srtp.ProtectionProfileAeadAes128Gcm}
	p.addr.Store(peer)
	s.t.direct.Store(p)
	return p
}

// discardWriter is pion's track writer, counting and dropping.
type discardWriter struct {
	packets int
	lastSeq uint16
}

func (w *discardWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.packets++
	w.lastSeq = h.SequenceNumber
	return len(payload), nil
}

func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// sendTrack is a room of the core in which one publisher's VP8 track goes
// to n connected subscribers, each through a sinkTransport of its own,
// sending with the direct path to peer unless pion is set. It returns the
// track's layer, which the test feeds, and the subscribers' transports.
func sendTrack(tb testing.TB, n int, pion bool) (*media.Layer, []*sinkTransport, *batchConn, *net.UDPConn) {
	tb.Helper()
	sfu, eng := newTestSFU(tb)
	room, err := sfu.CreateRoom("send")
	require.NoError(tb, err)
	peer := loopbackUDP(tb)
	a := addrPort(peer)
	subs := make([]*sinkTransport, n)
	for i := range subs {
		subs[i] = &sinkTransport{t: &Transport{sendConn: sendConn{eng: eng}}, ssrc: uint32(1000 + i)}
		if !pion {
			subs[i].direct(eng.batch, &a)
		}
		p, _, err := room.Join(context.Background(), media.JoinParams{
			Identity: fmt.Sprintf("sub%d", i), Permissions: allowAll(), AutoSubscribe: true,
			Signaller: newRecordingSignaller(), Transport: subs[i],
		})
		require.NoError(tb, err)
		p.Start(context.Background())
		p.Connected()
	}
	pub, _, err := room.Join(context.Background(), media.JoinParams{
		Identity: "publisher", Permissions: allowAll(), Signaller: newRecordingSignaller(), Transport: &sinkTransport{t: &Transport{sendConn: sendConn{eng: eng}}},
	})
	require.NoError(tb, err)
	pub.Start(context.Background())
	require.NoError(tb, pub.AddTrack(context.Background(), &media.AddTrackRequest{Cid: "cam", Kind: media.KindVideo, Source: media.SourceCamera}))
	layers := make(chan *media.Layer, 1)
	pub.Receive(media.IncomingStream{
		TrackID: "cam", Codec: media.Codec{MimeType: "video/VP8", ClockRate: 90000}, SSRC: 0x1234abcd,
		Source: subs[0], Start: func(l *media.Layer) { layers <- l },
	})
	layer := <-layers
	// The room subscribes everyone in the same step, before anything else
	// it is asked: a mute of no track waits for it.
	require.ErrorIs(tb, pub.SetMuted(context.Background(), "TR_none", true), media.ErrTrackNotFound)
	for _, s := range subs {
		require.Len(tb, s.downs, 1, "every subscriber gets the track")
	}
	return layer, subs, eng.batch, peer
}

// TestDirectSendsDecrypt: packets sent on the direct path reach the peer's
// address as SRTP that a context with the same keys decrypts to the
// rewritten header and the original payload, one per subscriber, each
// under its own SSRC; and a fan-out allocates nothing.
func TestDirectSendsDecrypt(t *testing.T) {
	l, subs, _, peer := sendTrack(t, 3, false)
	pkt := chromeVP8Packet(t, 7, true)
	l.WriteRTP(pkt, time.Now().UnixNano())

	var want rtp.Packet
	require.NoError(t, want.Unmarshal(pkt))
	rx, err := srtp.CreateContext(testSRTPKey, testSRTPSalt, srtp.ProtectionProfileAeadAes128Gcm)
	require.NoError(t, err)
	seen := map[uint32]bool{}
	buf := make([]byte, 2048)
	for range subs {
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, err := peer.Read(buf)
		require.NoError(t, err)
		plain, err := rx.DecryptRTP(nil, buf[:n], nil)
		require.NoError(t, err)
		var got rtp.Packet
		require.NoError(t, got.Unmarshal(plain))
		require.Equal(t, want.Payload, got.Payload)
		require.Equal(t, want.SequenceNumber, got.SequenceNumber)
		require.Equal(t, uint8(96), got.PayloadType)
		require.False(t, got.Extension, "header extensions are stripped")
		seen[got.SSRC] = true
	}
	require.Len(t, seen, 3)
	for _, s := range subs {
		require.True(t, s.sinks[0].direct.Load())
		require.Zero(t, s.sinks[0].writer.(*discardWriter).packets, "nothing through pion")
	}
	requireFanoutDoesNotAllocate(t, l, pkt, 7, 200)
}

// TestSinkKeepsItsPath: a sink sends every packet of its stream one way,
// so that one SRTP context sees them all. One that started on pion's
// path stays there when the direct path appears; one that started direct
// drops packets while ICE's pair is off the node's socket, and never
// hands them to pion, whose context would guess another rollover counter.
func TestSinkKeepsItsPath(t *testing.T) {
	t.Run("pion", func(t *testing.T) {
		l, subs, conn, peer := sendTrack(t, 1, true)
		l.WriteRTP(chromeVP8Packet(t, 1, true), time.Now().UnixNano())
		a := addrPort(peer)
		subs[0].direct(conn, &a)
		l.WriteRTP(chromeVP8Packet(t, 2, false), time.Now().UnixNano())
		require.Equal(t, 2, subs[0].sinks[0].writer.(*discardWriter).packets)
		require.False(t, subs[0].sinks[0].direct.Load())
		require.Zero(t, conn.packets.Load())
	})
	t.Run("direct", func(t *testing.T) {
		l, subs, conn, _ := sendTrack(t, 1, false)
		l.WriteRTP(chromeVP8Packet(t, 1, true), time.Now().UnixNano())
		require.Equal(t, uint64(1), conn.packets.Load())
		subs[0].t.direct.Load().selectPair(nil)
		l.WriteRTP(chromeVP8Packet(t, 2, false), time.Now().UnixNano())
		require.Equal(t, uint64(1), conn.packets.Load())
		require.Zero(t, subs[0].sinks[0].writer.(*discardWriter).packets)
	})
}

// TestPionSinkAgreesOnROC: across a sequence number wrap and layer-like
// jumps, the rollover counter pion's SRTP context guesses for each packet
// (srtp.Context nextRolloverCount, restated in pionROC) is the one the
// core's send window gave the sink; where it would not be, the sink drops
// the packet (pionGuesses).
func TestPionSinkAgreesOnROC(t *testing.T) {
	s := &sink{pionIndex: -1}
	var model pionROC
	check := func(seq uint16, roc uint32) bool {
		if !s.pionGuesses(seq, roc) {
			return false
		}
		require.Equal(t, roc, model.next(seq), "seq %d", seq)
		return true
	}
	seq, roc := uint16(0xfff0), uint32(0)
	for i := 0; i < 70000; i++ {
		require.True(t, check(seq, roc))
		seq++
		if seq == 0 {
			roc++
		}
		if i%5000 == 4999 {
			// A reordered packet a little behind, as the window allows.
			back := seq - 100
			backROC := roc
			if back > seq {
				backROC--
			}
			require.True(t, check(back, backROC))
		}
	}
	require.False(t, s.pionGuesses(seq+0x8000, roc), "half the space ahead: pion would guess another counter")
	fresh := &sink{pionIndex: -1}
	require.False(t, fresh.pionGuesses(5, 1), "pion's first packet of an SSRC goes under counter 0")
}

// pionROC restates how pion's srtp.Context guesses the rollover counter
// of the next packet it protects (context.go, nextRolloverCount and
// updateRolloverCount).
type pionROC struct {
	index   uint64
	started bool
}

func (w *pionROC) next(seq16 uint16) uint32 {
	seq := int64(seq16)
	if !w.started {
		w.started, w.index = true, uint64(seq)
		return 0
	}
	roc := uint32(w.index >> 16)
	last := int64(w.index & 0xffff)
	diff := seq - last
	if w.index > 0x8000 { // before that, pion never guesses a wrap
		switch {
		case last < 0x8000 && seq-last > 0x8000:
			roc, diff = roc-1, seq-last-0x10000
		case last >= 0x8000 && last-0x8000 > seq:
			roc, diff = roc+1, seq-last+0x10000
		}
	}
	if diff > 0 {
		w.index += uint64(diff)
	}
	return roc
}

// BenchmarkUpTrackFanoutDirect is the whole send path per forwarded
// packet: rewrite, SRTP (AES-128-GCM), and sendmmsg to a loopback socket.
func BenchmarkUpTrackFanoutDirect(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("downtracks=%d", n), func(b *testing.B) {
			l, _, conn, _ := sendTrack(b, n, false)
			now := time.Now().UnixNano()
			l.WriteRTP(chromeVP8Packet(b, 0, true), now)
			pkt := chromeVP8Packet(b, 1, false)
			b.SetBytes(int64(len(pkt) * n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				binary.BigEndian.PutUint16(pkt[2:], uint16(i+1))
				l.WriteRTP(pkt, now)
			}
			b.StopTimer()
			require.Equal(b, uint64(b.N+1)*uint64(n), conn.packets.Load())
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/forwarded")
		})
	}
}

// requireFanoutDoesNotAllocate forwards pkt runs times (plus one warm-up
// run) with sequence numbers after seq and asserts that no run allocates.
func requireFanoutDoesNotAllocate(t *testing.T, l *media.Layer, pkt []byte, seq uint16, runs int) {
	t.Helper()
	allocs := testing.AllocsPerRun(runs, func() {
		seq++
		binary.BigEndian.PutUint16(pkt[2:], seq)
		l.WriteRTP(pkt, time.Now().UnixNano())
	})
	require.Zero(t, allocs)
}

// TestDirectAnswersNacks: a NACK from the subscriber is answered from the
// publisher's packet cache on the direct path, under the track's SSRC and
// the sequence numbers the subscriber knows, and a packet the cache does
// not hold is not sent.
func TestDirectAnswersNacks(t *testing.T) {
	l, subs, _, peer := sendTrack(t, 1, false)
	d := subs[0].downs[0]
	for seq := uint16(7); seq <= 9; seq++ {
		l.WriteRTP(chromeVP8Packet(t, seq, seq == 7), time.Now().UnixNano())
	}
	buf := make([]byte, 2048)
	read := func() []byte {
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, err := peer.Read(buf)
		require.NoError(t, err)
		return buf[:n]
	}
	for i := 0; i < 3; i++ {
		read()
	}

	// 8 and 9 (bit 0 of the bitmap) are asked for, and 10, never received.
	d.AnswerNack([]rtcp.NackPair{{PacketID: 8, LostPackets: 0b11}}, time.Now().UnixNano())
	for _, want := range []uint16{8, 9} {
		// A fresh context: the subscriber never received the lost packets.
		rx, err := srtp.CreateContext(testSRTPKey, testSRTPSalt, srtp.ProtectionProfileAeadAes128Gcm)
		require.NoError(t, err)
		plain, err := rx.DecryptRTP(nil, read(), nil)
		require.NoError(t, err)
		var got rtp.Packet
		require.NoError(t, got.Unmarshal(plain))
		require.Equal(t, want, got.SequenceNumber)
		require.Equal(t, subs[0].ssrc, got.SSRC)
		var orig rtp.Packet
		require.NoError(t, orig.Unmarshal(chromeVP8Packet(t, want, false)))
		require.Equal(t, orig.Payload, got.Payload)
	}
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err := peer.Read(buf)
	require.Error(t, err, "nothing is sent for a packet the cache does not hold")

	// Answering allocates nothing, whether it resends (twice more each,
	// rtxMaxPerPacket) or not; its buffers come from a sync.Pool, which
	// the race detector empties at random.
	now := time.Now().UnixNano()
	allocs := testing.AllocsPerRun(10, func() {
		now += int64(time.Second)
		d.AnswerNack([]rtcp.NackPair{{PacketID: 8, LostPackets: 0b11}}, now)
	})
	if !raceEnabled {
		require.Zero(t, allocs)
	}
}
