package matrix

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/store"
)

// A transaction whose answer was lost (the node died after committing) is
// applied exactly once when the homeserver retries after a restart.
func TestTransactionExactlyOnceAcrossRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "entente.db")
	body := string(txnBody(t,
		stateEvent(CallMemberEventType, "!r:hs", "@a:hs", "_@a:hs_D_m.call", "$1", 1000, map[string]any{"device_id": "D", "expires": 60000}),
		stateEvent("m.room.member", "!r:hs", "@b:hs", "@b:hs", "$2", 2000, map[string]any{"membership": "ban"}),
	))

	run := func(wantHooks int) *store.Store {
		st, err := store.Open(ctx, path, zerolog.Nop())
		require.NoError(t, err)
		hooks := 0
		a := newTestAppService(t, NewStoreTxns(st), func(context.Context, TxnEffects) { hooks++ })
		require.Equal(t, http.StatusOK, putTxn(a, "txn-1", "Bearer the-hs-token", body).Code)
		require.Equal(t, wantHooks, hooks)
		return st
	}
	st := run(1)
	require.NoError(t, st.Close()) // "crash" after commit; the answer never arrived
	st = run(0)                    // the retry after restart changes nothing
	defer st.Close()

	members, err := st.MatrixCallMembers(ctx, "!r:hs")
	require.NoError(t, err)
	require.Len(t, members, 1)
	require.Equal(t, "@a:hs", members[0].UserID)
	m, err := st.MatrixMembershipOf(ctx, "!r:hs", "@b:hs")
	require.NoError(t, err)
	require.Equal(t, "ban", m)
}
