package matrix

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// memTxnStore is an in-memory TxnStore.
type memTxnStore struct {
	mu      sync.Mutex
	seen    map[string]bool
	applied []TxnEffects
	fail    bool
}

func (m *memTxnStore) ApplyTxn(_ context.Context, txnID string, fx TxnEffects) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return false, errors.New("disk full")
	}
	if m.seen[txnID] {
		return false, nil
	}
	m.seen[txnID] = true
	m.applied = append(m.applied, fx)
	return true, nil
}

func newTestAppService(t *testing.T, st TxnStore, onApplied func(context.Context, TxnEffects)) *AppService {
	t.Helper()
	reg, err := NewRegistration(RegistrationParams{ID: "entente", URL: "http://127.0.0.1:1", ServerName: "hs",
		BotLocalpart: "entente", GhostPrefix: "entente_"})
	require.NoError(t, err)
	reg.ServerToken = "the-hs-token"
	a, err := NewAppService(AppServiceOptions{Registration: reg, HomeserverURL: "http://127.0.0.1:1", ServerName: "hs",
		Store: st, OnApplied: onApplied, Log: zerolog.New(zerolog.NewTestWriter(t))})
	require.NoError(t, err)
	return a
}

func putTxn(h http.Handler, id, auth, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("PUT", "/_matrix/app/v1/transactions/"+id, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr
}

func TestAppServiceTransactions(t *testing.T) {
	st := &memTxnStore{seen: map[string]bool{}}
	var calls []TxnEffects
	a := newTestAppService(t, st, func(_ context.Context, fx TxnEffects) { calls = append(calls, fx) })
	require.Equal(t, "@entente:hs", a.BotUserID())
	body := string(txnBody(t, stateEvent("m.room.member", "!r:hs", "@a:hs", "@a:hs", "$1", 1, map[string]any{"membership": "leave"})))

	// Missing and wrong tokens change nothing.
	requireMatrixError(t, putTxn(a, "1", "", body), http.StatusUnauthorized, "M_UNAUTHORIZED")
	requireMatrixError(t, putTxn(a, "1", "Bearer wrong", body), http.StatusForbidden, "M_FORBIDDEN")
	requireMatrixError(t, putTxn(a, "1", "Bearer the-hs-token-and-more", body), http.StatusForbidden, "M_FORBIDDEN")
	require.Empty(t, st.seen)

	rr := putTxn(a, "1", "Bearer the-hs-token", body)
	require.Equal(t, http.StatusOK, rr.Code)
	require.JSONEq(t, "{}", rr.Body.String())
	require.Len(t, st.applied, 1)
	require.Len(t, calls, 1)

	// A replay is acknowledged and changes nothing.
	require.Equal(t, http.StatusOK, putTxn(a, "1", "Bearer the-hs-token", body).Code)
	require.Len(t, st.applied, 1)
	require.Len(t, calls, 1)

	// Legacy query-parameter auth.
	req := httptest.NewRequest("PUT", "/_matrix/app/v1/transactions/2?access_token=the-hs-token", strings.NewReader(`{"events":[]}`))
	rr = httptest.NewRecorder()
	a.ServeHTTP(rr, req)
	require.Equal(t, http.StatusOK, rr.Code)
	require.Len(t, calls, 1, "no hook for a transaction without tracked effects")

	// A store failure is not acknowledged, so the homeserver retries.
	st.fail = true
	requireMatrixError(t, putTxn(a, "3", "Bearer the-hs-token", body), http.StatusInternalServerError, "M_UNKNOWN")
	st.fail = false
	require.Equal(t, http.StatusOK, putTxn(a, "3", "Bearer the-hs-token", body).Code)
	require.Len(t, st.applied, 3)

	requireMatrixError(t, putTxn(a, "4", "Bearer the-hs-token", "not json"), http.StatusBadRequest, "M_NOT_JSON")
	requireMatrixError(t, putTxn(a, strings.Repeat("x", 300), "Bearer the-hs-token", body), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestAppServiceQueries(t *testing.T) {
	a := newTestAppService(t, &memTxnStore{seen: map[string]bool{}}, nil)
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/_matrix/app/v1/users/@entente_x:hs", http.StatusNotFound},
		{"GET", "/_matrix/app/v1/rooms/%23entente_x:hs", http.StatusNotFound},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		rr := httptest.NewRecorder()
		a.ServeHTTP(rr, req)
		require.Equal(t, http.StatusUnauthorized, rr.Code, "unauthenticated %s", c.path)
		req.Header.Set("Authorization", "Bearer the-hs-token")
		rr = httptest.NewRecorder()
		a.ServeHTTP(rr, req)
		require.Equal(t, c.status, rr.Code, c.path)
	}
	req := httptest.NewRequest("POST", "/_matrix/app/v1/ping", strings.NewReader(`{"transaction_id":"x"}`))
	req.Header.Set("Authorization", "Bearer the-hs-token")
	rr := httptest.NewRecorder()
	a.ServeHTTP(rr, req)
	require.Equal(t, http.StatusOK, rr.Code)
}

// The ping body is read bounded: mautrix's handler would read any size.
func TestAppServicePingBodyBounded(t *testing.T) {
	a := newTestAppService(t, &memTxnStore{seen: map[string]bool{}}, nil)
	for _, tc := range []struct {
		name   string
		body   string
		status int
	}{
		{"small", `{"transaction_id":"x"}`, http.StatusOK},
		{"over the bound", `{"transaction_id":"x","pad":"` + strings.Repeat("a", 1<<20) + `"}`, http.StatusBadRequest},
	} {
		req := httptest.NewRequest("POST", "/_matrix/app/v1/ping", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer the-hs-token")
		rr := httptest.NewRecorder()
		a.ServeHTTP(rr, req)
		require.Equal(t, tc.status, rr.Code, tc.name)
	}
}
