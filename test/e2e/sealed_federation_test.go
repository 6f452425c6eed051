package e2e

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/netnstest"
)

// TestSealedFederation: four agencies in sealed networks. A, B and C list
// each other; D lists them but none lists D (an agency off the allow
// list). One person of each joins one call in a room of A's, each with a
// Go SDK client in their own agency, connected to their own node through
// the shared name. A, B and C see and hear each other; D's person is
// served by D's node (allow = ["*"]) but sees and is seen by nobody
// else, and no trunk is made with D. From the outside of each client:
// connection tracking in each agency lists no flow from a client to
// another agency (foreign connections = 0), and the router's capture
// holds only node-to-node media (7882 to 7882) between A, B and C, and
// homeserver federation (8448).
func TestSealedFederation(t *testing.T) {
	top, ag := startSealedAgencies(t, 4, func(i int) []int {
		if i == 3 {
			return []int{0, 1, 2}
		}
		var p []int
		for j := range 3 {
			if j != i {
				p = append(p, j)
			}
		}
		return p
	})
	for _, a := range ag {
		a.ns.TrackConnections(t)
	}
	capture := top.Capture(t)
	room, users := sealedRoom(t, ag, []string{"alice", "bob", "carol", "dave"})

	ids := make([]string, len(ag))
	clients := make([]*sealedClient, len(ag))
	for i, a := range ag {
		tok := a.joinCall(t, users[i], room)
		require.True(t, strings.HasPrefix(tok.URL, "ws://"+a.ns.Addr+":"), "the token names the agency's own node: %s", tok.URL)
		ids[i] = users[i].ID + ":" + users[i].DeviceID
		clients[i] = startSealedClient(t, a, tok.URL, tok.JWT, ids[i])
	}
	start := time.Now()
	for i := range 3 {
		for j := range 3 {
			if i != j {
				eventually(t, 60*time.Second, fmt.Sprintf("%s receives %s", ids[i], ids[j]), func() bool { return clients[i].sees(ids[j], 20) })
			}
		}
	}
	t.Logf("A, B and C each receive the other two %v after the last client started", time.Since(start).Round(time.Millisecond))
	// D's person has had the same time: alone in D's room.
	require.Empty(t, clients[3].state().Remotes, "D's person sees nobody of the listed agencies")
	for i := range 3 {
		require.NotContains(t, clients[i].state().Remotes, ids[3], "%s does not see D's person", ids[i])
	}

	requireSealedTrunks(t, matrix.RoomAlias(room, matrix.LegacySlotID), ag[:3], ag[3:])
	require.Zero(t, countSealedForeign(t, top, ag), "foreign connections")
	requireSealedRouterFlows(t, capture, ag[3:])
}

// requireSealedTrunks checks that, for the call in mediaRoom (a node
// makes one trunk per peer and call), each listed agency's node holds one
// trunk, up, to each other listed agency, and that no node holds one with
// an agency of off (which nobody lists); it logs the trunks in all.
func requireSealedTrunks(t *testing.T, mediaRoom string, listed, off []*sealedAgency) {
	t.Helper()
	ofCall := func(a *sealedAgency) []trunkInfo {
		var out []trunkInfo
		for _, x := range a.trunks(t) {
			if x.MediaRoom == mediaRoom {
				out = append(out, x)
			}
		}
		return out
	}
	offNames := map[string]bool{}
	for _, a := range off {
		offNames[a.hs.ServerName] = true
	}
	pairs := map[string]bool{}
	for i, a := range listed {
		tr := ofCall(a)
		require.Len(t, tr, len(listed)-1, "agency %s holds one trunk per other listed agency: %+v", a.ns.Addr, tr)
		for _, x := range tr {
			require.True(t, x.Up, "agency %d's trunk to %s is up", i, x.Peer)
			require.False(t, offNames[x.Peer], "no trunk with an agency nobody lists (%s)", x.Peer)
			pair := []string{a.hs.ServerName, x.Peer}
			slices.Sort(pair)
			pairs[pair[0]+"<->"+pair[1]] = true
		}
	}
	require.Len(t, pairs, len(listed)*(len(listed)-1)/2, "one trunk per pair of listed agencies: %v", pairs)
	for _, a := range off {
		require.Empty(t, a.trunks(t), "%s's node makes no trunk: nobody lists it", a.ns.Addr)
	}
	t.Logf("trunks of the call: %d in all, each up (%v)", len(pairs), slices.Sorted(maps.Keys(pairs)))
}

