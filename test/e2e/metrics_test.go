package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// scrape reads a node's /metrics into "name{labels}" -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain; version=0.0.4")
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	require.NoError(t, sc.Err())
	return out
}

// TestMetricsDuringACall: the metrics scraped during a call of two Go SDK
// clients show that call (two participants, four tracks, four
// subscriptions, packets forwarded and growing), the counters never go
// back when the clients leave, and /readyz says ready.
func TestMetricsDuringACall(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp"))
	n := StartNode(t, NodeOptions{ExtraTOML: fmt.Sprintf("\n[metrics]\nlisten = %q\n", metricsAddr)})
	url := "http://" + metricsAddr + "/metrics"

	resp, err := http.Get(n.HTTPURL + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ready", string(body))

	idle := scrape(t, url)
	require.Zero(t, idle["entente_rooms"])
	require.Zero(t, idle[`entente_participants{origin="local"}`])

	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })
	a := connectClient(t, ctx, n, "metrics", "alice")
	b := connectClient(t, ctx, n, "metrics", "bob")
	a.publish(t, ctx, &gens)
	b.publish(t, ctx, &gens)
	eventually(t, 20*time.Second, "both receive each other", func() bool {
		return a.count(key("bob", webrtc.RTPCodecTypeVideo)) > 20 && b.count(key("alice", webrtc.RTPCodecTypeVideo)) > 20
	})
	var during map[string]float64
	eventually(t, 10*time.Second, "the metrics show the call", func() bool {
		during = scrape(t, url)
		return during["entente_rooms"] == 1 && during[`entente_participants{origin="local"}`] == 2 &&
			during["entente_published_tracks"] == 4 && during["entente_subscriptions"] == 4
	})
	t.Logf("during the call: %v", during)
	time.Sleep(time.Second)
	later := scrape(t, url)
	require.Greater(t, later["entente_forwarded_packets_total"], during["entente_forwarded_packets_total"], "forwarded packets grow")
	require.Greater(t, later["entente_forwarded_bytes_total"], during["entente_forwarded_bytes_total"])
	// At least what the two clients received (each got the other's audio
	// and video).
	got := float64(a.count(key("bob", webrtc.RTPCodecTypeAudio)) + a.count(key("bob", webrtc.RTPCodecTypeVideo)) + b.count(key("alice", webrtc.RTPCodecTypeAudio)) + b.count(key("alice", webrtc.RTPCodecTypeVideo)))
	require.GreaterOrEqual(t, later["entente_forwarded_packets_total"], got*0.9, "forwarded packets cover what the clients received")

	a.room.Disconnect()
	b.room.Disconnect()
	var after map[string]float64
	eventually(t, 10*time.Second, "the participants are gone from the metrics", func() bool {
		after = scrape(t, url)
		return after[`entente_participants{origin="local"}`] == 0 && after["entente_subscriptions"] == 0
	})
	require.GreaterOrEqual(t, after["entente_forwarded_packets_total"], later["entente_forwarded_packets_total"],
		"a counter never goes back: ended subscriptions' packets stay counted")
}
