package loadgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/rtpgen"
)

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"ws://127.0.0.1:7880", true},
		{"ws://localhost:7880", true},
		{"wss://[::1]:7880/", true},
		{"http://127.0.0.2:7880", true},
		{"ws://10.0.0.1:7880", false},
		{"ws://example.org", false},
		{"ftp://127.0.0.1", false},
		{"://", false},
	} {
		err := CheckLoopback(tc.url)
		if tc.ok {
			require.NoError(t, err, tc.url)
		} else {
			require.ErrorIs(t, err, ErrNotLoopback, tc.url)
		}
	}
}

func TestValidateCollectsEveryProblem(t *testing.T) {
	c := Config{URL: "ws://192.0.2.1", Simulcast: true}
	err := c.Validate()
	require.ErrorIs(t, err, ErrNotLoopback)
	require.ErrorIs(t, err, ErrConfig)
	for _, want := range []string{"API key", "room", "publishers", "nobody subscribes", "audio, video", "simulcast", "duration"} {
		require.Contains(t, err.Error(), want)
	}
	good := Config{URL: "ws://127.0.0.1:1", APIKey: "k", APISecret: "s", Room: "r", Publishers: 1, Subscribers: 1, Audio: true, Duration: time.Second}
	require.NoError(t, good.Validate())
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	require.True(t, math.IsNaN(h.quantile(0.5)))
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * 100 * time.Microsecond) // 0.1 .. 100 ms
	}
	require.InEpsilon(t, 50.0, h.quantile(0.5), 0.04)
	require.InEpsilon(t, 99.0, h.quantile(0.99), 0.04)
	h.add(-time.Second) // clock skew counts as zero
	require.EqualValues(t, 1001, h.n)
	for us := uint64(0); us < 1<<30; us = us*3/2 + 1 {
		v := histValue(histIndex(us))
		require.InDelta(t, float64(us), v, float64(us)*0.04+1, "us=%d", us)
	}
	var m histogram
	m.merge(&h)
	require.Equal(t, h.n, m.n)
}

func TestTrackStatsLossAcrossWrap(t *testing.T) {
	var s trackStats
	now := time.Now()
	seq := uint16(65530)
	got := 0
	for i := range 20 {
		if i == 8 || i == 9 { // two lost, across the wrap
			seq++
			continue
		}
		s.record(seq, time.Time{}, now)
		seq++
		got++
	}
	s.record(seq-5, time.Time{}, now) // a late duplicate does not move the top
	exp, rcv := s.loss()
	require.EqualValues(t, 20, exp)
	require.EqualValues(t, got+1, rcv)
}

func TestParseRTPAndStamps(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	op := (&rtpgen.Opus{Bytes: 80}).Next(sent)
	op.SequenceNumber = 4242
	op.CSRC = []uint32{1, 2}
	require.NoError(t, op.SetExtension(1, []byte{0x30}))
	op.Padding, op.PaddingSize = true, 4
	raw, err := op.Marshal()
	require.NoError(t, err)
	seq, payload, ok := parseRTP(raw)
	require.True(t, ok)
	require.EqualValues(t, 4242, seq)
	require.Len(t, payload, 80)
	at, ok := rtpgen.SentAt(payload, false)
	require.True(t, ok)
	require.Equal(t, sent.UnixNano(), at.UnixNano())

	frame := (&rtpgen.VP8{FPS: 30, FrameBytes: 3000, KeyframeBytes: 3000, MTU: 1100}).NextFrame(sent)
	at, ok = vp8Stamp(frame[0].Payload)
	require.True(t, ok)
	require.Equal(t, sent.UnixNano(), at.UnixNano())
	_, ok = vp8Stamp(frame[1].Payload)
	require.False(t, ok, "only a frame's first packet is stamped")

	// An SFU may add TL0PICIDX and TID to the descriptor: the stamp is still found.
	p := frame[0].Payload
	rewritten := append([]byte{p[0], p[1] | 0x40 | 0x20, p[2], p[3], 7, 0x20}, p[4:]...)
	at, ok = vp8Stamp(rewritten)
	require.True(t, ok)
	require.Equal(t, sent.UnixNano(), at.UnixNano())

	for _, bad := range [][]byte{nil, {0x80}, make([]byte, 11), {0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}} {
		_, _, ok := parseRTP(bad)
		require.False(t, ok)
	}
	hdr, err := (&rtp.Header{Version: 2}).Marshal()
	require.NoError(t, err)
	_, payload, ok = parseRTP(hdr)
	require.True(t, ok)
	require.Empty(t, payload)

	// A padding-only packet (a bandwidth probe) has no media: it does not
	// end a join (loadgen.go read).
	probe, err := (&rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, SequenceNumber: 9}, PaddingSize: 224}).Marshal()
	require.NoError(t, err)
	seq, payload, ok = parseRTP(probe)
	require.True(t, ok)
	require.EqualValues(t, 9, seq)
	require.Empty(t, payload)
}

