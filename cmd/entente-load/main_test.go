package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/loadgen"
)

func TestParseLoadTwoNode(t *testing.T) {
	var stderr bytes.Buffer
	c, o, err := parseLoad([]string{
		"--url", "ws://127.0.0.1:1", "--api-key", "ka", "--api-secret", "sa", "--server-pid", "11",
		"--url-b", "ws://127.0.0.1:2", "--api-key-b", "kb", "--api-secret-b", "sb", "--server-pid-b", "22",
		"--room", "!r:hs|m.call#ROOM", "--identity-prefix", "r1-", "--subscribers", "10",
		"--label", "remote", "--scenario", "av-1x10", "--run", "2", "--json",
	}, &stderr)
	require.NoError(t, err, stderr.String())
	require.True(t, c.TwoNode())
	require.Equal(t, "ws://127.0.0.1:2", c.URLB)
	require.Equal(t, "kb", c.APIKeyB)
	require.Equal(t, "sb", c.APISecretB)
	require.Equal(t, 22, c.ServerPIDB)
	require.Equal(t, 11, c.ServerPID)
	require.Equal(t, "r1-", c.IdentityPrefix)
	require.Equal(t, "!r:hs|m.call#ROOM", c.Room)
	require.True(t, c.Audio && c.Video, "both by default")
	require.Equal(t, loadOptions{asJSON: true, label: "remote", scenario: "av-1x10", run: 2}, o)

	_, _, err = parseLoad([]string{"--api-key", "k", "--api-secret", "s", "--url-b", "ws://127.0.0.1:2"}, &stderr)
	require.ErrorIs(t, err, loadgen.ErrConfig, "a second node needs its own key")
	_, _, err = parseLoad([]string{"--api-key", "k", "--api-secret", "s", "--server-pid-b", "3"}, &stderr)
	require.ErrorIs(t, err, loadgen.ErrConfig, "a second pid needs a second node")
}

func TestFedTableCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r loadgen.Report) string {
		b, err := json.Marshal(r)
		require.NoError(t, err)
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	l := write("l.json", loadgen.Report{Label: "local", Scenario: "s", Run: 1, DelayP50Ms: 1, CPUMicrosPerPacket: 10})
	r := write("r.json", loadgen.Report{Label: "remote", Scenario: "s", Run: 1, DelayP50Ms: 1.25, CPUMicrosPerSourcePacket: 8})
	var out, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"fedtable", l, r}, &out, &stderr), stderr.String())
	require.Contains(t, out.String(), "| s | one-way delay p50 ms | 1.00 (n=1) | 1.25 (n=1) | 0.25 (n=1) |", out.String())
	require.Contains(t, out.String(), "| 10.00 (n=1) | 8.00 (n=1) | 0.80x (n=1) |", out.String())
	require.Error(t, run(context.Background(), []string{"fedtable"}, &out, &stderr), "no reports")
}
