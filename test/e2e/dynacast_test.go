package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
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
const dynacastRunTimeout = 3 * time.Minute

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

// window returns the first sample at or after from and the last one at
// or before to; ok is false when they are less than span-1s apart.
func window(samples []outboundSample, from, to time.Time, span time.Duration) (layerWindow, bool) {
	var w layerWindow
	first, last := -1, -1
	for i, s := range samples {
		if first < 0 && !s.at().Before(from) {
			first = i
		}
		if !s.at().After(to) {
			last = i
		}
	}
	if first < 0 || last <= first {
		return w, false
	}
	w.from, w.to = samples[first], samples[last]
	return w, w.to.at().Sub(w.from.at()) >= span-time.Second
}

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
	run := startBrowser(t, env, browserConfig{
		TimeoutMs: dynacastRunTimeout.Milliseconds(), SamplesFile: samplesFile, UntilFile: stopFile,
		Pages: []browserPage{
			{Label: "dynacast", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "dyn"),
				Simulcast: true, PublishOnly: true, OutboundSampleMs: 500},
			{Label: "plain", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "plain"),
				Simulcast: true, PublishOnly: true, Dynacast: &off, OutboundSampleMs: 500},
		},
	}, dynacastRunTimeout+15*time.Second)

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
	// sending reports whether page label's encoding rid sent something
	// (or nothing, when want is false) over the last span, after since.
	sending := func(label, rid string, since time.Time, want bool) (layerWindow, bool) {
		s := readSamples(t, samplesFile, label)
		if len(s) == 0 {
			return layerWindow{}, false
		}
		end := s[len(s)-1].at()
		from := end.Add(-span)
		if from.Before(since) {
			return layerWindow{}, false
		}
		w, ok := window(s, from, end, span)
		return w, ok && (w.bytes(rid) > 0) == want
	}
	// until waits for cond, reporting the pages' state if it never holds.
	until := func(what string, cond func() bool) {
		t.Helper()
		start := time.Now()
		deadline := start.Add(wait)
		for !cond() {
			if time.Now().After(deadline) {
				for _, label := range pages {
					s := readSamples(t, samplesFile, label)
					if len(s) > 0 {
						w, _ := window(s, s[len(s)-1].at().Add(-span), s[len(s)-1].at(), span)
						t.Logf("page %s, last %s: %s", label, span, w.describe())
					}
				}
				t.Fatalf("%s: not within %s", what, wait)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("%s after %s", what, time.Since(start).Round(100*time.Millisecond))
	}
	// measure logs, and returns, each page's layers over the next span
	// (a page that samples late under load gets more time).
	measure := func(phase string) map[string]layerWindow {
		t.Helper()
		from := time.Now()
		time.Sleep(span)
		out := map[string]layerWindow{}
		for _, label := range pages {
			var w layerWindow
			var s []outboundSample
			for deadline := time.Now().Add(wait); ; time.Sleep(250 * time.Millisecond) {
				s = readSamples(t, samplesFile, label)
				var ok bool
				if w, ok = window(s, from, from.Add(span), span); ok && s[len(s)-1].at().After(from.Add(span)) {
					break
				}
				if time.Now().After(deadline) {
					var times []string
					for _, x := range s {
						if !x.at().Before(from.Add(-span)) {
							times = append(times, x.at().Sub(from).Round(time.Millisecond).String())
						}
					}
					t.Fatalf("%s: page %s has no samples over %s; samples since then, from the phase's start: %v", phase, label, span, times)
				}
			}
			t.Logf("%s: page %s: %s", phase, label, w.describe())
			out[label] = w
		}
		return out
	}

	until("both tracks subscribed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pubs) == 2
	})

	// Watching the high layer: every layer goes out, from both pages (the
	// encoders ramp up to the top layer as the bandwidth estimate grows).
	start := time.Now()
	until("all layers sent by both pages", func() bool {
		for _, label := range pages {
			for _, rid := range []string{"q", "h", "f"} {
				if _, ok := sending(label, rid, start, true); !ok {
					return false
				}
			}
		}
		return true
	})
	high := measure("watching the high layer")
	for _, label := range pages {
		require.Positive(t, high[label].bytes("f"), "page %s sends its high layer while it is watched", label)
	}

	// The low layer only: after the node's pause delay (5 s), the dynacast
	// page turns h and f off; the other goes on.
	askedLow := time.Now()
	setQuality(livekit.VideoQuality_LOW)
	until("h and f stopped on the dynacast page", func() bool {
		_, f := sending("dynacast", "f", askedLow, false)
		_, h := sending("dynacast", "h", askedLow, false)
		return f && h
	})
	stoppedAt := time.Since(askedLow)
	dynSamples := readSamples(t, samplesFile, "dynacast")
	lastF, lastH := lastChange(dynSamples, "f", askedLow), lastChange(dynSamples, "h", askedLow)
	low := measure("watching the low layer only")
	require.Positive(t, low["dynacast"].bytes("q"), "the low layer is still sent")
	for _, rid := range []string{"h", "f"} {
		require.Zero(t, low["dynacast"].bytes(rid), "nobody watches layer %s: the dynacast page does not send it", rid)
		if a := low["dynacast"].to.Layers[rid].Active; a != nil {
			require.False(t, *a, "layer %s's encoding is off", rid)
		}
	}
	require.Positive(t, low["plain"].bytes("f"),
		"the page without the dynacast option still sends its high layer: the stop above is dynacast's")

	// The high layer again: f comes back on the dynacast page at once.
	askedHigh := time.Now()
	setQuality(livekit.VideoQuality_HIGH)
	until("f sent again by the dynacast page", func() bool {
		return !firstChange(readSamples(t, samplesFile, "dynacast"), "f", askedHigh).IsZero()
	})
	firstF := firstChange(readSamples(t, samplesFile, "dynacast"), "f", askedHigh)
	again := measure("watching the high layer again")
	require.Positive(t, again["dynacast"].bytes("f"), "the high layer is sent again")
	if a := again["dynacast"].to.Layers["f"].Active; a != nil {
		require.True(t, *a)
	}
	sinceAsk := func(at, from time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return at.Sub(from).Round(100 * time.Millisecond).String()
	}
	t.Logf("dynacast page (samples every 500 ms): after the subscriber asked for the low layer, h grew last at %s, f at %s "+
		"(the node's pause delay is 5 s; seen stopped over %s at %s); after it asked for the high layer, f grew first at %s",
		sinceAsk(lastH, askedLow), sinceAsk(lastF, askedLow), span, stoppedAt.Round(100*time.Millisecond),
		sinceAsk(firstF, askedHigh))
	t.Logf("dynacast page f: %.0f -> %.0f -> %.0f kbit/s; plain page f: %.0f -> %.0f -> %.0f kbit/s",
		high["dynacast"].kbps("f"), low["dynacast"].kbps("f"), again["dynacast"].kbps("f"),
		high["plain"].kbps("f"), low["plain"].kbps("f"), again["plain"].kbps("f"))

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
	res := run.wait(t)
	require.Empty(t, res.Error)
	require.False(t, res.TimedOut, "the browser run timed out")
	for _, p := range res.Pages {
		require.True(t, p.OK, "page %s: %+v", p.Label, p)
		require.Positive(t, p.OutboundBytes)
	}
}
