package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/appservice"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/dendritetest"
	"entente.dev/entente/internal/netnstest"
)

// Sealed agencies (docs/testing-networks.md): each agency in a network
// namespace of its own (internal/netnstest) with its Dendrite, its node and
// its clients, the agencies joined through a router namespace and nothing
// able to leave them. Inside an agency every server listens on the
// agency's one address at fixed ports.
const (
	sealedHTTPPort     = 7880 // the node: token service, signal, join page
	sealedUDPPort      = 7882 // the node's media (clients and trunks)
	sealedASPort       = 9000 // the node's appservice listener
	sealedDebugPort    = 6060 // the node's debug listener, on the agency's loopback
	sealedFederation   = 8448 // Dendrite's federation listener
	sealedSharedRTCURL = "http://" + sharedRTCHost + ":7880"
)

// sealedAgency is one agency of a sealed topology.
type sealedAgency struct {
	ns   *netnstest.Agency
	hs   *dendritetest.Homeserver
	node *sealedNode
	bot  string
	http *http.Client // dials from inside the agency
}

// sealedNode is an agency's entente process, restartable.
type sealedNode struct {
	ns      *netnstest.Agency
	cfgPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan struct{}
	all    *lockedBuffer // every run's log
}

// startSealedAgencies makes the topology with n agencies and starts each
// agency's node and Dendrite. peersOf(i) lists the agencies (indexes)
// agency i's node federates with.
func startSealedAgencies(t *testing.T, n int, peersOf func(i int) []int) (*netnstest.Topology, []*sealedAgency) {
	t.Helper()
	netnstest.Require(t, "nft", "tcpdump", "conntrack", "ss")
	top := netnstest.New(t, n)
	agencies := make([]*sealedAgency, n)
	for i, ns := range top.Agencies {
		ns.SetHosts(t, map[string]string{sharedRTCHost: ns.Addr})
		agencies[i] = &sealedAgency{ns: ns, http: ns.HTTPClient(), hs: dendritetest.NewIn(t, dendritetest.Net{
			Host: ns.Addr, Command: ns.Command, Dial: ns.DialContext,
		})}
	}
	for i, a := range agencies {
		var peers []*sealedAgency
		for _, j := range peersOf(i) {
			peers = append(peers, agencies[j])
		}
		a.start(t, peers)
	}
	return top, agencies
}