// countSealedForeign counts, from the outside of each agency's clients,
// their foreign connections, reporting each as an error: flows connection
// tracking saw in the agency's namespace (TrackConnections) that leave it
// and are neither node-to-node media nor homeserver federation
// (sealedForeign), and connected sockets of any program in the namespace
// other than the node and Dendrite (browsers, node, the Go SDK client, the
// test's own listeners) whose peer is neither the agency's address nor
// loopback.
func countSealedForeign(t *testing.T, top *netnstest.Topology, ag []*sealedAgency) int {
	t.Helper()
	foreign := 0
	for i, a := range ag {
		flows := a.ns.Connections(t)
		for _, c := range flows {
			if sealedForeign(c, a.ns, top) {
				foreign++
				t.Errorf("agency %d: a flow leaves the agency that is neither trunk nor federation: %+v", i, c)
			}
		}
		programs := map[string]int{}
		for _, s := range a.ns.Sockets(t) {
			if s.Program == "entente" || s.Program == "dendrite" || s.Peer == "*:*" || strings.HasSuffix(s.Peer, ":*") {
				continue
			}
			if s.Program == "" {
				programs["(closing, no process)"]++
			} else {
				programs[s.Program]++
			}
			host, _, err := net.SplitHostPort(s.Peer)
			require.NoError(t, err, s.Peer)
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() && !ip.Equal(net.ParseIP(a.ns.Addr)) {
				foreign++
				t.Errorf("agency %d: %s's socket %s talks to %s", i, s.Program, s.Local, s.Peer)
			}
		}
		t.Logf("agency %d (%s): %d tracked flows; connected sockets of its clients by program: %v", i, a.ns.Addr, len(flows), programs)
	}
	t.Logf("foreign connections: %d", foreign)
	return foreign
}

// requireSealedRouterFlows stops the router's capture and checks that it
// holds only node-to-node media (UDP between the nodes' media ports, none
// with an agency of off) and homeserver federation (TCP to 8448).
func requireSealedRouterFlows(t *testing.T, capture *netnstest.Capture, off []*sealedAgency) {
	t.Helper()
	offAddr := map[string]bool{}
	for _, a := range off {
		offAddr[a.ns.Addr] = true
	}
	var media, federation int
	for _, f := range capture.Flows() {
		src, dst := hostPort(t, f.Src), hostPort(t, f.Dst)
		switch {
		case f.Proto == "UDP" && src.port == sealedUDPPort && dst.port == sealedUDPPort:
			media += f.Packets
			require.False(t, offAddr[src.host] || offAddr[dst.host], "no media with an agency nobody lists: %+v", f)
		case f.Proto == "TCP" && (src.port == sealedFederation || dst.port == sealedFederation):
			federation += f.Packets
		case f.Proto == "IGMP" && linkLocalMulticast(dst.host):
			// The kernel's membership reports on each link as it comes up:
			// never forwarded, not a flow between agencies.
		default:
			t.Errorf("the router carried a flow that is neither node-to-node media nor federation: %+v", f)
		}
	}
	require.Positive(t, media, "node-to-node media crossed the router")
	require.Zero(t, capture.Dropped(), "the router's capture dropped packets: it cannot vouch for them")
	t.Logf("router capture: %d packets of node-to-node media, %d of homeserver federation, nothing else", media, federation)
}

