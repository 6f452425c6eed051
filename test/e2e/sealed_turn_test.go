package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/turn/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/internal/netnstest"
)

// Reachability behind firewalls (issue 13), in sealed namespaces: the node
// in agency A, its clients in agency B, and nftables rules in B's output
// path that stand for a ministry's firewall. First UDP to the node is
// dropped: a Go SDK client and livekit-client pages in Chromium join over
// ICE-TCP on the node's media port. Then TCP to the media port is dropped
// too: the pages join through the node's TURN server over TLS on 443.
const (
	turnUDPPort = 3478
	turnTLSPort = 443
	// turnHost is the TURN server's name in the URLs the node hands out,
	// mapped to A's node in B's hosts file.
	turnHost = "turn.agency-a.test"
	// turnTable is the nftables table of the client agency's firewall.
	turnTable = "entente_firewall"
	// turnMetricsPort is the node's metrics listener, on its agency's loopback.
	turnMetricsPort = 9100
)

// TestSealedFirewalledClients is the test described above.
func TestSealedFirewalledClients(t *testing.T) {
	netnstest.Require(t, "nft", "ss")
	env := findBrowserEnv(t, false)
	top := netnstest.New(t, 2)
	nodeNS, clientNS := top.Agencies[0], top.Agencies[1]
	clientNS.SetHosts(t, map[string]string{turnHost: nodeNS.Addr})
	certFile, keyFile := writeCertificate(t, turnHost)
	node, keys := startFirewalledNode(t, nodeNS, certFile, keyFile)
	clientHTTP, nodeHTTP := clientNS.HTTPClient(), nodeNS.HTTPClient()
	wsURL := fmt.Sprintf("ws://%s:%d", nodeNS.Addr, sealedHTTPPort)
	// On the client agency's loopback: http://127.0.0.1 is a secure
	// context, which getUserMedia needs.
	page := serveIn(t, &sealedAgency{ns: clientNS}, "127.0.0.1", sealedPagePort, clientPageHandler(env)) + "client.html"

	// The firewall: nothing over UDP to the node.
	firewall(t, clientNS, "add table inet "+turnTable,
		"add chain inet "+turnTable+" out { type filter hook output priority 0 ; policy accept ; }",
		fmt.Sprintf(`add rule inet %s out ip daddr %s meta l4proto udp counter drop comment "no udp"`, turnTable, nodeNS.Addr))
	// Signalling still works (HTTP over TCP).
	resp, err := clientHTTP.Get(fmt.Sprintf("http://%s:%d/", nodeNS.Addr, sealedHTTPPort))
	require.NoError(t, err)
	resp.Body.Close()

	t.Run("ICE-TCP", func(t *testing.T) {
		const room = "firewalled-tcp"
		// The Go SDK's pion (webrtc v4 without a TCP network type, which
		// server-sdk-go does not set) gathers no TCP candidate: behind
		// this firewall it gets through the TURN server over TLS, whose
		// certificate it trusts as a client of an agency with its own CA
		// would (SSL_CERT_FILE).
		gopher := startSealedClientAs(t, &sealedAgency{ns: clientNS}, wsURL, keys.Token(t, room, "gopher"), "gopher", "SSL_CERT_FILE="+certFile)
		watch := watchPaths(t, nodeHTTP)
		res := runBrowserIn(t, env, clientNS, []browserPage{
			{Label: "ann", Kind: "client", URL: page, WSURL: wsURL, Token: keys.Token(t, room, "ann"), Simulcast: true},
			{Label: "ben", Kind: "client", URL: page, WSURL: wsURL, Token: keys.Token(t, room, "ben")},
		})
		pages := checkPages(t, res)
		for _, p := range pages {
			t.Logf("page %s: selected pairs %v, local ends %v", p.Label, p.SelectedPairs, p.SelectedLocal)
			require.NotEmpty(t, p.SelectedPairs, p.Label)
			for i, pair := range p.SelectedPairs {
				require.Equal(t, fmt.Sprintf("tcp %s:%d", nodeNS.Addr, sealedUDPPort), pair, "page %s: the node's ICE-TCP candidate", p.Label)
				// Chromium's active TCP candidate is announced with port 9 and
				// learnt back as peer-reflexive once connected.
				require.Regexp(t, `^(host|prflx) tcp$`, p.SelectedLocal[i], "page %s", p.Label)
			}
		}
		// The pages have left by now: what the SDK client received of them
		// while they were there.
		s := gopher.state()
		for _, k := range []string{"ann/audio", "ann/video", "ben/audio", "ben/video"} {
			require.GreaterOrEqual(t, s.Got[k], 20, "the Go SDK client receives %s: %+v", k, s)
		}
		for _, p := range pages {
			require.Contains(t, p.Remotes, "gopher", "page %s sees the Go SDK client", p.Label)
		}
		t.Logf("gopher received ann %d/%d, ben %d/%d audio/video packets", s.Got["ann/audio"], s.Got["ann/video"], s.Got["ben/audio"], s.Got["ben/video"])
		// The node's view of each connection: the pages' over TCP.
		paths, remotes := watch()
		t.Logf("node's connections: %v", paths)
		for _, id := range []string{"ann", "ben"} {
			require.True(t, strings.HasPrefix(paths[id], "tcp "), "%s's media path %q", id, paths[id])
		}
		// The SDK client's media comes from a relay socket of the node's
		// TURN server (on the node's address, not its media port).
		require.True(t, strings.HasPrefix(paths["gopher"], "udp "), "gopher's media path %q", paths["gopher"])
		require.True(t, strings.HasPrefix(remotes["gopher"], nodeNS.Addr+":") && remotes["gopher"] != fmt.Sprintf("%s:%d", nodeNS.Addr, sealedUDPPort),
			"gopher's media comes through a relay on the node's host: %q", remotes["gopher"])
		// The client agency holds (or just closed) the pages' TCP
		// connections to the media port, and the firewall dropped the UDP
		// the clients tried first.
		var tcpToMedia int
		for _, sk := range clientNS.Sockets(t) {
			if sk.Proto == "tcp" && sk.Peer == fmt.Sprintf("%s:%d", nodeNS.Addr, sealedUDPPort) {
				tcpToMedia++
			}
		}
		require.GreaterOrEqual(t, tcpToMedia, 4, "TCP connections to the media port in the client agency (two per page)")
		require.Positive(t, firewallDropped(t, clientNS, "no udp"), "the firewall dropped UDP to the node")
		gopher.stop()
	})

	t.Run("TURN-TLS", func(t *testing.T) {
		// Now only the signal port and TURN over TLS get through.
		firewall(t, clientNS, fmt.Sprintf(`add rule inet %s out ip daddr %s tcp dport %d counter drop comment "no media tcp"`,
			turnTable, nodeNS.Addr, sealedUDPPort))
		const room = "firewalled-turn"
		// Chromium checks a TURN server's certificate; the node's is
		// self-signed: trust that one key only.
		spki := certificateSPKI(t, clientNS, fmt.Sprintf("%s:%d", nodeNS.Addr, turnTLSPort))
		args := []string{"--ignore-certificate-errors-spki-list=" + spki}
		watch := watchPaths(t, nodeHTTP)
		res := runBrowserIn(t, env, clientNS, []browserPage{
			{Label: "cat", Kind: "client", URL: page, WSURL: wsURL, Token: keys.Token(t, room, "cat"), Simulcast: true, Args: args},
			{Label: "dan", Kind: "client", URL: page, WSURL: wsURL, Token: keys.Token(t, room, "dan"), Args: args},
		})
		pages := checkPages(t, res)
		for _, p := range pages {
			t.Logf("page %s: selected pairs %v, local ends %v", p.Label, p.SelectedPairs, p.SelectedLocal)
			require.NotEmpty(t, p.SelectedLocal, p.Label)
			for i, local := range p.SelectedLocal {
				require.Equal(t, "relay udp via tls", local, "page %s: relayed through TURN over TLS", p.Label)
				require.Equal(t, fmt.Sprintf("udp %s:%d", nodeNS.Addr, sealedUDPPort), p.SelectedPairs[i], "page %s: to the node's media port", p.Label)
			}
		}
		// The node receives their media from relay sockets on its host.
		paths, remotes := watch()
		t.Logf("node's connections: %v %v", paths, remotes)
		for _, id := range []string{"cat", "dan"} {
			require.True(t, strings.HasPrefix(paths[id], "udp "), "%s's media path %q", id, paths[id])
			require.True(t, strings.HasPrefix(remotes[id], nodeNS.Addr+":") && remotes[id] != fmt.Sprintf("%s:%d", nodeNS.Addr, sealedUDPPort),
				"%s's media comes through a relay on the node's host: %q", id, remotes[id])
		}
		require.Positive(t, firewallDropped(t, clientNS, "no media tcp"), "the firewall dropped TCP to the media port")
		require.Contains(t, node.all.String(), "turn server started")
	})
}

