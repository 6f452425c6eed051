package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

// dynacastRunTimeout bounds TestBrowserDynacast's browser run: joins, the
// encoder's ramp up to its top layer, and three phases, each with the
// publisher's pause delay (5 s) and generous waits.
const dynacastRunTimeout = 5 * time.Minute

// outboundLayer is one simulcast encoding's outbound-rtp stats, as
// client.html outboundVideo reads them.
type outboundLayer struct {
	BytesSent               int64  `json:"bytesSent"`
	PacketsSent             int64  `json:"packetsSent"`
	FramesEncoded           int64  `json:"framesEncoded"`
	FrameWidth              int    `json:"frameWidth"`
	FrameHeight             int    `json:"frameHeight"`
	Active                  *bool  `json:"active"`
	QualityLimitationReason string `json:"qualityLimitationReason"`
}

// outboundSample is one line of run.mjs's samples file.
type outboundSample struct {
	Label  string                   `json:"label"`
	T      int64                    `json:"t"` // Unix ms
	Layers map[string]outboundLayer `json:"layers"`
}

func (s outboundSample) at() time.Time { return time.UnixMilli(s.T) }

// readSamples reads the samples of page label written so far (a line
// being written is skipped).
func readSamples(t *testing.T, path, label string) []outboundSample {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var out []outboundSample
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s outboundSample
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Label == label {
			out = append(out, s)
		}
	}
	return out
}

// layerWindow is what a page's encodings sent between two samples.
type layerWindow struct {
	from, to outboundSample
}

// window returns the first sample at or after from and the first one at
// or after to; ok is false when there is no such pair yet.
func window(samples []outboundSample, from, to time.Time) (layerWindow, bool) {
	first, last := -1, -1
	for i, s := range samples {
		if first < 0 && !s.at().Before(from) {
			first = i
		}
		if !s.at().Before(to) {
			last = i
			break
		}
	}
	if first < 0 || last <= first {
		return layerWindow{}, false
	}
	return layerWindow{from: samples[first], to: samples[last]}, true
}

// length is the time between the window's samples.
func (w layerWindow) length() time.Duration { return w.to.at().Sub(w.from.at()) }

// bytes is what encoding rid sent in the window.
func (w layerWindow) bytes(rid string) int64 {
	return w.to.Layers[rid].BytesSent - w.from.Layers[rid].BytesSent
}

// kbps is encoding rid's bitrate over the window.
func (w layerWindow) kbps(rid string) float64 {
	ms := w.to.T - w.from.T
	if ms <= 0 {
		return 0
	}
	return float64(w.bytes(rid)) * 8 / float64(ms)
}

// lastChange is when encoding rid's bytesSent last grew, among the
// samples from after on (the zero time if it did not).
func lastChange(samples []outboundSample, rid string, after time.Time) time.Time {
	var at time.Time
	for i := 1; i < len(samples); i++ {
		if !samples[i].at().Before(after) && samples[i].Layers[rid].BytesSent > samples[i-1].Layers[rid].BytesSent {
			at = samples[i].at()
		}
	}
	return at
}

// firstChange is when encoding rid's bytesSent first grew, among the
// samples from after on (the zero time if it did not).
func firstChange(samples []outboundSample, rid string, after time.Time) time.Time {
	for i := 1; i < len(samples); i++ {
		if !samples[i].at().Before(after) && samples[i].Layers[rid].BytesSent > samples[i-1].Layers[rid].BytesSent {
			return samples[i].at()
		}
	}
	return time.Time{}
}

// describe prints each encoding's bitrate over the window and its state
// at its end.
func (w layerWindow) describe() string {
	var b strings.Builder
	for _, rid := range []string{"q", "h", "f"} {
		l, ok := w.to.Layers[rid]
		if !ok {
			fmt.Fprintf(&b, " %s: absent;", rid)
			continue
		}
		active := "?"
		if l.Active != nil {
			active = fmt.Sprint(*l.Active)
		}
		fmt.Fprintf(&b, " %s %dx%d: %.0f kbit/s (active %s, limitation %q);", rid, l.FrameWidth, l.FrameHeight, w.kbps(rid), active, l.QualityLimitationReason)
	}
	return strings.TrimSuffix(strings.TrimSpace(b.String()), ";")
}

