package media

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
)

var (
	testSRTPKey  = []byte("0123456789abcdef")
	testSRTPSalt = []byte("0123456789ab")
)

// directTrack is benchTrack with the node's direct send path: every
// subscriber's packets are sealed with testSRTPKey and sent to the
// returned socket.
func directTrack(tb testing.TB, n int) (*UpTrack, *upLayer, *batchConn, *net.UDPConn) {
	up, l, _ := benchTrack(n)
	conn := newBatchConn(loopbackUDP(tb))
	tb.Cleanup(func() { _ = conn.Close() })
	peer := loopbackUDP(tb)
	a := addrPort(peer)
	up.batch = conn
	for _, d := range up.downTracks() {
		p := &directPath{conn: conn, key: testSRTPKey, salt: testSRTPSalt, profile: srtp.ProtectionProfileAeadAes128Gcm}
		p.addr.Store(&a)
		d.sub.direct.Store(p)
	}
	return up, l, conn, peer
}

// TestDirectSendsDecrypt: packets sent on the direct path reach the peer's
// address as SRTP that a context with the same keys decrypts to the
// rewritten header and the original payload, one per subscriber, each
// under its own SSRC; and a fan-out allocates nothing.
func TestDirectSendsDecrypt(t *testing.T) {
	up, l, _, peer := directTrack(t, 3)
	var h rtp.Header
	pkt := chromeVP8Packet(t, 7, true)
	up.forward(l, &h, pkt, time.Now().UnixNano())

	var want rtp.Packet
	require.NoError(t, want.Unmarshal(pkt))
	rx, err := srtp.CreateContext(testSRTPKey, testSRTPSalt, srtp.ProtectionProfileAeadAes128Gcm)
	require.NoError(t, err)
	seen := map[uint32]bool{}
	buf := make([]byte, 2048)
	for range up.downTracks() {
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
	for _, d := range up.downTracks() {
		require.Equal(t, uint64(1), d.packets.Load())
	}

	requireFanoutDoesNotAllocate(t, up, l, pkt, 7, 200)
}

// TestDirectPathFollowsTheCandidatePair: with no usable pair the track
// goes back to pion's writer.
func TestDirectPathFollowsTheCandidatePair(t *testing.T) {
	up, l, _, _ := directTrack(t, 1)
	d := up.downTracks()[0]
	d.sub.direct.Load().selectPair(nil)
	var h rtp.Header
	up.forward(l, &h, chromeVP8Packet(t, 1, true), time.Now().UnixNano())
	require.Equal(t, 1, d.writer.(*discardWriter).packets)
	require.Nil(t, d.sealer)
}

// BenchmarkUpTrackFanoutDirect is the whole send path per forwarded
// packet: rewrite, SRTP (AES-128-GCM), and sendmmsg to a loopback socket.
func BenchmarkUpTrackFanoutDirect(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("downtracks=%d", n), func(b *testing.B) {
			up, l, conn, _ := directTrack(b, n)
			benchFanout(b, up, l, n)
			require.Equal(b, uint64(b.N+1)*uint64(n), conn.packets.Load())
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/forwarded")
		})
	}
}

// TestDirectAnswersNacks: a NACK from the subscriber is answered from the
// publisher's packet cache on the direct path, under the track's SSRC and
// the sequence numbers the subscriber knows, and a packet the cache does
// not hold is not sent.
func TestDirectAnswersNacks(t *testing.T) {
	up, l, _, peer := directTrack(t, 1)
	sfu := &SFU{}
	sfu.rtxBufs.New = func() any { b := make([]byte, batchSlot); return &b }
	d := up.downTracks()[0]
	d.sub.room = &Room{sfu: sfu}
	var h rtp.Header
	for seq := uint16(7); seq <= 9; seq++ {
		up.forward(l, &h, chromeVP8Packet(t, seq, seq == 7), time.Now().UnixNano())
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
	d.answerNack([]rtcp.NackPair{{PacketID: 8, LostPackets: 0b11}}, time.Now().UnixNano())
	for _, want := range []uint16{8, 9} {
		// A fresh context: the subscriber never received the lost packets.
		rx, err := srtp.CreateContext(testSRTPKey, testSRTPSalt, srtp.ProtectionProfileAeadAes128Gcm)
		require.NoError(t, err)
		plain, err := rx.DecryptRTP(nil, read(), nil)
		require.NoError(t, err)
		var got rtp.Packet
		require.NoError(t, got.Unmarshal(plain))
		require.Equal(t, want, got.SequenceNumber)
		require.Equal(t, d.ssrc, got.SSRC)
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
		d.answerNack([]rtcp.NackPair{{PacketID: 8, LostPackets: 0b11}}, now)
	})
	if !raceEnabled {
		require.Zero(t, allocs)
	}
}
