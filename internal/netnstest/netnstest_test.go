package netnstest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTopology: agencies reach each other through the router, and only
// that: no default route, so an address outside the agencies is
// unreachable; a cut between two agencies drops their packets and keeps
// the third's, until healed; the router's capture sees the flows.
func TestTopology(t *testing.T) {
	Require(t, "nft", "tcpdump")
	top := New(t, 3)
	a, b, c := top.Agencies[0], top.Agencies[1], top.Agencies[2]

	serve := func(ag *Agency) string {
		l, err := ag.Listen("tcp", ag.Addr+":8080")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, ag.Name)
		}), ReadHeaderTimeout: time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		return "http://" + ag.Addr + ":8080/"
	}
	urlB, urlC := serve(b), serve(c)
	get := func(from *Agency, url string) (string, error) {
		cl := from.HTTPClient()
		cl.Timeout = 2 * time.Second
		resp, err := cl.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}

	capture := top.Capture(t)
	a.TrackConnections(t)
	if got, err := get(a, urlB); err != nil || got != b.Name {
		t.Fatalf("A reaches B through the router: %q %v", got, err)
	}
	// Nothing outside the agencies: no route.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.DialContext(ctx, "tcp", "192.0.2.1:80"); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("an address outside the agencies must be unreachable, got %v", err)
	}

	top.Cut(t, 0, 1)
	if _, err := get(a, urlB); err == nil {
		t.Fatal("A reached B across a cut")
	}
	if got, err := get(a, urlC); err != nil || got != c.Name {
		t.Fatalf("the cut between A and B keeps A-C: %q %v", got, err)
	}
	top.Heal(t)
	if got, err := get(a, urlB); err != nil || got != b.Name {
		t.Fatalf("A reaches B once healed: %q %v", got, err)
	}

	var toB, toC bool
	flows := capture.Flows()
	for _, f := range flows {
		toB = toB || (f.Proto == "TCP" && f.Dst == b.Addr+":8080")
		toC = toC || (f.Proto == "TCP" && f.Dst == c.Addr+":8080")
	}
	if !toB || !toC {
		t.Logf("flows: %+v", flows)
		t.Fatalf("the router's capture saw A->B %v, A->C %v", toB, toC)
	}

	var tracked bool
	for _, c := range a.Connections(t) {
		tracked = tracked || (c.Proto == "tcp" && c.Dst == b.Addr+":8080")
	}
	if !tracked {
		t.Fatalf("A's connection tracking lists no flow to B: %+v", a.Connections(t))
	}
	var listening bool
	for _, s := range b.Sockets(t) {
		listening = listening || (s.Proto == "tcp" && s.Local == b.Addr+":8080")
	}
	if !listening {
		t.Fatalf("B's sockets lack the listener: %+v", b.Sockets(t))
	}

	// The agency's own names.
	a.SetHosts(t, map[string]string{"rtc.federation.test": a.Addr})
	out, err := a.Command("getent", "hosts", "rtc.federation.test").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), a.Addr+" ") {
		t.Fatalf("rtc.federation.test in A resolves to %q (%v), want %s", out, err, a.Addr)
	}
}

func TestParseTcpdumpLine(t *testing.T) {
	for _, tc := range []struct {
		line   string
		want   Flow
		in, ok bool
	}{
		{"1733250000.123456 e1r0 In  IP 10.77.1.2.7882 > 10.77.2.2.7882: UDP, length 120",
			Flow{Proto: "UDP", Src: "10.77.1.2:7882", Dst: "10.77.2.2:7882", Packets: 1, Bytes: 120}, true, true},
		{"1733250000.123456 e1r1 Out IP 10.77.1.2.45678 > 10.77.2.2.8448: tcp 0",
			Flow{Proto: "TCP", Src: "10.77.1.2:45678", Dst: "10.77.2.2:8448", Packets: 1}, false, true},
		{"1733250000.1 e1r0 In  IP 10.77.1.2 > 10.77.2.2: ICMP echo request, id 1, seq 1, length 64",
			Flow{Proto: "ICMP", Src: "10.77.1.2", Dst: "10.77.2.2", Packets: 1, Bytes: 64}, true, true},
		{"tcpdump: listening on any", Flow{}, false, false},
		{"", Flow{}, false, false},
		{"1.0 x In IP", Flow{}, false, false},
	} {
		got, in, ok := parseTcpdumpLine(tc.line)
		if ok != tc.ok || in != tc.in || got != tc.want {
			t.Errorf("%q: got %+v %v %v, want %+v %v %v", tc.line, got, in, ok, tc.want, tc.in, tc.ok)
		}
	}
}

func TestParseConntrackLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Conn
		ok   bool
	}{
		{"udp      17 29 src=10.77.1.2 dst=10.77.2.2 sport=7882 dport=7882 src=10.77.2.2 dst=10.77.1.2 sport=7882 dport=7882 [ASSURED] mark=0 use=1",
			Conn{Proto: "udp", Src: "10.77.1.2:7882", Dst: "10.77.2.2:7882"}, true},
		{"tcp      6 431999 ESTABLISHED src=10.77.1.2 dst=10.77.1.2 sport=40000 dport=7880 src=10.77.1.2 dst=10.77.1.2 sport=7880 dport=40000 [ASSURED] mark=0 use=1",
			Conn{Proto: "tcp", Src: "10.77.1.2:40000", Dst: "10.77.1.2:7880"}, true},
		{"icmp     1 29 src=10.77.1.2 dst=10.77.2.2 type=8 code=0 id=3 src=10.77.2.2 dst=10.77.1.2 type=0 code=0 id=3 mark=0 use=1",
			Conn{Proto: "icmp", Src: "10.77.1.2", Dst: "10.77.2.2"}, true},
		{"conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.", Conn{}, false},
		{"", Conn{}, false},
	} {
		got, ok := parseConntrackLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%q: got %+v %v, want %+v %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}
