package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
)

// TestFederationBenchHarness is bench/federation.sh's setup, not a test:
// it runs only with ENTENTE_FEDBENCH_DIR set. It starts two federating
// Dendrites and two nodes as TestFederationTwoNodesSDK does (logging at
// info), makes a call with a member of each server, waits for the trunk
// and writes fed.env (both nodes' URLs, keys, pids and the call's media
// room) into the directory. The script then loads the nodes with
// entente-load and creates "done"; the harness then times the set-up of
// ENTENTE_FEDBENCH_SETUPS (4) more trunks, one new room each, and writes
// every trunk's set-up time to trunk-setup.tsv. No timing is asserted.
func TestFederationBenchHarness(t *testing.T) {
	dir := os.Getenv("ENTENTE_FEDBENCH_DIR")
	if dir == "" {
		t.Skip("bench/federation.sh's setup: set ENTENTE_FEDBENCH_DIR")
	}
	setups := 4
	if v := os.Getenv("ENTENTE_FEDBENCH_SETUPS"); v != "" {
		var err error
		setups, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	f := startFederatedAgenciesLogging(t, "info")
	var rows []string
	first := f.timeTrunk(t)
	rows = append(rows, first.row(1))
	t.Logf("first trunk: %s", first.row(1))

	env := map[string]string{
		"URL_A": f.a.WSURL, "KEY_A": f.a.APIKey, "SECRET_A": f.a.APISecret, "PID_A": strconv.Itoa(f.a.cmd.Process.Pid), "DEBUG_A": f.dbgA,
		"URL_B": f.b.WSURL, "KEY_B": f.b.APIKey, "SECRET_B": f.b.APISecret, "PID_B": strconv.Itoa(f.b.cmd.Process.Pid), "DEBUG_B": f.dbgB,
		"ROOM": first.mediaRoom, "SERVER_A": f.a.hs.ServerName, "SERVER_B": f.b.hs.ServerName,
	}
	var lines []string
	for k, v := range env {
		lines = append(lines, fmt.Sprintf("%s=%s", k, strconv.Quote(v)))
	}
	slices.Sort(lines)
	writeAtomic(t, filepath.Join(dir, "fed.env"), strings.Join(lines, "\n")+"\n")

	done := filepath.Join(dir, "done")
	deadline := time.Now().Add(30 * time.Minute)
	for {
		if _, err := os.Stat(done); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "the script never created %s", done)
		time.Sleep(200 * time.Millisecond)
	}
	// The load room's trunk lasted through the load, still alone.
	for _, dbg := range []string{f.dbgA, f.dbgB} {
		ts := trunks(t, dbg)
		require.Len(t, ts, 1)
		require.True(t, ts[0].Up, "the trunk is still up after the load")
	}

	for i := range setups {
		f.roomID = f.a.hs.CreateRoom(t, f.alice, map[string]any{
			"preset": "public_chat", "name": fmt.Sprintf("Inter-agency %d", i+2),
			"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
		})
		f.b.hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(f.roomID)+"?server_name="+url.QueryEscape(f.a.hs.ServerName),
			f.bob.Token, map[string]any{}, nil)
		s := f.timeTrunk(t)
		rows = append(rows, s.row(i+2))
		t.Logf("trunk %d: %s", i+2, s.row(i+2))
	}
	writeAtomic(t, filepath.Join(dir, "trunk-setup.tsv"),
		"trunk\tmember_to_up_ms\toffer_to_up_ms\toffered_by\n"+strings.Join(rows, "\n")+"\n")
}

// trunkSetup is how long one trunk took to come up.
type trunkSetup struct {
	mediaRoom string
	// memberToUp is from the moment Bob's call membership (the second
	// server's, which makes the call span both) was sent to both nodes
	// listing the trunk as up: Matrix delivery to both nodes, the
	// offerer's next reconcile, the bots' to-device signalling and ICE/DTLS.
	memberToUp time.Duration
	// offerToUp is the offering node's own set_up: from its offer to up.
	offerToUp time.Duration
	offeredBy string
}

func (s trunkSetup) row(n int) string {
	return fmt.Sprintf("%d\t%.0f\t%.0f\t%s", n, millis(s.memberToUp), millis(s.offerToUp), s.offeredBy)
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// timeTrunk makes Alice (A) and then Bob (B) members of f.roomID's call
// and times the trunk it brings up.
func (f *federatedAgencies) timeTrunk(t *testing.T) trunkSetup {
	t.Helper()
	s := trunkSetup{mediaRoom: matrix.RoomAlias(f.roomID, matrix.LegacySlotID)}
	f.joinCall(t, f.a, f.alice)
	// Bob's token first, so that only his membership is timed.
	require.Eventually(t, func() bool {
		return f.b.sfuGet(t, f.bob, f.b.hs.OpenIDToken(t, f.bob), f.roomID).Status == http.StatusOK
	}, 60*time.Second, 500*time.Millisecond)
	start := time.Now()
	f.b.hs.SendState(t, f.bob, f.roomID, "org.matrix.msc3401.call.member", "_"+f.bob.ID+"_"+f.bob.DeviceID, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": f.bob.DeviceID, "expires": 3600000,
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://rtc.federation.test", "livekit_alias": f.roomID}},
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
	})
	up := func(dbg string) (bool, bool) {
		for _, tr := range trunks(t, dbg) {
			if tr.MediaRoom == s.mediaRoom && tr.Up {
				return true, tr.Offerer
			}
		}
		return false, false
	}
	for {
		upA, offA := up(f.dbgA)
		upB, _ := up(f.dbgB)
		if upA && upB {
			s.memberToUp = time.Since(start)
			s.offeredBy = "B"
			if offA {
				s.offeredBy = "A"
			}
			break
		}
		require.Less(t, time.Since(start), 90*time.Second, "the trunk for %s came up", s.mediaRoom)
		time.Sleep(10 * time.Millisecond)
	}
	offerer := f.b
	if s.offeredBy == "A" {
		offerer = f.a
	}
	var err error
	s.offerToUp, err = loggedSetUp(offerer.Logs(), s.mediaRoom)
	require.NoError(t, err)
	return s
}

// setUpField is the set_up field of the node's "federation trunk up" line
// (zerolog writes durations in milliseconds).
var setUpField = regexp.MustCompile(`set_up=([0-9.]+)`)

// loggedSetUp finds the set_up of the trunk up line for mediaRoom.
func loggedSetUp(logs, mediaRoom string) (time.Duration, error) {
	for line := range strings.SplitSeq(logs, "\n") {
		if !strings.Contains(line, "federation trunk up") || !strings.Contains(line, mediaRoom) {
			continue
		}
		m := setUpField.FindStringSubmatch(line)
		if m == nil {
			return 0, fmt.Errorf("no set_up in %q", line)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(v * float64(time.Millisecond)), nil
	}
	return 0, fmt.Errorf("no trunk up line for %s", mediaRoom)
}

// writeAtomic writes a file the script polls for in one rename.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}