// start writes the agency's registration and node configuration, starts
// the node, then Dendrite (node first: docs/matrix.md).
func (a *sealedAgency) start(t *testing.T, peers []*sealedAgency) {
	t.Helper()
	dir := t.TempDir()
	addr := a.ns.Addr
	regPath := filepath.Join(dir, "registration.yaml")
	asURL := fmt.Sprintf("http://%s:%d", addr, sealedASPort)
	matrixSection := fmt.Sprintf(`
[matrix]
homeserver_url = %q
server_name = %q
registration = %q
appservice_listen = "%s:%d"
appservice_url = %q
insecure_skip_verify = true
allow = ["*"]
token_service_url = %q
`, a.hs.ClientURL, a.hs.ServerName, regPath, addr, sealedASPort, asURL, sealedSharedRTCURL)
	regCfg := filepath.Join(dir, "register.toml")
	require.NoError(t, os.WriteFile(regCfg, []byte(matrixSection), 0o600))
	out, err := exec.Command(ententeBinary(t), "register", "--config", regCfg).CombinedOutput()
	require.NoError(t, err, "entente register: %s", out)
	reg, err := appservice.LoadRegistration(regPath)
	require.NoError(t, err)
	a.bot = matrix.BotUserID(reg.SenderLocalpart, a.hs.ServerName)

	cfg := fmt.Sprintf(`data_dir = %q

[server]
listen = "%s:%d"

[log]
level = "debug"
format = "console"

[rtc]
udp_port = %d
bind_address = %q

[room]
empty_timeout = "30s"
departure_timeout = "2s"

[livekit]
keys = { e2e-key = "e2e-secret-0123456789-abcdefghijklmnop" }
%s
[debug]
pprof_listen = "127.0.0.1:%d"
`, filepath.Join(dir, "data"), addr, sealedHTTPPort, sealedUDPPort, addr, matrixSection, sealedDebugPort)
	for _, p := range peers {
		cfg += fmt.Sprintf("\n[federation.peers.%q]\nbot = %q\n", p.hs.ServerName, "@entente:"+p.hs.ServerName)
	}
	a.node = &sealedNode{ns: a.ns, cfgPath: filepath.Join(dir, "entente.toml"), all: &lockedBuffer{}}
	require.NoError(t, os.WriteFile(a.node.cfgPath, []byte(cfg), 0o600))
	a.node.launch(t)
	t.Cleanup(func() {
		a.node.stop(t)
		if strings.Contains(a.node.all.String(), "WARNING: DATA RACE") {
			t.Errorf("the node in %s reported a data race (built with ENTENTE_E2E_RACE)", a.ns.Name)
		}
		if t.Failed() {
			t.Logf("agency %s node log:\n%s", a.ns.Name, a.node.all.tail(150))
		}
	})
	a.waitNode(t)
	a.hs.Start(t, dendritetest.Options{AppServices: []string{regPath}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.True(t, a.node.waitLog(ctx, "bot ready"), "agency %s: the node registers its bot", a.ns.Name)
}

// launch starts the node's process in its namespace.
func (n *sealedNode) launch(t *testing.T) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.logs = &lockedBuffer{}
	w := io.MultiWriter(n.logs, n.all)
	n.cmd = n.ns.Command(ententeBinary(t), "--config", n.cfgPath)
	n.cmd.Stdout, n.cmd.Stderr = w, w
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, n.cmd.Start())
	exited, cmd := make(chan struct{}), n.cmd
	n.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
}

// stop ends the node (SIGTERM, SIGKILL after 15 s).
func (n *sealedNode) stop(t *testing.T) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Errorf("entente in %s did not stop within 15 s of SIGTERM", n.ns.Name)
	}
}

// kill SIGKILLs the node and waits until it is gone.
func (n *sealedNode) kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	_ = cmd.Process.Kill()
	<-exited
}

