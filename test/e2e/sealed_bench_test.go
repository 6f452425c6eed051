package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSealedTrunkBench is bench/sealed.sh's measurement, not a test: it
// runs only with ENTENTE_SEALED_BENCH set (to the number of windows). Four
// sealed agencies in a full mesh; agency A has one publisher (Opus and a
// three-layer VP8 camera, simLayers), so A's node carries three trunks.
// B has three subscribers (low, low, high), C one (medium), D one (low).
// Over each window of ENTENTE_SEALED_WINDOW (10 s) it prints, per trunk,
// what crossed the router from A's node to the agency's (packets, and UDP
// payload bytes: SRTP and RTCP) against what the agency's subscribers
// watch, counted once per distinct layer (the packets and RTP bytes one
// subscriber of each watched layer received, plus the microphone once),
// and A's node's CPU (user and system time over the window) and memory
// (VmRSS, VmHWM). No figure is asserted.
func TestSealedTrunkBench(t *testing.T) {
	windows, _ := strconv.Atoi(os.Getenv("ENTENTE_SEALED_BENCH"))
	if windows <= 0 {
		t.Skip("bench/sealed.sh's measurement: set ENTENTE_SEALED_BENCH to the number of windows")
	}
	window := 10 * time.Second
	if v := os.Getenv("ENTENTE_SEALED_WINDOW"); v != "" {
		var err error
		window, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	top, ag := startSealedAgencies(t, 4, func(i int) []int {
		var p []int
		for j := range 4 {
			if j != i {
				p = append(p, j)
			}
		}
		return p
	})
	alice := ag[0].hs.Register(t, "alice")
	room := ag[0].hs.CreateRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Trunk bench"})
	tok := ag[0].joinCall(t, alice, room)
	aliceID := alice.ID + ":" + alice.DeviceID
	startSealedClientAs(t, ag[0], tok.URL, tok.JWT, aliceID, "SEALED_SIMULCAST=1")

	type sub struct {
		agency  int
		quality string
		id      string
		c       *sealedClient
	}
	subs := []*sub{{agency: 1, quality: "low"}, {agency: 1, quality: "low"}, {agency: 1, quality: "high"},
		{agency: 2, quality: "medium"}, {agency: 3, quality: "low"}}
	for i, s := range subs {
		a := ag[s.agency]
		u := a.hs.Register(t, fmt.Sprintf("watcher%d", i))
		a.hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(ag[0].hs.ServerName),
			u.Token, map[string]any{}, nil)
		tok := a.joinCall(t, u, room)
		s.id = u.ID + ":" + u.DeviceID
		s.c = startSealedClientAs(t, a, tok.URL, tok.JWT, s.id, "SEALED_SUBSCRIBE_ONLY=1", "SEALED_QUALITY="+s.quality)
	}
	for _, s := range subs {
		eventually(t, 60*time.Second, s.id+" receives alice", func() bool { return s.c.receiving(aliceID, time.Second) })
	}
	time.Sleep(5 * time.Second) // layers settle
	pid := ag[0].node.pid()

	for w := range windows {
		capture := top.Capture(t)
		cpu0 := procCPU(t, pid)
		before := map[string]sealedClientState{}
		for _, s := range subs {
			before[s.id] = s.c.state()
		}
		start := time.Now()
		time.Sleep(window)
		cpu1 := procCPU(t, pid)
		elapsed := time.Since(start)
		flows := capture.Flows()
		rss, hwm := procMemory(t, pid)

		var rows []string
		for x := 1; x < 4; x++ {
			// What one subscriber of each distinct watched layer received,
			// and the microphone once: bytes and packets.
			var watched, watchedPackets int
			seen := map[string]bool{}
			for _, s := range subs {
				if s.agency != x {
					continue
				}
				now, was := s.c.state(), before[s.id]
				if len(seen) == 0 {
					watched += now.Bytes[aliceID+"/audio"] - was.Bytes[aliceID+"/audio"]
					watchedPackets += now.Got[aliceID+"/audio"] - was.Got[aliceID+"/audio"]
				}
				if !seen[s.quality] {
					seen[s.quality] = true
					watched += now.Bytes[aliceID+"/video"] - was.Bytes[aliceID+"/video"]
					watchedPackets += now.Got[aliceID+"/video"] - was.Got[aliceID+"/video"]
				}
			}
			var crossed, packets int
			for _, f := range flows {
				if f.Proto == "UDP" && f.Src == fmt.Sprintf("%s:%d", ag[0].ns.Addr, sealedUDPPort) &&
					f.Dst == fmt.Sprintf("%s:%d", ag[x].ns.Addr, sealedUDPPort) {
					crossed, packets = crossed+f.Bytes, packets+f.Packets
				}
			}
			layers := slices.Sorted(func(yield func(string) bool) {
				for q := range seen {
					if !yield(q) {
						return
					}
				}
			})
			rows = append(rows, fmt.Sprintf("A->%c watched %s: trunk %d packets, %.1f kbit/s (SRTP); watched %d packets, %.1f kbit/s (RTP as the subscribers get it); trunk/watched packets %.3f, bytes %.3f",
				'A'+x, strings.Join(layers, "+"), packets, kbps(crossed, elapsed), watchedPackets, kbps(watched, elapsed),
				float64(packets)/float64(max(watchedPackets, 1)), float64(crossed)/float64(max(watched, 1))))
		}
		t.Logf("window %d (%v): node A with three trunks: CPU %.3f cores, VmRSS %d KiB, VmHWM %d KiB; capture dropped %d packets\n  %s",
			w, elapsed.Round(time.Millisecond), (cpu1-cpu0)/elapsed.Seconds(), rss, hwm, capture.Dropped(), strings.Join(rows, "\n  "))
	}
}

func kbps(bytes int, d time.Duration) float64 { return float64(bytes) * 8 / 1000 / d.Seconds() }

// procCPU is a process's user and system time, in seconds.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	require.NoError(t, err)
	// The fields after the command's closing parenthesis; utime and stime
	// are the 14th and 15th of the line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err := strconv.ParseFloat(f[11], 64)
	require.NoError(t, err)
	st, err := strconv.ParseFloat(f[12], 64)
	require.NoError(t, err)
	return (ut + st) / 100 // USER_HZ
}

// procMemory is a process's resident and peak resident memory, in KiB.
func procMemory(t *testing.T, pid int) (rss, hwm int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			n, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			if f[0] == "VmRSS:" {
				rss = n
			} else {
				hwm = n
			}
		}
	}
	return rss, hwm
}
