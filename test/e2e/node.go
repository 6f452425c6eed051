// Package e2e holds end-to-end tests that run the real entente binary and
// real clients against it: LiveKit's Go SDK and headless Chromium.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"entente.dev/entente/internal/dendritetest"
)

// NodeOptions adjust the node a test starts.
type NodeOptions struct {
	// ExtraTOML is appended to the generated configuration.
	ExtraTOML string
	// LogLevel is the node's log level ("debug" if empty).
	LogLevel string
}

// Node is a running entente process.
type Node struct {
	HTTPURL   string // http://127.0.0.1:PORT
	WSURL     string // ws://127.0.0.1:PORT
	APIKey    string
	APISecret string
	DataDir   string
	UDPPort   int
	// TCPPort is the node's ICE-TCP port.
	TCPPort int
	// ConfigPath is the node's configuration file (to restart it).
	ConfigPath string
	cmd        *exec.Cmd
	logs       *lockedBuffer
}

type binaryBuild struct {
	once sync.Once
	path string
	err  error
}

// build is the test binary's one build of cmd/entente, shared by its tests.
var build binaryBuild

// RepoRoot is the repository's top directory.
func RepoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func ententeBinary(t testing.TB) string {
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "entente-e2e-bin-")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "entente")
		args := []string{"build", "-o", build.path}
		if os.Getenv("ENTENTE_E2E_RACE") != "" {
			// The node built with the race detector: races make it report and exit 66.
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/entente")...)
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// FreePort returns a port free on 127.0.0.1 for the given network ("tcp" or
// "udp"), below the kernel's ephemeral range (dendritetest.PickPort).
func FreePort(t testing.TB, network string) int {
	t.Helper()
	return dendritetest.PickPort(t, network)
}

// StartNode builds (once) and starts entente with a fresh data directory
// on free loopback ports, and stops it when the test ends.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	bin := ententeBinary(t)
	dir := t.TempDir()
	httpPort, udpPort, tcpPort := FreePort(t, "tcp"), FreePort(t, "udp"), FreePort(t, "tcp")
	n := &Node{
		HTTPURL: fmt.Sprintf("http://127.0.0.1:%d", httpPort), WSURL: fmt.Sprintf("ws://127.0.0.1:%d", httpPort),
		APIKey: "e2e-key", APISecret: "e2e-secret-0123456789-abcdefghijklmnop",
		DataDir: filepath.Join(dir, "data"), UDPPort: udpPort, TCPPort: tcpPort, logs: &lockedBuffer{},
	}
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	cfg := fmt.Sprintf(`data_dir = %q

[server]
listen = "127.0.0.1:%d"

[log]
level = %q
format = "console"

[rtc]
udp_port = %d
tcp_port = %d
bind_address = "127.0.0.1"

[room]
empty_timeout = "30s"
departure_timeout = "2s"

[livekit]
keys = { %s = %q }
%s
`, n.DataDir, httpPort, level, udpPort, tcpPort, n.APIKey, n.APISecret, opts.ExtraTOML)
	cfgPath := filepath.Join(dir, "entente.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.ConfigPath = cfgPath
	n.cmd = exec.Command(bin, "--config", cfgPath)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once the process has ended (waitErr then holds how),
	// so any number of readers may wait on it.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = n.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stopAt := time.Now()
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			t.Logf("entente stopped %v after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-exited
			t.Errorf("entente did not stop within 15 s of SIGTERM")
		}
		if strings.Contains(n.logs.String(), "WARNING: DATA RACE") {
			t.Errorf("the node reported a data race (built with ENTENTE_E2E_RACE)")
		}
		if t.Failed() {
			t.Logf("entente log:\n%s", n.logs.tail(200))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("entente exited at start: %v\n%s", waitErr, n.logs.tail(50))
		default:
		}
		resp, err := http.Get(n.HTTPURL + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("entente did not answer on %s: %v\n%s", n.HTTPURL, err, n.logs.tail(50))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TokenOption changes a minted token.
type TokenOption func(*auth.AccessToken, *auth.VideoGrant)

// Token mints a token for identity in room with the node's key.
func (n *Node) Token(t testing.TB, room, identity string, opts ...TokenOption) string {
	t.Helper()
	at := auth.NewAccessToken(n.APIKey, n.APISecret)
	g := &auth.VideoGrant{RoomJoin: true, Room: room}
	at.SetIdentity(identity).SetName(identity).SetValidFor(time.Hour)
	for _, o := range opts {
		o(at, g)
	}
	at.SetVideoGrant(g)
	tok, err := at.ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Logs returns what the node has logged so far.
func (n *Node) Logs() string { return n.logs.String() }

// WaitLog waits until the node's log contains s.
func (n *Node) WaitLog(ctx context.Context, s string) bool {
	for {
		if strings.Contains(n.logs.String(), s) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) tail(lines int) string {
	all := strings.Split(b.String(), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// readTrack reads tr on a goroutine counted by wg until the track ends,
// handing each packet to each (under the caller's own locking).
func readTrack(wg *sync.WaitGroup, tr *webrtc.TrackRemote, each func(*rtp.Packet)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			each(p)
		}
	}()
}