// pid is the current run's process id (`ip netns exec` execs the node
// in its own process).
func (n *sealedNode) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// waitLog waits until the current run's log contains s.
func (n *sealedNode) waitLog(ctx context.Context, s string) bool {
	for {
		n.mu.Lock()
		logs := n.logs
		n.mu.Unlock()
		if strings.Contains(logs.String(), s) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitNode waits until the node's HTTP listener answers.
func (a *sealedAgency) waitNode(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := a.http.Get(a.nodeURL() + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("entente in %s did not answer: %v\n%s", a.ns.Name, err, a.node.all.tail(50))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *sealedAgency) nodeURL() string {
	return fmt.Sprintf("http://%s:%d", a.ns.Addr, sealedHTTPPort)
}

// debugJSON reads one of the node's debug pages.
func (a *sealedAgency) debugJSON(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := a.http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", sealedDebugPort, path))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
}

// trunks lists the node's trunks (nil while the node is down).
func (a *sealedAgency) trunks(t *testing.T) []trunkInfo {
	t.Helper()
	var out struct {
		Trunks []trunkInfo `json:"trunks"`
	}
	a.debugJSON(t, "/debug/federation", &out)
	return out.Trunks
}

// sealedRoom makes a public room of agencies[0]'s in which anyone may send
// call memberships, and joins one user of each agency to it.
func sealedRoom(t *testing.T, agencies []*sealedAgency, names []string) (string, []dendritetest.User) {
	t.Helper()
	users := make([]dendritetest.User, len(agencies))
	for i, a := range agencies {
		users[i] = a.hs.Register(t, names[i])
	}
	room := agencies[0].hs.CreateRoom(t, users[0], map[string]any{
		"preset": "public_chat", "name": "Sealed agencies",
		"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
	})
	for i := 1; i < len(agencies); i++ {
		agencies[i].hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(agencies[0].hs.ServerName),
			users[i].Token, map[string]any{}, nil)
	}
	return room, users
}

// joinCall gets u a token from its agency's node (/sfu/get, as Element
// Call does; the test process reaches the node by its address, while the
// pages of TestSealedFederationBrowsers go through the shared name, which
// the agency's hosts file resolves) and sends u's call membership
// advertising the shared transport.
func (a *sealedAgency) joinCall(t *testing.T, u dendritetest.User, room string) tokenAnswer {
	t.Helper()
	var tok tokenAnswer
	require.Eventually(t, func() bool {
		oid := a.hs.OpenIDToken(t, u)
		body, err := json.Marshal(map[string]any{"room": room, "openid_token": oid, "device_id": u.DeviceID})
		require.NoError(t, err)
		resp, err := a.http.Post(a.nodeURL()+matrix.PathSFUGet, "application/json", strings.NewReader(string(body)))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		tok = tokenAnswer{Status: resp.StatusCode}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return tok.Status == http.StatusOK
	}, 60*time.Second, 500*time.Millisecond, "%s gets a token from its own node", u.ID)
	a.hs.SendState(t, u, room, "org.matrix.msc3401.call.member", "_"+u.ID+"_"+u.DeviceID, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": u.DeviceID, "expires": 3600000,
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": sealedSharedRTCURL, "livekit_alias": room}},
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
	})
	return tok
}

// sealedClientEnv names the environment that makes the test binary a Go
// SDK client in an agency's namespace (TestSealedClientProcess).
const sealedClientEnv = "ENTENTE_SEALED_CLIENT"

// sealedClientState is what a client process reports, every 200 ms, as one
// JSON line: the remote participants it sees and the packets it received
// of each "identity/kind".
type sealedClientState struct {
	At      int64          `json:"at"` // Unix ms
	Remotes []string       `json:"remotes"`
	Got     map[string]int `json:"got"`
	Bytes   map[string]int `json:"bytes"`
	// Quality is the connection quality the node last reported of each
	// identity, the client's own included (LiveKit's names).
	Quality map[string]string `json:"quality,omitempty"`
}

// sealedClient is a client process running in an agency.
type sealedClient struct {
	identity string
	cmd      *exec.Cmd

	mu       sync.Mutex
	last     sealedClientState
	history  []sealedClientState
	done     chan struct{}
	stopOnce sync.Once
}

// startSealedClient runs the test binary as a Go SDK client inside the
// agency: it connects to wsURL with jwt, publishes Opus and VP8 and
// reports what it receives.
func startSealedClient(t *testing.T, a *sealedAgency, wsURL, jwt, identity string) *sealedClient {
	t.Helper()
	return startSealedClientAs(t, a, wsURL, jwt, identity)
}

// startSealedClientAs is startSealedClient with options for the client:
// "SEALED_SIMULCAST=1" publishes a three-layer camera (simLayers),
// "SEALED_SUBSCRIBE_ONLY=1" publishes nothing, "SEALED_QUALITY=low|medium|high"
// asks for that layer of every camera.
func startSealedClientAs(t *testing.T, a *sealedAgency, wsURL, jwt, identity string, opts ...string) *sealedClient {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	c := &sealedClient{identity: identity, done: make(chan struct{})}
	c.cmd = a.ns.Command(exe, "-test.run", "^TestSealedClientProcess$", "-test.timeout", "20m")
	c.cmd.Env = append(os.Environ(), sealedClientEnv+"=1", "SEALED_URL="+wsURL, "SEALED_JWT="+jwt, "SEALED_IDENTITY="+identity)
	c.cmd.Env = append(c.cmd.Env, opts...)
	stdout, err := c.cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &lockedBuffer{}
	c.cmd.Stderr = stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, c.cmd.Start())
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var s sealedClientState
			if json.Unmarshal(sc.Bytes(), &s) != nil || s.At == 0 {
				continue
			}
			c.mu.Lock()
			c.last = s
			c.history = append(c.history, s)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("client %s stderr:\n%s", identity, stderr.tail(40))
		}
	})
	return c
}

