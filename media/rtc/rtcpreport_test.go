package rtc

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/stretchr/testify/require"
)

// TestParseReport: the report block about the track's SSRC is found in a
// receiver report and in a sender report, whichever position it has; a
// compound packet whose report does not name it, or that starts with
// something else, gives none.
func TestParseReport(t *testing.T) {
	const mine, other = 0x1111, 0x2222
	block := rtcp.ReceptionReport{SSRC: mine, FractionLost: 26, TotalLost: 40, Jitter: 900, LastSenderReport: 0x12345678, Delay: 0x8000}
	rr := &rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: other, FractionLost: 200}, block}}
	sr := &rtcp.SenderReport{SSRC: 9, NTPTime: 1, Reports: []rtcp.ReceptionReport{block}}
	sdes := rtcp.NewCNAMESourceDescription(9, "client")
	want := reportBlock{fractionLost: 26, jitter: 900, lsr: 0x12345678, dlsr: 0x8000}
	for _, tc := range []struct {
		name string
		pkts []rtcp.Packet
		ok   bool
	}{
		{"receiver report", []rtcp.Packet{rr, sdes}, true},
		{"sender report", []rtcp.Packet{sr, sdes}, true},
		{"another stream's report", []rtcp.Packet{&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: other}}}}, false},
		{"no report first", []rtcp.Packet{&rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: mine}, rr}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseReport(marshalRTCP(t, tc.pkts...), mine)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, want, got)
			}
		})
	}
	// A report block's count larger than what the packet holds reads what is there.
	b := marshalRTCP(t, rr)
	b[0] = b[0]&^0x1f | 31
	_, ok := parseReport(b, mine)
	require.True(t, ok)
	_, ok = parseReport(b[:12], mine)
	require.False(t, ok)
}

// TestRoundTrip: arrival less LSR less DLSR, in 1/65536 s; nothing
// without a sender report or when the clocks put the answer before the question.
func TestRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 250_000_000)
	const unixToNTP = 2208988800
	mid := func(t time.Time) uint32 {
		secs := uint64(t.Unix() + unixToNTP)
		frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
		return uint32((secs<<32 | frac) >> 16)
	}
	sent := now.Add(-300 * time.Millisecond)
	rb := reportBlock{lsr: mid(sent), dlsr: 65536 / 10} // held 100 ms by the receiver
	require.InDelta(t, float64(200*time.Millisecond), float64(rb.roundTrip(now)), float64(time.Millisecond))
	require.Zero(t, reportBlock{dlsr: 5}.roundTrip(now))
	require.Zero(t, reportBlock{lsr: mid(now.Add(time.Second))}.roundTrip(now))
}

// FuzzParseReport: any input is read without a panic, and where pion's
// decoder accepts the packet and finds the block, both agree on it.
func FuzzParseReport(f *testing.F) {
	const mine = 0x1111
	f.Add(marshalRTCP(f, &rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: mine, FractionLost: 3, Jitter: 7}}}))
	f.Add(marshalRTCP(f, &rtcp.SenderReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 5}, {SSRC: mine, Delay: 9}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseReport(b, mine)
		pkts, err := rtcp.Unmarshal(b)
		if err != nil || len(pkts) == 0 {
			return
		}
		var reports []rtcp.ReceptionReport
		switch p := pkts[0].(type) {
		case *rtcp.ReceiverReport:
			reports = p.Reports
		case *rtcp.SenderReport:
			reports = p.Reports
		}
		for _, r := range reports {
			if r.SSRC == mine {
				require.True(t, ok, "pion finds the block")
				require.Equal(t, reportBlock{fractionLost: r.FractionLost, jitter: r.Jitter, lsr: r.LastSenderReport, dlsr: r.Delay}, got)
				return
			}
		}
	})
}