// TestBrowserDynacast: two livekit-client pages in Chromium publish
// simulcast cameras (q, h, f), one with the dynacast option (as Element
// Call does), one without; a Go SDK client is their only subscriber. While
// it watches the high layer, both pages send all three. When it asks for
// the low layer only, the dynacast page stops sending h and f (the node's
// SubscribedQualityUpdate turns the encodings off: outbound-rtp bytesSent
// stops growing, active false) and the other page goes on sending them
// (livekit-client ignores the update without the option: the stop is the
// update's doing, not the network's or the CPU's). When the subscriber asks
// for the high layer again, the dynacast page sends f again. The
// bitrates measured per layer are logged for each phase.
func TestBrowserDynacast(t *testing.T) {
	env := findBrowserEnv(t, false)
	n := StartNode(t, NodeOptions{})
	client := serveClientPage(t, env)
	const room = "e2e-dynacast"
	dir := t.TempDir()
	samplesFile, stopFile := filepath.Join(dir, "samples.jsonl"), filepath.Join(dir, "stop")
	off := false
	run := startBrowserScript(t, env, "run.mjs", "run.mjs", map[string]any{
		"timeoutMs": dynacastRunTimeout.Milliseconds(), "samplesFile": samplesFile, "untilFile": stopFile,
		"pages": []browserPage{
			{Label: "dynacast", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "dyn"),
				Simulcast: true, PublishOnly: true, OutboundSampleMs: 500},
			{Label: "plain", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "plain"),
				Simulcast: true, PublishOnly: true, Dynacast: &off, OutboundSampleMs: 500},
		},
	}, exec.Command, false)

	// The subscriber: it takes every video track and reads its packets.
	var mu sync.Mutex
	pubs := map[string]*lksdk.RemoteTrackPublication{} // by publisher identity
	received := map[string]int{}
	var readers sync.WaitGroup
	sub, err := lksdk.ConnectToRoomWithToken(n.WSURL, n.Token(t, room, "watcher"), &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(tr *webrtc.TrackRemote, p *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
				if tr.Kind() != webrtc.RTPCodecTypeVideo {
					readTrack(&readers, tr, func(*rtp.Packet) {})
					return
				}
				id := rp.Identity()
				mu.Lock()
				pubs[id] = p
				mu.Unlock()
				readTrack(&readers, tr, func(*rtp.Packet) {
					mu.Lock()
					received[id]++
					mu.Unlock()
				})
			},
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { sub.Disconnect(); readers.Wait() })

	const (
		span = 4 * time.Second  // each phase's measurement
		wait = 60 * time.Second // for a layer to start or stop
	)
	pages := []string{"dynacast", "plain"}
	setQuality := func(q livekit.VideoQuality) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range pubs {
			require.NoError(t, p.SetVideoQuality(q))
		}
	}
	// lastSpan returns each page's window over its last span of samples,
	// if every page has one that starts at or after since (a page that
	// samples late under load gets by with three quarters of a span).
	lastSpan := func(since time.Time) (map[string]layerWindow, bool) {
		out := map[string]layerWindow{}
		for _, label := range pages {
			s := readSamples(t, samplesFile, label)
			if len(s) == 0 {
				return nil, false
			}
			end := s[len(s)-1].at()
			from := end.Add(-span)
			if from.Before(since) {
				return nil, false
			}
			w, ok := window(s, from, end)
			if !ok || w.length() < span*3/4 {
				return nil, false
			}
			out[label] = w
		}
		return out, true
	}
	// phase waits for a span, from since on, over which cond holds for
	// the pages' windows; it logs and returns them.
	phase := func(name string, since time.Time, cond func(map[string]layerWindow) bool) map[string]layerWindow {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(wait); ; time.Sleep(250 * time.Millisecond) {
			w, ok := lastSpan(since)
			if ok && cond(w) {
				t.Logf("%s, after %s:", name, time.Since(start).Round(100*time.Millisecond))
				for _, label := range pages {
					t.Logf("  page %s over %s: %s", label, w[label].length().Round(10*time.Millisecond), w[label].describe())
				}
				return w
			}
			if time.Now().After(deadline) {
				for _, label := range pages {
					if s := readSamples(t, samplesFile, label); len(s) > 0 {
						lw, _ := window(s, s[len(s)-1].at().Add(-span), s[len(s)-1].at())
						t.Logf("page %s, last %s: %s", label, span, lw.describe())
					}
				}
				t.Fatalf("%s: not within %s", name, wait)
			}
		}
	}

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pubs) == 2
	}, wait, 100*time.Millisecond, "the subscriber gets both pages' video tracks")

	// Watching the high layer: every layer goes out, from both pages (the
	// encoders ramp up to the top layer as the bandwidth estimate grows).
	allLayers := func(w map[string]layerWindow) bool {
		for _, label := range pages {
			for _, rid := range []string{"q", "h", "f"} {
				if w[label].bytes(rid) == 0 {
					return false
				}
			}
		}
		return true
	}
	phase("watching the high layer: every layer sent by both pages", time.Now(), allLayers)
	// The next span, once the encoders have ramped up.
	high := phase("watching the high layer, the next span", time.Now(), allLayers)

	// The low layer only: after the node's pause delay (5 s), the dynacast
	// page turns h and f off, and keeps them off; the other page goes on
	// sending f (its bandwidth estimate allowing).
	askedLow := time.Now()
	setQuality(livekit.VideoQuality_LOW)
	stopped := phase("asked for the low layer: h and f stopped on the dynacast page", askedLow, func(w map[string]layerWindow) bool {
		return w["dynacast"].bytes("h") == 0 && w["dynacast"].bytes("f") == 0
	})
	dynSamples := readSamples(t, samplesFile, "dynacast")
	lastF, lastH := lastChange(dynSamples, "f", askedLow), lastChange(dynSamples, "h", askedLow)
	low := phase("watching the low layer only: q from both, f from the page without dynacast", stopped["dynacast"].from.at(),
		func(w map[string]layerWindow) bool {
			return w["dynacast"].bytes("q") > 0 && w["plain"].bytes("f") > 0
		})
	for _, rid := range []string{"h", "f"} {
		require.Equal(t, stopped["dynacast"].from.Layers[rid].BytesSent, low["dynacast"].to.Layers[rid].BytesSent,
			"nobody watches layer %s: the dynacast page sends none of it, all along", rid)
		if a := low["dynacast"].to.Layers[rid].Active; a != nil {
			require.False(t, *a, "layer %s's encoding is off", rid)
		}
	}

	// The high layer again: f comes back on the dynacast page at once.
	askedHigh := time.Now()
	setQuality(livekit.VideoQuality_HIGH)
	again := phase("asked for the high layer again: f sent again by the dynacast page", askedHigh, func(w map[string]layerWindow) bool {
		return w["dynacast"].bytes("f") > 0
	})
	if a := again["dynacast"].to.Layers["f"].Active; a != nil {
		require.True(t, *a)
	}
	// The next span, once the encoder is back to its pace.
	steady := phase("watching the high layer again, the next span", time.Now(), func(w map[string]layerWindow) bool {
		return w["dynacast"].bytes("f") > 0
	})
	firstF := firstChange(readSamples(t, samplesFile, "dynacast"), "f", askedHigh)
	sinceAsk := func(at, from time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return at.Sub(from).Round(100 * time.Millisecond).String()
	}
	t.Logf("dynacast page (samples every 500 ms): after the subscriber asked for the low layer, h grew last at %s, f at %s "+
		"(the node's pause delay is 5 s); after it asked for the high layer, f grew first at %s",
		sinceAsk(lastH, askedLow), sinceAsk(lastF, askedLow), sinceAsk(firstF, askedHigh))
	t.Logf("f (720p) in kbit/s, watching high -> low -> high again (first span) -> (next span): dynacast page %.0f -> %.0f -> %.0f -> %.0f; plain page %.0f -> %.0f -> %.0f -> %.0f",
		high["dynacast"].kbps("f"), low["dynacast"].kbps("f"), again["dynacast"].kbps("f"), steady["dynacast"].kbps("f"),
		high["plain"].kbps("f"), low["plain"].kbps("f"), again["plain"].kbps("f"), steady["plain"].kbps("f"))

	mu.Lock()
	t.Logf("video packets the subscriber received: %v", received)
	mu.Unlock()
	var updates []string
	for _, line := range strings.Split(n.Logs(), "\n") {
		if strings.Contains(line, "subscribed layers") {
			updates = append(updates, line)
		}
	}
	t.Logf("the node's dynacast updates (%d):\n%s", len(updates), strings.Join(updates, "\n"))

	require.NoError(t, os.WriteFile(stopFile, nil, 0o600))
	res := finishBrowserRun(t, run, dynacastRunTimeout+15*time.Second)
	require.Empty(t, res.Error)
	require.False(t, res.TimedOut, "the browser run timed out")
	for _, p := range res.Pages {
		require.True(t, p.OK, "page %s: %+v", p.Label, p)
		require.Positive(t, p.OutboundBytes)
	}
}
