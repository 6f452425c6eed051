package loadgen

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidateTwoNode(t *testing.T) {
	good := Config{URL: "ws://127.0.0.1:1", APIKey: "k", APISecret: "s", Room: "r", Publishers: 1, Subscribers: 1, Audio: true, Duration: time.Second,
		URLB: "ws://127.0.0.1:2", APIKeyB: "kb", APISecretB: "sb", ServerPIDB: 7}
	require.NoError(t, good.Validate())
	require.True(t, good.TwoNode())

	bad := good
	bad.URLB, bad.APISecretB, bad.Subscribers = "ws://192.0.2.1:2", "", 0
	bad.PublishersSubscribe, bad.Publishers = true, 2
	err := bad.Validate()
	require.ErrorIs(t, err, ErrNotLoopback)
	require.ErrorContains(t, err, "second node's API key")
	require.ErrorContains(t, err, "two-node mode needs subscribers")

	same := good
	same.URLB = same.URL
	require.ErrorContains(t, same.Validate(), "second node's URL is the first's")

	orphan := good
	orphan.URLB = ""
	require.ErrorContains(t, orphan.Validate(), "without its URL")
}

// TestReportTwoNode checks the two-node figures of a report made from a
// run's recorded state: packets of a track count once towards the trunk
// however many subscribers got them, and each node's CPU is divided by
// the packets it forwarded.
func TestReportTwoNode(t *testing.T) {
	cfg := Config{URL: "ws://127.0.0.1:1", URLB: "ws://127.0.0.1:2", Publishers: 1, Subscribers: 2, ServerPID: 1, ServerPIDB: 2}
	r := &run{cfg: cfg}
	t0 := time.Unix(1000, 0)
	pub := &participant{identity: "pub-000", publisher: true, start: t0}
	s1 := &participant{identity: "sub-000", subscribes: true, remote: true, start: t0}
	s2 := &participant{identity: "sub-001", subscribes: true, remote: true, start: t0.Add(time.Second)}
	s1.firstMedia.Store(t0.Add(100 * time.Millisecond).UnixNano())
	s1.firstFrame.Store(t0.Add(300 * time.Millisecond).UnixNano())
	s2.firstMedia.Store(t0.Add(1200 * time.Millisecond).UnixNano())
	s2.firstFrame.Store(t0.Add(1500 * time.Millisecond).UnixNano())
	// Audio track TA and video track TV; s2 missed 10 packets of TV.
	s1.tracks = []*trackStats{{track: "TA", packets: 500}, {track: "TV", packets: 900}}
	s2.tracks = []*trackStats{{track: "TA", packets: 500}, {track: "TV", packets: 890}}
	r.participants = []*participant{pub, s1, s2}

	start := snap{at: t0, server: procSample{cpu: time.Second}, serverB: procSample{cpu: 2 * time.Second}}
	end := snap{at: t0.Add(10 * time.Second),
		server:  procSample{cpu: time.Second + 28*time.Millisecond},   // 28 ms on A
		serverB: procSample{cpu: 2*time.Second + 56*time.Millisecond}, // 56 ms on B
		self:    procSample{cpu: 0}, machine: machineSample{busy: time.Second}}
	rep := r.report(procSample{}, start, end, time.Second, true)

	require.Equal(t, uint64(2790), rep.ForwardedPackets)
	require.Equal(t, uint64(1400), rep.SourcePackets, "each track once: 500 + 900")
	require.InDelta(t, 28e3/1400, float64(rep.CPUMicrosPerSourcePacket), 1e-9)
	require.InDelta(t, 28e3/2790, float64(rep.CPUMicrosPerPacket), 1e-9)
	require.InDelta(t, 56e3/2790, float64(rep.CPUMicrosPerPacketB), 1e-9)
	require.InDelta(t, 84e3/2790, float64(rep.CPUMicrosPerPacketBoth), 1e-9)
	require.InDelta(t, 0.0056, float64(rep.ServerBCPUCores), 1e-9)
	require.Equal(t, 2, rep.FrameSamples)
	require.Equal(t, 300.0, float64(rep.FrameP50Ms), "join to first frame: 300 and 500 ms")
	require.Equal(t, 500.0, float64(rep.FrameP99Ms))
	require.Equal(t, 100.0, float64(rep.JoinP50Ms))
	// The machine's 1 s of busy CPU less both nodes' 84 ms: 0.0916 cores.
	require.InDelta(t, 0.0916, float64(rep.OtherCPUCores), 1e-9)
	require.Equal(t, "ws://127.0.0.1:2", rep.URLB)

	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	require.Contains(t, text.String(), "us per packet sent on the trunk")
}