// sealedForeign reports whether a flow tracked in agency a goes to another
// agency without being one of the two kinds that may: node-to-node media
// (the node's media port at both ends) or homeserver federation (to the
// other's 8448).
func sealedForeign(c netnstest.Conn, a *netnstest.Agency, top *netnstest.Topology) bool {
	dst, _, _ := net.SplitHostPort(c.Dst)
	if dst == "" {
		dst = c.Dst
	}
	if dst == a.Addr || strings.HasPrefix(dst, "127.") || linkLocalMulticast(dst) {
		return false
	}
	port := func(hp string) int {
		_, p, _ := net.SplitHostPort(hp)
		n, _ := strconv.Atoi(p)
		return n
	}
	if c.Proto == "udp" && port(c.Src) == sealedUDPPort && port(c.Dst) == sealedUDPPort {
		return false
	}
	if c.Proto == "tcp" && port(c.Dst) == sealedFederation {
		return false
	}
	// Anything else towards another agency (or further: nothing routes
	// there, but an attempt is still a flow).
	return true
}

// linkLocalMulticast reports whether addr is in 224.0.0.0/24, which no
// router forwards (IGMP reports of an interface coming up go there).
func linkLocalMulticast(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.To4() != nil && ip.To4()[0] == 224 && ip.To4()[1] == 0 && ip.To4()[2] == 0
}

type hp struct {
	host string
	port int
}

func hostPort(t *testing.T, s string) hp {
	t.Helper()
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return hp{host: s}
	}
	n, err := strconv.Atoi(p)
	require.NoError(t, err, s)
	return hp{host: h, port: n}
}

// TestSealedForeignCounting: the count of foreign connections flags a
// client's flow to another agency's node (signal or media) and to
// anywhere outside, and lets the node's trunk media, homeserver
// federation, the agency's own addresses and link-local multicast pass.
func TestSealedForeignCounting(t *testing.T) {
	a := &netnstest.Agency{Addr: "10.77.1.2"}
	for _, c := range []struct {
		conn    netnstest.Conn
		foreign bool
	}{
		{netnstest.Conn{Proto: "tcp", Src: "10.77.1.2:40000", Dst: "10.77.1.2:7880"}, false},
		{netnstest.Conn{Proto: "udp", Src: "10.77.1.2:50000", Dst: "10.77.1.2:7882"}, false},
		{netnstest.Conn{Proto: "tcp", Src: "127.0.0.1:40000", Dst: "127.0.0.1:6060"}, false},
		{netnstest.Conn{Proto: "udp", Src: "10.77.1.2:7882", Dst: "10.77.2.2:7882"}, false},
		{netnstest.Conn{Proto: "tcp", Src: "10.77.1.2:41000", Dst: "10.77.2.2:8448"}, false},
		{netnstest.Conn{Proto: "unknown", Src: "10.77.1.2", Dst: "224.0.0.22"}, false},
		{netnstest.Conn{Proto: "tcp", Src: "10.77.1.2:40000", Dst: "10.77.2.2:7880"}, true},
		{netnstest.Conn{Proto: "udp", Src: "10.77.1.2:50000", Dst: "10.77.2.2:7882"}, true},
		{netnstest.Conn{Proto: "udp", Src: "10.77.1.2:7882", Dst: "10.77.2.2:50000"}, true},
		{netnstest.Conn{Proto: "tcp", Src: "10.77.1.2:40000", Dst: "10.77.2.2:8008"}, true},
		{netnstest.Conn{Proto: "tcp", Src: "10.77.1.2:40000", Dst: "192.0.2.1:443"}, true},
		{netnstest.Conn{Proto: "icmp", Src: "10.77.1.2", Dst: "10.77.2.2"}, true},
	} {
		require.Equal(t, c.foreign, sealedForeign(c.conn, a, nil), "%+v", c.conn)
	}
}
