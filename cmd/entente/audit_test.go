package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/federation"
	"entente.dev/entente/internal/config"
	"entente.dev/entente/internal/store"
)

// auditNode writes a configuration and opens its store as a running node
// would, with records written through the federation adapter.
func auditNode(t *testing.T) (string, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "entente.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(`data_dir = "`+filepath.Join(dir, "data")+`"`+"\n"), 0o600))
	st, err := store.Open(t.Context(), filepath.Join(dir, "data", "entente.db"), zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return cfg, st
}

func TestAuditCommand(t *testing.T) {
	cfg, st := auditNode(t)
	ctx := t.Context()
	a := auditLog{st: st}
	now := time.Now().UTC().Truncate(time.Millisecond)
	old := now.Add(-48 * time.Hour)

	id1, err := a.OpenAudit(ctx, federation.AuditEntry{Kind: federation.AuditTrunk, Role: federation.RoleOfferer, Peer: "b.example",
		RoomID: "!room:a.example", MediaRoom: "R1", CallID: "call1", Start: old})
	require.NoError(t, err)
	require.NoError(t, a.CloseAudit(ctx, id1, 3<<20, 1536, old.Add(time.Hour), "ok: the peer hung up"))
	id2, err := a.OpenAudit(ctx, federation.AuditEntry{Kind: federation.AuditToken, Role: federation.RoleAnswered, Peer: "c.example",
		RoomID: "!evil\x1b[31m:c.example", MediaRoom: "R2", CallID: "req2", Start: now.Add(-time.Minute)})
	require.NoError(t, err)
	require.NoError(t, a.CloseAudit(ctx, id2, 300, 120, now.Add(-time.Minute), "ok: status 200"))
	id3, err := a.OpenAudit(ctx, federation.AuditEntry{Kind: federation.AuditTrunk, Role: federation.RoleAnswerer, Peer: "b.example",
		RoomID: "!room:a.example", MediaRoom: "R3", CallID: "call3", Start: now})
	require.NoError(t, err)
	require.NoError(t, a.UpdateAudit(ctx, id3, 100, 200, now))

	// The node keeps its store open (and writing) while the command reads.
	out, _, err := runCmd(t, "audit", "--config", cfg)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	require.True(t, strings.HasPrefix(lines[0], "START"), out)
	col := strings.Index(lines[0], "PEER")
	for _, l := range lines[1:] {
		require.Equal(t, ".example", l[col+1:col+9], "aligned columns:\n%s", out)
	}
	require.Contains(t, lines[1], "call1")
	require.Contains(t, lines[1], "3.0 MiB")
	require.Contains(t, lines[1], "1.5 KiB")
	require.Contains(t, lines[1], "ok: the peer hung up")
	require.Contains(t, lines[2], `!evil\x1b[31m:c.example`, "a peer's control characters are quoted")
	require.NotContains(t, out, "\x1b")
	require.Contains(t, lines[3], "open", "newest last, still open")
	require.Contains(t, lines[3], "100 B")

	out, _, err = runCmd(t, "audit", "--config", cfg, "--since", "24h", "--kind", "trunk")
	require.NoError(t, err)
	require.Equal(t, 2, strings.Count(out, "\n"), out)
	require.Contains(t, out, "call3")

	out, _, err = runCmd(t, "audit", "--config", cfg, "--peer", "b.example", "--json")
	require.NoError(t, err)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	var first, last auditJSON
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &last))
	require.Equal(t, "call1", first.CallID)
	require.Equal(t, uint64(3<<20), first.BytesSent)
	require.Equal(t, uint64(1536), first.BytesReceived)
	require.NotNil(t, first.End)
	require.True(t, old.Add(time.Hour).Equal(*first.End))
	require.Nil(t, last.End, "an open record has end null")
	require.Contains(t, lines[1], `"end":null`)

	out, _, err = runCmd(t, "audit", "--config", cfg, "--since", now.Add(-time.Hour).Format(time.RFC3339))
	require.NoError(t, err)
	require.Equal(t, 3, strings.Count(out, "\n"), out)
}

func TestAuditCommandErrors(t *testing.T) {
	cfg, _ := auditNode(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kind", "call"}, `--kind "call"`},
		{[]string{"--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"--since", "-5h"}, `--since "-5h"`},
		{[]string{"--limit", "-1"}, "--limit"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		_, _, err := runCmd(t, append([]string{"audit", "--config", cfg}, tc.args...)...)
		require.ErrorContains(t, err, tc.want, tc.args)
	}
	dir := t.TempDir()
	fresh := filepath.Join(dir, "entente.toml")
	require.NoError(t, os.WriteFile(fresh, []byte(`data_dir = "`+filepath.Join(dir, "data")+`"`+"\n"), 0o600))
	_, _, err := runCmd(t, "audit", "--config", fresh)
	require.ErrorContains(t, err, "no database at")
	_, err = os.Stat(filepath.Join(dir, "data", "entente.db"))
	require.ErrorIs(t, err, os.ErrNotExist, "the command creates no database")
}

func TestStartAudit(t *testing.T) {
	_, st := auditNode(t)
	ctx := t.Context()
	now := time.Now()
	left, err := st.OpenAudit(ctx, store.AuditRecord{Kind: store.AuditTrunk, Role: "offerer", Peer: "b.example", Start: now.Add(-time.Hour)})
	require.NoError(t, err)
	require.NoError(t, st.UpdateAudit(ctx, left, 10, 20, now.Add(-30*time.Minute)))
	ancient, err := st.OpenAudit(ctx, store.AuditRecord{Kind: store.AuditToken, Role: "forwarded", Peer: "b.example", Start: now.Add(-400 * 24 * time.Hour)})
	require.NoError(t, err)
	require.NoError(t, st.CloseAudit(ctx, ancient, 1, 1, now.Add(-400*24*time.Hour), "ok: status 200"))

	cfg := config.Default()
	runCtx, cancel := context.WithCancel(ctx)
	wait, err := startAudit(runCtx, cfg, st, zerolog.Nop())
	require.NoError(t, err)
	recs, err := st.AuditRecords(ctx, store.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, recs, 1, "the record older than the retention is gone")
	require.Equal(t, left, recs[0].ID)
	require.Equal(t, store.OutcomeInterrupted, recs[0].Outcome, "the record a killed node left open is ended")
	require.True(t, now.Add(-30*time.Minute).Truncate(time.Millisecond).Equal(recs[0].End))
	cancel()
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the pruning goroutine did not stop with its context")
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB", 1<<64 - 1: "16.0 EiB"} {
		require.Equal(t, want, humanBytes(n), n)
	}
}
