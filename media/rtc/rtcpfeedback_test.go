package rtc

import (
	"testing"

	"github.com/pion/rtcp"
	"github.com/stretchr/testify/require"
)

func marshalRTCP(t testing.TB, pkts ...rtcp.Packet) []byte {
	t.Helper()
	b, err := rtcp.Marshal(pkts)
	require.NoError(t, err)
	return b
}

// TestParseFeedback: from compound packets as clients send them, only the
// PLI, FIR and NACK for the track's own SSRC are taken.
func TestParseFeedback(t *testing.T) {
	const mine, other = 0x1111, 0x2222
	rr := &rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: mine}, {SSRC: other}}}
	sdes := rtcp.NewCNAMESourceDescription(9, "client")
	for _, tc := range []struct {
		name     string
		pkts     []rtcp.Packet
		keyframe bool
		nacks    []rtcp.NackPair
	}{
		{"receiver report only", []rtcp.Packet{rr, sdes}, false, nil},
		{"pli for us", []rtcp.Packet{rr, &rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: mine}}, true, nil},
		{"pli for another track", []rtcp.Packet{rr, &rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: other}}, false, nil},
		{"fir for us", []rtcp.Packet{rr, &rtcp.FullIntraRequest{SenderSSRC: 9, FIR: []rtcp.FIREntry{{SSRC: other}, {SSRC: mine, SequenceNumber: 3}}}}, true, nil},
		{"fir for another track", []rtcp.Packet{&rtcp.FullIntraRequest{SenderSSRC: 9, FIR: []rtcp.FIREntry{{SSRC: other}}}}, false, nil},
		{"nack for us", []rtcp.Packet{rr, &rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: mine, Nacks: []rtcp.NackPair{{PacketID: 100, LostPackets: 0b101}, {PacketID: 65535}}}},
			false, []rtcp.NackPair{{PacketID: 100, LostPackets: 0b101}, {PacketID: 65535}}},
		{"nack for another track", []rtcp.Packet{&rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: other, Nacks: []rtcp.NackPair{{PacketID: 1}}}}, false, nil},
		{"all at once", []rtcp.Packet{rr, sdes,
			&rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: mine, Nacks: []rtcp.NackPair{{PacketID: 7}}},
			&rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: mine},
			&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 9, Bitrate: 1e6, SSRCs: []uint32{mine}},
		}, true, []rtcp.NackPair{{PacketID: 7}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kf, nacks, err := parseFeedback(marshalRTCP(t, tc.pkts...), mine, make([]rtcp.NackPair, 0, maxNackPairs))
			require.NoError(t, err)
			require.Equal(t, tc.keyframe, kf)
			require.Equal(t, len(tc.nacks), len(nacks))
			for i := range tc.nacks {
				require.Equal(t, tc.nacks[i], nacks[i])
			}
		})
	}
}

// TestParseFeedbackBounds: NACK pairs beyond the slice's capacity are
// dropped; truncated and malformed packets are errors, with what came
// before them kept; padding is honoured.
func TestParseFeedbackBounds(t *testing.T) {
	const mine = 0x1111
	many := make([]rtcp.NackPair, 200)
	for i := range many {
		many[i].PacketID = uint16(i * 17)
	}
	b := marshalRTCP(t, &rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: mine, Nacks: many})
	_, nacks, err := parseFeedback(b, mine, make([]rtcp.NackPair, 0, maxNackPairs))
	require.NoError(t, err)
	require.Len(t, nacks, maxNackPairs)

	pli := marshalRTCP(t, &rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: mine})
	for _, bad := range [][]byte{
		append(append([]byte{}, pli...), 0x80),             // a trailing partial header
		append(append([]byte{}, pli...), 0x80, 0xc9, 0, 9), // length past the end
		append(append([]byte{}, pli...), 0x40, 0xc9, 0, 0), // version 1
	} {
		kf, _, err := parseFeedback(bad, mine, nil)
		require.ErrorIs(t, err, errBadRTCP)
		require.True(t, kf, "the PLI before the fault still counts")
	}

	// A PLI with 4 octets of padding, and one whose padding count is wrong.
	padded := append([]byte{0xa1, 0xce, 0, 3}, pli[4:]...)
	padded = append(padded, 0, 0, 0, 4)
	kf, _, err := parseFeedback(padded, mine, nil)
	require.NoError(t, err)
	require.True(t, kf)
	padded[len(padded)-1] = 40
	_, _, err = parseFeedback(padded, mine, nil)
	require.ErrorIs(t, err, errBadRTCP)
}

// FuzzParseFeedback: any input is parsed without a panic or growth past
// the slice's capacity, and where pion's decoder accepts the packet, both
// agree on whether a keyframe is asked for and on the NACK pairs.
func FuzzParseFeedback(f *testing.F) {
	const mine = 0x1111
	f.Add(marshalRTCP(f, &rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: mine}}},
		&rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: mine}))
	f.Add(marshalRTCP(f, &rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: mine, Nacks: []rtcp.NackPair{{PacketID: 1, LostPackets: 3}}}))
	f.Add(marshalRTCP(f, &rtcp.FullIntraRequest{SenderSSRC: 9, FIR: []rtcp.FIREntry{{SSRC: mine}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		kf, nacks, err := parseFeedback(b, mine, make([]rtcp.NackPair, 0, 8))
		if len(nacks) > 8 {
			t.Fatalf("%d nack pairs in a slice of capacity 8", len(nacks))
		}
		pkts, perr := rtcp.Unmarshal(b)
		if err != nil || perr != nil {
			return
		}
		wantKF := false
		var want []rtcp.NackPair
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication:
				wantKF = wantKF || p.MediaSSRC == mine
			case *rtcp.FullIntraRequest:
				for _, e := range p.FIR {
					wantKF = wantKF || e.SSRC == mine
				}
			case *rtcp.TransportLayerNack:
				if p.MediaSSRC == mine {
					want = append(want, p.Nacks...)
				}
			}
		}
		if kf != wantKF {
			t.Fatalf("keyframe %v, pion says %v", kf, wantKF)
		}
		if len(want) > 8 {
			want = want[:8]
		}
		if len(nacks) != len(want) {
			t.Fatalf("nacks %v, pion says %v", nacks, want)
		}
		for i := range want {
			if nacks[i] != want[i] {
				t.Fatalf("nacks %v, pion says %v", nacks, want)
			}
		}
	})
}
