package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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

	peers := map[string]bool{}
	for i, a := range ag[:3] {
		tr := a.trunks(t)
		require.Len(t, tr, 2, "agency %d holds one trunk per other listed agency", i)
		for _, x := range tr {
			require.True(t, x.Up)
			require.NotEqual(t, ag[3].hs.ServerName, x.Peer, "no trunk with D")
			pair := []string{a.hs.ServerName, x.Peer}
			if pair[0] > pair[1] {
				pair[0], pair[1] = pair[1], pair[0]
			}
			peers[pair[0]+" "+pair[1]] = true
		}
	}
	require.Len(t, peers, 3, "three trunks in all: %v", peers)
	require.Empty(t, ag[3].trunks(t), "D's node makes no trunk: nobody lists it")

	// Foreign connections, counted from the outside of each agency's
	// clients.
	foreign := 0
	for i, a := range ag {
		var own []string
		for _, c := range a.ns.Connections(t) {
			if sealedForeign(c, a.ns, top) {
				foreign++
				t.Errorf("agency %d: a flow leaves the agency that is neither trunk nor federation: %+v", i, c)
			}
			own = append(own, c.Proto+" "+c.Src+">"+c.Dst)
		}
		for _, s := range a.ns.Sockets(t) {
			if s.Program == "entente" || s.Program == "dendrite" || s.Peer == "*:*" || strings.HasSuffix(s.Peer, ":*") {
				continue
			}
			host, _, err := net.SplitHostPort(s.Peer)
			require.NoError(t, err, s.Peer)
			if host != a.ns.Addr && host != "127.0.0.1" {
				foreign++
				t.Errorf("agency %d: %s's socket %s talks to %s", i, s.Program, s.Local, s.Peer)
			}
		}
		t.Logf("agency %d (%s): %d tracked flows", i, a.ns.Addr, len(own))
	}
	t.Logf("foreign connections: %d", foreign)

	// What crossed the router.
	var media, federation int
	for _, f := range capture.Flows() {
		src, dst := hostPort(t, f.Src), hostPort(t, f.Dst)
		switch {
		case f.Proto == "UDP" && src.port == sealedUDPPort && dst.port == sealedUDPPort:
			media += f.Packets
			require.NotEqual(t, ag[3].ns.Addr, src.host, "no media with D")
			require.NotEqual(t, ag[3].ns.Addr, dst.host, "no media with D")
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
