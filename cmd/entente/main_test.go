package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/media/livekit"
)

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestTokenUsesConfiguredKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "entente.toml")
	secret := "0123456789abcdefghijklmnopqrstuvwxyz"
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir = "`+filepath.Join(dir, "data")+`"
[livekit.keys]
agency = "`+secret+`"
`), 0o600))
	out, _, err := runCmd(t, "token", "--config", cfg, "--room", "r1", "--identity", "alice", "--name", "Alice")
	require.NoError(t, err)
	g, err := livekit.Verify(livekit.Keys{"agency": secret}, strings.TrimSpace(out))
	require.NoError(t, err)
	require.Equal(t, "alice", g.Identity)
	require.Equal(t, "Alice", g.Name)
	require.Equal(t, "r1", g.Room)
	require.True(t, g.CanPublish && g.CanSubscribe && g.RoomCreate)

	// The same resolution through the environment variable.
	t.Setenv(configEnv, cfg)
	out, _, err = runCmd(t, "token", "--room", "r2", "--identity", "bob")
	require.NoError(t, err)
	_, err = livekit.Verify(livekit.Keys{"agency": secret}, strings.TrimSpace(out))
	require.NoError(t, err)
}

func TestTokenCreatesDevelopmentKeyOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "entente.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir = "`+filepath.Join(dir, "data")+`"`+"\n"), 0o600))
	out1, msg1, err := runCmd(t, "token", "--config", cfg, "--room", "r", "--identity", "a")
	require.NoError(t, err)
	require.Contains(t, msg1, "Created a development API key")
	out2, msg2, err := runCmd(t, "token", "--config", cfg, "--room", "r", "--identity", "b")
	require.NoError(t, err)
	require.NotContains(t, msg2, "Created", "the key is created and printed once")
	// Both tokens verify with the one stored key, whose secret was printed once.
	var key, secret string
	for _, line := range strings.Split(msg1, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "key:"); ok {
			key = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "secret:"); ok {
			secret = strings.TrimSpace(v)
		}
	}
	require.NotEmpty(t, key)
	for _, tok := range []string{out1, out2} {
		_, err := livekit.Verify(livekit.Keys{key: secret}, strings.TrimSpace(tok))
		require.NoError(t, err)
	}
}

func TestCommandErrors(t *testing.T) {
	_, _, err := runCmd(t, "token", "--room", "r")
	require.ErrorContains(t, err, "--identity are required")
	_, _, err = runCmd(t, "frobnicate")
	require.ErrorContains(t, err, "unknown command")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	require.NoError(t, os.WriteFile(bad, []byte("[server]\nlisen = \"x\"\n"), 0o600))
	_, _, err = runCmd(t, "--config", bad)
	require.ErrorContains(t, err, "lisen")
	out, _, err := runCmd(t, "version")
	require.NoError(t, err)
	require.Contains(t, out, "entente")
}

func TestRegisterWritesRegistration(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "entente.toml")
	reg := filepath.Join(dir, "entente-registration.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir = "`+filepath.Join(dir, "data")+`"
[matrix]
homeserver_url = "http://127.0.0.1:8008"
server_name = "agency.example"
registration = "`+reg+`"
`), 0o600))
	out, _, err := runCmd(t, "register", "--config", cfg)
	require.NoError(t, err)
	require.Contains(t, out, reg)
	data, err := os.ReadFile(reg)
	require.NoError(t, err)
	for _, want := range []string{"as_token:", "hs_token:", "sender_localpart:", "namespaces:"} {
		require.Contains(t, string(data), want)
	}
	info, err := os.Stat(reg)
	require.NoError(t, err)
	require.Zero(t, info.Mode().Perm()&0o077, "the registration holds secrets: not readable by others")

	noMatrix := filepath.Join(dir, "plain.toml")
	require.NoError(t, os.WriteFile(noMatrix, []byte(`data_dir = "`+filepath.Join(dir, "data")+`"`+"\n"), 0o600))
	_, _, err = runCmd(t, "register", "--config", noMatrix)
	require.ErrorContains(t, err, "no [matrix] section")
}

// syncBuffer is a bytes.Buffer safe for the node's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNodeServesUntilCancelled runs the node in-process: it serves until its
// context ends, then stops cleanly.
func TestNodeServesUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	port := udp.LocalAddr().(*net.UDPAddr).Port
	require.NoError(t, udp.Close())
	cfg := filepath.Join(dir, "entente.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
[server]
listen = "127.0.0.1:0"
[rtc]
udp_port = %d
tcp_port = 0
`, filepath.Join(dir, "data"), port)), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--config", cfg}, &out, &logs) }()

	re := regexp.MustCompile(`http=(http://127\.0\.0\.1:\d+)`)
	var base string
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(logs.String())
		if m != nil {
			base = m[1]
		}
		return base != ""
	}, 10*time.Second, 20*time.Millisecond, "node start logged: %s", logs.String())
	for i := 0; i < 3; i++ {
		resp, err := http.Get(base + "/")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		select {
		case err := <-done:
			t.Fatalf("node stopped by itself: %v\n%s", err, logs.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop within 10 s of cancellation")
	}
}