// stop ends the client (SIGTERM, SIGKILL after 10 s) and waits for it; it
// may be called more than once.
func (c *sealedClient) stop() {
	c.stopOnce.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		_ = c.cmd.Wait()
	})
}

func (c *sealedClient) state() sealedClientState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// sees reports whether the client has other in its room and received at
// least n packets of each of its kinds.
func (c *sealedClient) sees(other string, n int) bool {
	s := c.state()
	return slices.Contains(s.Remotes, other) && s.Got[other+"/audio"] >= n && s.Got[other+"/video"] >= n
}

// receiving reports whether other's audio and video packets arrived in
// the last reports, over window.
func (c *sealedClient) receiving(other string, window time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.history) == 0 {
		return false
	}
	last := c.history[len(c.history)-1]
	for i := len(c.history) - 1; i >= 0; i-- {
		h := c.history[i]
		if time.Duration(last.At-h.At)*time.Millisecond >= window {
			return slices.Contains(last.Remotes, other) &&
				last.Got[other+"/audio"] > h.Got[other+"/audio"] && last.Got[other+"/video"] > h.Got[other+"/video"]
		}
	}
	return false
}

// TestSealedClientProcess is not a test: it is the Go SDK client that
// startSealedClient runs inside an agency's namespace (the test binary
// started again with ENTENTE_SEALED_CLIENT=1). In a test run it returns at
// once.
func TestSealedClientProcess(t *testing.T) {
	if os.Getenv(sealedClientEnv) == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	c := connectClientWithToken(t, ctx, os.Getenv("SEALED_URL"), os.Getenv("SEALED_JWT"), os.Getenv("SEALED_IDENTITY"))
	switch {
	case os.Getenv("SEALED_SUBSCRIBE_ONLY") == "1":
	case os.Getenv("SEALED_SIMULCAST") == "1":
		c.publishMicrophone(t, ctx, &wg)
		publishSimulcast(t, ctx, c.room, &wg)
	default:
		c.publish(t, ctx, &wg)
	}
	quality, asked := livekit.VideoQuality(-1), map[string]bool{}
	if q, ok := livekit.VideoQuality_value[strings.ToUpper(os.Getenv("SEALED_QUALITY"))]; ok {
		quality = livekit.VideoQuality(q)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	enc := json.NewEncoder(os.Stdout)
	for {
		select {
		case <-sig:
			return
		case now := <-tick.C:
			s := sealedClientState{At: now.UnixMilli(), Got: map[string]int{}, Bytes: map[string]int{}}
			for _, p := range c.room.GetRemoteParticipants() {
				s.Remotes = append(s.Remotes, p.Identity())
				for _, pub := range p.TrackPublications() {
					if rp, ok := pub.(*lksdk.RemoteTrackPublication); ok && quality >= 0 && pub.Kind() == lksdk.TrackKindVideo && !asked[pub.SID()] {
						asked[pub.SID()] = rp.SetVideoQuality(quality) == nil
					}
				}
			}
			sort.Strings(s.Remotes)
			c.mu.Lock()
			for k, v := range c.got {
				s.Got[k] = v
			}
			for k, v := range c.bytes {
				s.Bytes[k] = v
			}
			if len(c.quality) > 0 {
				s.Quality = map[string]string{}
				for k, v := range c.quality {
					s.Quality[k] = v.String()
				}
			}
			c.mu.Unlock()
			if err := enc.Encode(s); err != nil {
				return
			}
		}
	}
}
