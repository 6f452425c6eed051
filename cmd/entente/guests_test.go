package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startNode runs the node in-process on loopback with extra appended to
// its configuration, and returns its base URL; the node stops when the
// test ends.
func startNode(t *testing.T, extra string) string {
	t.Helper()
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
%s
`, filepath.Join(dir, "data"), port, extra)), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--config", cfg}, &out, &logs) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	re := regexp.MustCompile(`http=(http://127\.0\.0\.1:\d+)`)
	var base string
	require.Eventually(t, func() bool {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			base = m[1]
		}
		return base != ""
	}, 10*time.Second, 20*time.Millisecond, "node start logged: %s", logs.String())
	return base
}

// The node wires [web] guests (default: on, as it listens on loopback) and
// the guest rate limit into the join page.
func TestNodeGuestPolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		want   []int // statuses of successive joins
		code   string
	}{
		{"loopback default", "", []int{200, 200}, ""},
		{"guests off", "[web]\nguests = false", []int{403}, "M_FORBIDDEN"},
		{"rate limited", "[web]\nguest_rate = 1\nguest_burst = 2", []int{200, 200, 429}, "M_LIMIT_EXCEEDED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startNode(t, tc.config)
			for i, want := range tc.want {
				resp, err := http.Post(base+"/api/join", "application/json", strings.NewReader(`{"room":"r","name":"n"}`))
				require.NoError(t, err)
				var body struct {
					ErrCode string `json:"errcode"`
				}
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
				resp.Body.Close()
				require.Equal(t, want, resp.StatusCode, "join %d", i)
				if want != http.StatusOK {
					require.Equal(t, tc.code, body.ErrCode)
				}
			}
		})
	}
}