func TestFederationTablePairsRuns(t *testing.T) {
	mk := func(label string, run int, delay, frame, a, aSrc, b, both, other float64) *Report {
		return &Report{Label: label, Scenario: "av-1x10", Run: run,
			DelayP50Ms: Num(delay), DelayP99Ms: Num(2 * delay), FrameP50Ms: Num(frame), FrameP99Ms: Num(frame),
			JoinP50Ms: Num(frame), LossPercent: 0, PacketsPerSecond: 1400,
			CPUMicrosPerPacket: Num(a), CPUMicrosPerSourcePacket: Num(aSrc),
			CPUMicrosPerPacketB: Num(b), CPUMicrosPerPacketBoth: Num(both), OtherCPUCores: Num(other)}
	}
	n := nan()
	reports := []*Report{
		mk("local", 1, 1.0, 100, 10, 100, float64(n), float64(n), 0),
		mk("remote", 1, 1.5, 400, 5, 50, 12, 17, 0),
		mk("local", 2, 1.2, 120, 11, 110, float64(n), float64(n), 0),
		mk("remote", 2, 1.4, 300, 5, 55, 11, 16, 0.1),
		mk("local", 3, 0.9, 90, 9, 90, float64(n), float64(n), 0),
		mk("remote", 3, 9, 900, 50, 500, 100, 150, 1.5), // disturbed: refused
		{Label: "livekit", Scenario: "other"},           // not a federation report: ignored
	}
	var out bytes.Buffer
	require.NoError(t, FederationTable(&out, reports, FederationOptions{}))
	s := out.String()
	// Local medians over 3 runs; remote over runs 1 and 2; differences of pairs 1 and 2: 0.5 and 0.2.
	require.Contains(t, s, "| av-1x10 | one-way delay p50 ms | 1.00 (0.90 to 1.20, n=3) | 1.45 (1.40 to 1.50, n=2) | 0.35 (0.20 to 0.50, n=2) |", s)
	require.Contains(t, s, "| av-1x10 | join to first frame p50 ms | 100 (90 to 120, n=3) | 350 (300 to 400, n=2) | 240 (180 to 300, n=2) |", s)
	// A per trunk packet over A per local packet: 50/10 and 55/11.
	require.Contains(t, s, "| av-1x10 | A: CPU us per packet forwarded (local: to a subscriber; remote: on the trunk) | 10.00 (9.00 to 11.00, n=3) | 52.50 (50.00 to 55.00, n=2) | 5.00x (5.00 to 5.00, n=2) |", s)
	// B per delivered packet over local A's: 12/10, 11/11.
	require.Contains(t, s, "| av-1x10 | fan-out node: CPU us per delivered packet (local: A; remote: B) | 10.00 (9.00 to 11.00, n=3) | 11.50 (11.00 to 12.00, n=2) | 1.10x (1.00 to 1.20, n=2) |", s)
	require.Contains(t, s, "av-1x10: 1 disturbed run(s) refused")
	require.NotContains(t, s, "| other |")

	out.Reset()
	require.NoError(t, FederationTable(&out, reports, FederationOptions{IncludeBusy: true}))
	require.Contains(t, out.String(), "| av-1x10 | one-way delay p50 ms | 1.00 (0.90 to 1.20, n=3) | 1.50 (1.40 to 9.00, n=3) |", out.String())
	require.NotContains(t, out.String(), "refused")
}