// TestSealedTURNRefusesOtherPeers: a client of the node's TURN server,
// with credentials the node handed out at join, can relay to the node's
// media port and nowhere else: a permission for another address (a host in
// another agency, the node's own address on its HTTP port) is refused.
func TestSealedTURNRefusesOtherPeers(t *testing.T) {
	top := netnstest.New(t, 3)
	nodeNS, clientNS, other := top.Agencies[0], top.Agencies[1], top.Agencies[2]
	_, keys := startFirewalledNode(t, nodeNS, "", "")
	wsURL := fmt.Sprintf("ws://%s:%d", nodeNS.Addr, sealedHTTPPort)

	// Credentials as a client gets them: in its join response.
	servers := joinICEServers(t, clientNS, wsURL, keys.Token(t, "turn-check", "mallory"))
	require.Len(t, servers, 1)
	require.Equal(t, []string{
		fmt.Sprintf("turn:%s:%d?transport=udp", turnHost, turnUDPPort),
		fmt.Sprintf("turns:%s:%d?transport=tcp", turnHost, turnTLSPort),
	}, servers[0].Urls)
	require.True(t, strings.HasSuffix(servers[0].Username, ":mallory"), servers[0].Username)

	// A target in another agency that would answer if relayed to.
	target, err := listenUDPIn(other)
	require.NoError(t, err)
	defer target.Close()

	for _, transport := range []string{"udp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			var conn net.PacketConn
			server := fmt.Sprintf("%s:%d", nodeNS.Addr, turnUDPPort)
			if transport == "udp" {
				conn, err = listenUDPIn(clientNS)
				require.NoError(t, err)
			} else {
				server = fmt.Sprintf("%s:%d", nodeNS.Addr, turnTLSPort)
				raw, err := clientNS.DialContext(t.Context(), "tcp", server)
				require.NoError(t, err)
				tc := tls.Client(raw, &tls.Config{ServerName: turnHost, InsecureSkipVerify: true}) //nolint:gosec // the node's generated certificate
				require.NoError(t, tc.HandshakeContext(t.Context()))
				conn = turn.NewSTUNConn(tc)
			}
			defer conn.Close()
			c, err := turn.NewClient(&turn.ClientConfig{
				TURNServerAddr: server, STUNServerAddr: server, Username: servers[0].Username, Password: servers[0].Credential,
				Realm: "entente", Conn: conn, RTO: 300 * time.Millisecond,
			})
			require.NoError(t, err)
			require.NoError(t, c.Listen())
			defer c.Close()
			relay, err := c.Allocate()
			require.NoError(t, err, "the handed-out credentials allocate")
			defer relay.Close()
			t.Logf("relay address %s", relay.LocalAddr())
			// The node counts it.
			require.Equal(t, 1, turnAllocations(t, nodeNS), "entente_turn_allocations while the relay is held")

			for _, peer := range []string{target.LocalAddr().String(), "192.0.2.1:7882", "10.77.2.2:7882"} {
				addr, err := net.ResolveUDPAddr("udp4", peer)
				require.NoError(t, err)
				err = c.CreatePermission(addr)
				require.Error(t, err, "a permission for %s must be refused", peer)
				require.Contains(t, err.Error(), "403", peer)
				t.Logf("permission for %s refused: %v", peer, err)
			}
			// Even sent blindly, nothing reaches the other agency.
			_, _ = relay.WriteTo([]byte("let me out"), target.LocalAddr())
			require.NoError(t, target.SetReadDeadline(time.Now().Add(time.Second)))
			buf := make([]byte, 1500)
			_, _, err = target.ReadFrom(buf)
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "a packet reached the other agency: %v", err)
			// The node's media port: allowed.
			require.NoError(t, c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(nodeNS.Addr), Port: sealedUDPPort}))
			// Another port of the node's address (another service of the
			// node's host): the permission (per IP) exists, but the relay
			// drops what goes elsewhere than the media port.
			onNode, err := listenUDPIn(nodeNS)
			require.NoError(t, err)
			defer onNode.Close()
			_, err = relay.WriteTo([]byte("let me in"), onNode.LocalAddr())
			require.NoError(t, err)
			require.NoError(t, onNode.SetReadDeadline(time.Now().Add(time.Second)))
			_, _, err = onNode.ReadFrom(buf)
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "a packet reached another port of the node's host: %v", err)
		})
	}
}

