package rtc

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
)

// TestSealersMatchPion: what each sealer makes, pion's SRTP context with
// the same master key decrypts, for every profile the node may negotiate,
// under the rollover counters the core's send window gives a sink (its
// TestSendWindow checks those): across a sequence number wrap, with a
// packet from before the wrap sent after it, from a first packet of 0,
// and with CSRCs and padding in the header.
func TestSealersMatchPion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		profile srtp.ProtectionProfile
		own     bool
	}{
		{"aes-128-gcm", srtp.ProtectionProfileAeadAes128Gcm, true},
		{"aes-256-gcm", srtp.ProtectionProfileAeadAes256Gcm, true},
		{"aes-128-cm-hmac-sha1-80", srtp.ProtectionProfileAes128CmHmacSha1_80, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyLen, err := tc.profile.KeyLen()
			require.NoError(t, err)
			saltLen, err := tc.profile.SaltLen()
			require.NoError(t, err)
			key := bytes.Repeat([]byte{0x5a}, keyLen)
			salt := bytes.Repeat([]byte{0xa5}, saltLen)
			s, err := newSealer(key, salt, tc.profile)
			require.NoError(t, err)
			_, own := s.(*gcmSealer)
			require.Equal(t, tc.own, own)
			for _, run := range []struct {
				seqs []uint16
				rocs []uint32
				roc  uint32
			}{
				// 65535 is held back and sent after the wrap, as a
				// reordered packet.
				{[]uint16{65533, 65534, 0, 1, 65535, 2}, []uint32{0, 0, 1, 1, 0, 1}, 1},
				{[]uint16{0, 1, 2}, []uint32{0, 0, 0}, 0},
				{[]uint16{65535, 0, 1}, []uint32{0, 1, 1}, 1},
			} {
				rx, err := srtp.CreateContext(key, salt, tc.profile)
				require.NoError(t, err)
				buf := make([]byte, batchSlot)
				for i, seq := range run.seqs {
					roc := run.rocs[i]
					h := rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(i) * 960, SSRC: 0xdecafbad}
					if i == 3 {
						h.CSRC = []uint32{1, 2}
					}
					payload := bytes.Repeat([]byte{byte(i + 1)}, 100+i)
					out, err := s.seal(buf, &h, payload, roc)
					require.NoError(t, err)
					plain, err := rx.DecryptRTP(nil, out, nil)
					require.NoError(t, err, "packet %d (seq %d)", i, seq)
					var got rtp.Packet
					require.NoError(t, got.Unmarshal(plain))
					require.Equal(t, seq, got.SequenceNumber)
					require.Equal(t, h.CSRC, got.CSRC)
					require.Equal(t, payload, got.Payload)
				}
				roc, ok := rx.ROC(0xdecafbad)
				require.True(t, ok)
				require.Equal(t, run.roc, roc)
			}

			// A buffer too small for the packet and its tag is refused.
			_, err = s.seal(make([]byte, 100), &rtp.Header{Version: 2}, make([]byte, 90), 0)
			require.ErrorIs(t, err, errPacketTooLarge)
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	payload := make([]byte, 1100)
	for _, p := range []srtp.ProtectionProfile{srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAes128CmHmacSha1_80} {
		keyLen, _ := p.KeyLen()
		saltLen, _ := p.SaltLen()
		own, err := newSealer(make([]byte, keyLen), make([]byte, saltLen), p)
		require.NoError(b, err)
		ctx, err := srtp.CreateContext(make([]byte, keyLen), make([]byte, saltLen), p)
		require.NoError(b, err)
		for _, s := range []struct {
			name string
			s    rtpSealer
		}{{"node", own}, {"pion-context", &contextSealer{ctx: ctx}}} {
			b.Run(p.String()+"/"+s.name, func(b *testing.B) {
				buf := make([]byte, batchSlot)
				h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					h.SequenceNumber++
					if _, err := s.s.seal(buf, &h, payload, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
