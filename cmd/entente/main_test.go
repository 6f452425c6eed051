package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
