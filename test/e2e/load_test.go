package e2e

import (
	"bytes"
	"context"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/loadgen"
)

// TestLoadGeneratorSmoke runs the load generator's core against a real node
// with a tiny load (1 publisher with audio and video, 2 subscribers, a 3 s
// window): the report is produced, packets were forwarded and every figure
// is there. No timing thresholds: the machine is shared.
func TestLoadGeneratorSmoke(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	cfg := loadgen.Config{
		URL: n.WSURL, APIKey: n.APIKey, APISecret: n.APISecret, Room: "load-smoke",
		Publishers: 1, Subscribers: 2, Audio: true, Video: true,
		Warmup: time.Second, Duration: 3 * time.Second,
		ServerPID: n.cmd.Process.Pid,
		Log:       zerolog.New(zerolog.NewTestWriter(t)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Budget())
	defer cancel()
	rep, err := loadgen.Run(ctx, cfg)
	require.NoError(t, err)

	require.Equal(t, 3, rep.Connected, "connect failures: %v", rep.ConnectFailures)
	require.Positive(t, rep.ForwardedPackets)
	require.Positive(t, float64(rep.PacketsPerSecond))
	require.Equal(t, 4, rep.Tracks, "2 subscribers x (audio + video)")
	require.False(t, rep.LossPercent.Missing(), "loss is a number")
	require.False(t, math.IsInf(float64(rep.LossPercent), 0))
	require.False(t, rep.CPUMicrosPerPacket.Missing())
	require.Positive(t, rep.ServerRSS)
	require.False(t, rep.RSSPerParticipant.Missing())
	require.Equal(t, 2, rep.JoinSamples)
	require.False(t, rep.JoinP50Ms.Missing())
	require.Positive(t, rep.DelaySamples, "send times were read")
	require.False(t, rep.DelayP99Ms.Missing())
	require.Zero(t, rep.BadStamps)

	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	t.Logf("report:\n%s", text.String())
	require.Contains(t, text.String(), "us per forwarded packet")

	// Every goroutine the generator started has stopped.
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	require.NotContains(t, stacks, "internal/loadgen.", "leaked goroutines:\n%s", stacks)
	require.False(t, strings.Contains(stacks, "internal/loadgen.(*run).read"))
}
