package e2e

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/dendritetest"
)

// sealedCall is a call across sealed agencies with one Go SDK client per
// agency (and a second one in agency 0, whose local call must never stop).
type sealedCall struct {
	t        *testing.T
	ag       []*sealedAgency
	room     string
	users    []dendritetest.User
	ids      []string // identity of each agency's person
	clients  []*sealedClient
	localID  string // agency 0's second person
	local    *sealedClient
	recovery map[string][]time.Duration
}

func startSealedCall(t *testing.T, ag []*sealedAgency) *sealedCall {
	t.Helper()
	names := []string{"alice", "bob", "carol"}
	room, users := sealedRoom(t, ag, names[:len(ag)])
	c := &sealedCall{t: t, ag: ag, room: room, users: users, ids: make([]string, len(ag)), clients: make([]*sealedClient, len(ag)),
		recovery: map[string][]time.Duration{}}
	for i, a := range ag {
		tok := a.joinCall(t, users[i], room)
		c.ids[i] = users[i].ID + ":" + users[i].DeviceID
		c.clients[i] = startSealedClient(t, a, tok.URL, tok.JWT, c.ids[i])
	}
	// A second person of agency 0.
	ana := ag[0].hs.Register(t, "ana")
	ag[0].hs.Join(t, ana, room)
	tok := ag[0].joinCall(t, ana, room)
	c.localID = ana.ID + ":" + ana.DeviceID
	c.local = startSealedClient(t, ag[0], tok.URL, tok.JWT, c.localID)
	c.waitAll(60 * time.Second)
	return c
}

// waitAll waits until everyone receives everyone.
func (c *sealedCall) waitAll(timeout time.Duration) {
	c.t.Helper()
	for i := range c.clients {
		for j := range c.clients {
			if i != j {
				eventually(c.t, timeout, fmt.Sprintf("%s receives %s", c.ids[i], c.ids[j]), func() bool { return c.clients[i].receiving(c.ids[j], time.Second) })
			}
		}
	}
	eventually(c.t, timeout, "agency 0's two people receive each other", func() bool {
		return c.local.receiving(c.ids[0], time.Second) && c.clients[0].receiving(c.localID, time.Second)
	})
}

// watchLocal samples, until stop is closed, whether agency 0's local call
// goes on (its two people receiving each other), and reports the longest
// stretch without media.
func (c *sealedCall) watchLocal(stop chan struct{}) chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		last := time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				out <- worst
				return
			case now := <-tick.C:
				if c.local.receiving(c.ids[0], 500*time.Millisecond) && c.clients[0].receiving(c.localID, 500*time.Millisecond) {
					last = now
				} else if d := now.Sub(last); d > worst {
					worst = d
				}
			}
		}
	}()
	return out
}

// gone waits until client i no longer sees person j.
func (c *sealedCall) gone(i, j int, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	eventually(c.t, timeout, fmt.Sprintf("%s no longer sees %s", c.ids[i], c.ids[j]), func() bool {
		return !slices.Contains(c.clients[i].state().Remotes, c.ids[j])
	})
	return time.Since(start)
}

// back waits until client i sees and receives person j again, and
// returns how long that took from since.
func (c *sealedCall) back(i, j int, since time.Time, timeout time.Duration) time.Duration {
	c.t.Helper()
	eventually(c.t, timeout, fmt.Sprintf("%s sees and receives %s again", c.ids[i], c.ids[j]), func() bool {
		return c.clients[i].receiving(c.ids[j], 500*time.Millisecond)
	})
	return time.Since(since)
}

// sealedRuns is how many times each failure is repeated
// (ENTENTE_SEALED_RUNS, for the figures in BENCHMARKS.md; 1 by default).
func sealedRuns(t *testing.T) int {
	n := 1
	if v := os.Getenv("ENTENTE_SEALED_RUNS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "ENTENTE_SEALED_RUNS")
	}
	return n
}