func TestParseProc(t *testing.T) {
	stat := []byte("1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9 0 1000 1 2\n")
	cpu, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, 4*time.Second, cpu)
	_, err = parseStatCPU([]byte("garbage"))
	require.ErrorIs(t, err, ErrProc)

	rss, err := parseStatusRSS([]byte("Name:\tx\nVmRSS:\t   2048 kB\nThreads: 3\n"))
	require.NoError(t, err)
	require.EqualValues(t, 2<<20, rss)
	_, err = parseStatusRSS([]byte("Name:\tkthread\n"))
	require.True(t, errors.Is(err, ErrProc))

	m, err := parseMachine([]byte("cpu  100 5 50 1000 30 2 3 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n"))
	require.NoError(t, err)
	require.Equal(t, 1600*time.Millisecond, m.busy)

	self, err := readProc("self")
	require.NoError(t, err)
	require.Positive(t, self.rss)
}

func TestNumJSON(t *testing.T) {
	b, err := json.Marshal(struct{ A, B Num }{Num(math.NaN()), 1.5})
	require.NoError(t, err)
	require.JSONEq(t, `{"A":null,"B":1.5}`, string(b))
	var back struct{ A, B Num }
	require.NoError(t, json.Unmarshal(b, &back))
	require.True(t, back.A.Missing())
	require.EqualValues(t, 1.5, back.B)
}

func TestCompareMediansRatiosAndBusyRuns(t *testing.T) {
	mk := func(label string, us, other float64, gen bool) *Report {
		return &Report{Label: label, Scenario: "audio 10x40", CPUMicrosPerPacket: Num(us), RSSPerParticipant: 1 << 20,
			RSSDeltaPerParticipant: nan(), JoinP50Ms: 100, JoinP99Ms: 200, LossPercent: 0, DelayP50Ms: 1, DelayP99Ms: 2,
			PacketsPerSecond: 20000, ServerCPUCores: 0.5, GeneratorCPUCores: 0.4, OtherCPUCores: Num(other),
			GeneratorLimited: gen, AllMedia: true, Connected: 50, Participants: 50}
	}
	reports := []*Report{
		mk("entente", 3, 0, false), mk("livekit", 12, 0, false),
		mk("entente", 4, 0, false), mk("livekit", 14, 0.1, false),
		mk("entente", 100, 1.5, false), mk("livekit", 13, 0, true),
		{Label: "entente", Scenario: "busy only", OtherCPUCores: 1},
	}
	for i, r := range reports[:6] {
		r.Run = i/2 + 1
	}
	var out bytes.Buffer
	require.NoError(t, Compare(&out, reports, CompareOptions{A: "entente", B: "livekit"}))
	s := out.String()
	require.Contains(t, s, "| audio 10x40 | CPU us/packet | 3.50 | 13.00 G | 0.27 |", s)
	require.Contains(t, s, "| busy only | CPU us/packet | busy (1/1 runs) | no runs | n/a |", s)
	require.Contains(t, s, "audio 10x40, entente: 1 of 3 runs had other work")
	require.Equal(t, 1, strings.Count(s, "|---|---|---:|---:|---:|"))
	// Pairs: runs 1 and 2 (run 3's entente side was disturbed): 3/12 and 4/14.
	require.Contains(t, s, "| audio 10x40 | 1: 0.25, 2: 0.29 | 0.27 |", s)
	require.NotContains(t, s, "| busy only | 1:", s)

	out.Reset()
	require.NoError(t, Compare(&out, reports, CompareOptions{A: "entente", B: "livekit", IncludeBusy: true}))
	require.Contains(t, out.String(), "| audio 10x40 | CPU us/packet | 4.00 ! | 13.00 G | 0.31 |", out.String())
}