// startFirewalledNode starts a node in ns with ICE-TCP on its media port
// and the TURN server on UDP 3478 and TLS 443 (with the certificate and
// key files given, or a generated one when they are ""), and returns it
// with a token minter for its key.
func startFirewalledNode(t *testing.T, ns *netnstest.Agency, certFile, keyFile string) (*sealedNode, *Node) {
	t.Helper()
	dir := t.TempDir()
	keys := &Node{APIKey: "e2e-key", APISecret: "e2e-secret-0123456789-abcdefghijklmnop"}
	cfg := fmt.Sprintf(`data_dir = %q

[server]
listen = "%[2]s:%[3]d"

[log]
level = "debug"

[rtc]
udp_port = %[4]d
tcp_port = %[4]d
bind_address = %[2]q

[turn]
enabled = true
udp_port = %[5]d
tls_port = %[6]d
host = %[7]q
cert_file = %[11]q
key_file = %[12]q

[room]
empty_timeout = "30s"
departure_timeout = "2s"

[livekit]
keys = { %[8]s = %[9]q }

[debug]
pprof_listen = "127.0.0.1:%[10]d"

[metrics]
listen = "127.0.0.1:%[13]d"
`, filepath.Join(dir, "data"), ns.Addr, sealedHTTPPort, sealedUDPPort, turnUDPPort, turnTLSPort, turnHost,
		keys.APIKey, keys.APISecret, sealedDebugPort, certFile, keyFile, turnMetricsPort)
	n := &sealedNode{ns: ns, cfgPath: filepath.Join(dir, "entente.toml"), all: &lockedBuffer{}}
	require.NoError(t, os.WriteFile(n.cfgPath, []byte(cfg), 0o600))
	n.launch(t)
	t.Cleanup(func() {
		stopAt := time.Now()
		n.stop(t)
		t.Logf("node stopped %s after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
		if logs := n.all.String(); strings.Contains(logs, "WARNING: DATA RACE") {
			race := logs[strings.Index(logs, "WARNING: DATA RACE"):]
			race = race[:min(len(race), 8000)]
			t.Errorf("the node reported a data race (built with ENTENTE_E2E_RACE):\n%s", race)
		}
		if t.Failed() {
			t.Logf("node log:\n%s", n.all.tail(150))
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	require.True(t, n.waitLog(ctx, "turn server started"), "the node starts with its TURN server:\n%s", n.all.tail(30))
	return n, keys
}

// turnAllocations reads entente_turn_allocations from the node's metrics.
func turnAllocations(t *testing.T, a *netnstest.Agency) int {
	t.Helper()
	resp, err := a.HTTPClient().Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", turnMetricsPort))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^entente_turn_allocations (\d+)$`).FindSubmatch(body)
	require.NotNil(t, m, "no entente_turn_allocations in:\n%s", body)
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return n
}

// firewall runs nft commands in the agency's namespace.
func firewall(t *testing.T, a *netnstest.Agency, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		out, err := a.Command("nft", c).CombinedOutput()
		require.NoError(t, err, "nft %s: %s", c, out)
	}
}

// firewallDropped is the packet counter of the firewall rule commented so.
func firewallDropped(t *testing.T, a *netnstest.Agency, comment string) int {
	t.Helper()
	out, err := a.Command("nft", "list", "table", "inet", turnTable).CombinedOutput()
	require.NoError(t, err, "%s", out)
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "` + regexp.QuoteMeta(comment) + `"`)
	m := re.FindSubmatch(out)
	require.NotNil(t, m, "no rule %q in:\n%s", comment, out)
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	t.Logf("firewall rule %q dropped %d packets", comment, n)
	return n
}

// watchPaths polls the node's /debug/connections until the returned
// function is called, which returns the last path and remote address seen
// for each identity (clients that left are remembered).
func watchPaths(t *testing.T, c *http.Client) func() (paths, remotes map[string]string) {
	paths, remotes := map[string]string{}, map[string]string{}
	var mu sync.Mutex
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, r, err := connectionPaths(c)
			if err == nil {
				mu.Lock()
				for id, path := range p {
					if path != "" {
						paths[id], remotes[id] = path, r[id]
					}
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	finish := func() {
		once.Do(func() { close(stop); <-done })
	}
	t.Cleanup(finish)
	return func() (map[string]string, map[string]string) {
		finish()
		mu.Lock()
		defer mu.Unlock()
		return paths, remotes
	}
}

// connectionPaths is the node's /debug/connections as identity -> path
// and identity -> remote address.
func connectionPaths(c *http.Client) (paths, remotes map[string]string, err error) {
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/connections", sealedDebugPort))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Connections []struct {
			Identity string `json:"identity"`
			Remote   string `json:"remote"`
			Path     string `json:"path"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, nil, err
	}
	paths, remotes = map[string]string{}, map[string]string{}
	for _, c := range out.Connections {
		paths[c.Identity], remotes[c.Identity] = c.Path, c.Remote
	}
	return paths, remotes, nil
}

// writeCertificate writes a self-signed certificate for host and its key
// as PEM files (the TURN server's, trusted by the clients that are told
// so).
func writeCertificate(t *testing.T, host string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "turn.pem"), filepath.Join(dir, "turn.key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile
}

// certificateSPKI is the base64 SHA-256 of the public key of the
// certificate served at addr (dialled from a), as Chromium's
// --ignore-certificate-errors-spki-list takes it.
func certificateSPKI(t *testing.T, a *netnstest.Agency, addr string) string {
	t.Helper()
	raw, err := a.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{ServerName: turnHost, InsecureSkipVerify: true}) //nolint:gosec // reading the certificate
	require.NoError(t, c.HandshakeContext(t.Context()))
	certs := c.ConnectionState().PeerCertificates
	require.NotEmpty(t, certs)
	sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// listenUDPIn opens a UDP socket on the agency's address.
func listenUDPIn(a *netnstest.Agency) (net.PacketConn, error) {
	return a.ListenPacket("udp4", a.Addr+":0")
}

// joinICEServers joins with jwt from inside the agency, as a client does,
// and returns the ICE servers of its join response.
func joinICEServers(t *testing.T, a *netnstest.Agency, wsURL, jwt string) []*livekit.ICEServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL+"/rtc?protocol=16&auto_subscribe=1", &websocket.DialOptions{
		HTTPClient: a.HTTPClient(), HTTPHeader: http.Header{"Authorization": {"Bearer " + jwt}},
	})
	require.NoError(t, err)
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(1 << 20)
	for {
		_, data, err := conn.Read(ctx)
		require.NoError(t, err)
		var m livekit.SignalResponse
		require.NoError(t, proto.Unmarshal(data, &m))
		if j := m.GetJoin(); j != nil {
			return j.IceServers
		}
	}
}

// runBrowserIn is runBrowser with run.mjs (and so Chromium) started inside
// the agency's namespace.
func runBrowserIn(t *testing.T, env browserEnv, a *netnstest.Agency, pages []browserPage) browserResult {
	t.Helper()
	cfg := map[string]any{"timeoutMs": browserRunTimeout.Milliseconds(), "holdMs": 1000, "pages": pages}
	s := startBrowserScript(t, env, "run.mjs in "+a.Name, "run.mjs", cfg, a.Command, false)
	defer s.end(t)
	if !s.wait(browserKillAfter) {
		s.stop(t)
		t.Fatalf("browser run killed after %s\nstdout: %s\nstderr: %s", browserKillAfter, s.stdout.String(), s.stderr.String())
	}
	var res browserResult
	s.report(t, &res)
	var ee *exec.ExitError
	if s.err != nil && !errors.As(s.err, &ee) {
		t.Fatalf("run.mjs: %v\nstderr: %s", s.err, s.stderr.String())
	}
	return res
}