// TestSealedFailures: a call across three sealed agencies goes through
// what links and servers do in operation, and recovers without anyone
// rejoining:
//   - the link between A and B cut for 20 s: A's own call never stops; B's
//     person disappears from A's view and A's from B's (C keeps both), and
//     both come back within 10 s of the link healing;
//   - B's node SIGKILLed and restarted (B's person, whose node it is,
//     reconnects to it): A's call never stops; B's person comes back to
//     A's and C's view within 10 s of the node being back;
//   - A's Dendrite restarted: the call goes on throughout (trunks are
//     node to node); a new person of B's joins the call afterwards and
//     is seen by A.
//
// Each recovery time is printed.
func TestSealedFailures(t *testing.T) {
	top, ag := startSealedAgencies(t, 3, func(i int) []int {
		var p []int
		for j := range 3 {
			if j != i {
				p = append(p, j)
			}
		}
		return p
	})
	c := startSealedCall(t, ag)
	const recoverWithin = 10 * time.Second

	for run := range sealedRuns(t) {
		// The link A-B cut for 20 s.
		stop := make(chan struct{})
		worst := c.watchLocal(stop)
		top.Cut(t, 0, 1)
		cutAt := time.Now()
		goneAfter := c.gone(0, 1, 15*time.Second)
		c.gone(1, 0, 15*time.Second)
		require.True(t, c.clients[2].receiving(c.ids[0], time.Second) && c.clients[2].receiving(c.ids[1], time.Second),
			"C keeps receiving A and B during the cut")
		time.Sleep(20*time.Second - time.Since(cutAt))
		top.Heal(t)
		healAt := time.Now()
		ab := c.back(0, 1, healAt, recoverWithin)
		ba := c.back(1, 0, healAt, recoverWithin)
		close(stop)
		stall := <-worst
		t.Logf("run %d: link A-B cut 20 s: B's person left A's view %v after the cut; back %v (A sees B) and %v (B sees A) after the heal; A's local call's longest gap %v",
			run, goneAfter.Round(time.Millisecond), ab.Round(time.Millisecond), ba.Round(time.Millisecond), stall.Round(time.Millisecond))
		require.Less(t, stall, 2*time.Second, "A's local call goes on during the cut")
		c.recovery["link heal"] = append(c.recovery["link heal"], max(ab, ba))

		// B's node SIGKILLed and restarted.
		stop = make(chan struct{})
		worst = c.watchLocal(stop)
		ag[1].node.kill()
		c.clients[1].stop() // B's person's app lost its node: it is reloaded below
		c.gone(0, 1, 15*time.Second)
		c.gone(2, 1, 15*time.Second)
		ag[1].node.launch(t)
		ag[1].waitNode(t)
		upAt := time.Now()
		// B's person's client lost its node: it connects again.
		tok := ag[1].joinCall(t, c.users[1], c.room)
		c.clients[1] = startSealedClient(t, ag[1], tok.URL, tok.JWT, c.ids[1])
		toA := c.back(0, 1, upAt, recoverWithin+5*time.Second)
		toC := c.back(2, 1, upAt, recoverWithin+5*time.Second)
		fromB := c.back(1, 0, upAt, recoverWithin+5*time.Second)
		close(stop)
		stall = <-worst
		t.Logf("run %d: B's node SIGKILLed and restarted: B's person back to A's view %v, to C's %v, and sees A %v after B's node answered again; A's local call's longest gap %v",
			run, toA.Round(time.Millisecond), toC.Round(time.Millisecond), fromB.Round(time.Millisecond), stall.Round(time.Millisecond))
		require.Less(t, stall, 2*time.Second, "A's local call goes on while B's node restarts")
		require.Less(t, max(toA, toC), recoverWithin, "B's person is back within 10 s of the node")
		c.recovery["node restart"] = append(c.recovery["node restart"], max(toA, toC, fromB))

		// The audit log of B's node tells of the trunks its killed run
		// held: ended "interrupted" at their last record, by the restart.
		var interrupted []string
		for _, r := range auditRecords(t, ag[1].node.cfgPath, "--kind", "trunk") {
			if r.Outcome == "interrupted" && r.End != nil {
				interrupted = append(interrupted, r.Peer)
			}
		}
		require.Subset(t, interrupted, []string{ag[0].hs.ServerName, ag[2].hs.ServerName},
			"B's audit log holds its killed run's trunks with A and C, ended as interrupted")
	}

	// A's Dendrite restarted: the call goes on, and a new person of B's
	// joins across the agencies once it is back.
	stop := make(chan struct{})
	worst := c.watchLocal(stop)
	ag[0].hs.Restart(t)
	backAt := time.Now()
	for i := range c.clients {
		for j := range c.clients {
			if i != j {
				require.True(t, c.clients[i].receiving(c.ids[j], time.Second), "%s still receives %s after A's homeserver restarted", c.ids[i], c.ids[j])
			}
		}
	}
	close(stop)
	stall := <-worst
	require.Less(t, stall, 2*time.Second, "A's local call goes on while its homeserver restarts")
	ben := ag[1].hs.Register(t, "ben")
	ag[1].hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(c.room)+"?server_name="+url.QueryEscape(ag[0].hs.ServerName),
		ben.Token, map[string]any{}, nil)
	tok := ag[1].joinCall(t, ben, c.room)
	benID := ben.ID + ":" + ben.DeviceID
	benClient := startSealedClient(t, ag[1], tok.URL, tok.JWT, benID)
	eventually(t, 30*time.Second, "A sees B's new person", func() bool { return c.clients[0].receiving(benID, 500*time.Millisecond) })
	eventually(t, 30*time.Second, "B's new person sees A", func() bool { return benClient.receiving(c.ids[0], 500*time.Millisecond) })
	t.Logf("A's homeserver restarted: the call went on (longest gap of A's local call %v); a new person of B's seen by A %v after A's homeserver was back",
		stall.Round(time.Millisecond), time.Since(backAt).Round(time.Millisecond))

	for what, ds := range c.recovery {
		slices.Sort(ds)
		t.Logf("recovery after %s: p50 %v over %d runs (%v)", what, ds[len(ds)/2].Round(time.Millisecond), len(ds), ds)
	}
}
