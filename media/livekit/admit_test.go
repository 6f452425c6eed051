package livekit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// admitList admits identities on its list and records what it was asked.
type admitList struct {
	mu    sync.Mutex
	allow map[string]bool
	asked []*Grant
}

func (a *admitList) Admit(_ context.Context, g *Grant) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, g)
	if g.Attributes["origin"] != "bridge" {
		return nil // not ours: no opinion
	}
	if !a.allow[g.Identity] {
		return fmt.Errorf("%w: %s left", ErrNotAdmitted, g.Identity)
	}
	return nil
}

func TestAdmitter(t *testing.T) {
	sfu, eng := testNode(t, media.Config{
		AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute,
	})
	t.Cleanup(sfu.Close)
	keys := Keys{"APIadmit": "admit-secret-0123456789-abcdefghijklmn"}
	adm := &admitList{allow: map[string]bool{"alice": true}}
	mux := http.NewServeMux()
	NewServer(sfu, eng, keys, zerolog.Nop(), WithAdmitter(adm)).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	minter := Minter{Key: "APIadmit", Secret: keys["APIadmit"], TTL: time.Hour}
	token := func(identity string, attrs map[string]string) string {
		tok, err := minter.Mint("r", identity, MintOptions{RoomCreate: true, CanSubscribe: true, Attributes: attrs})
		require.NoError(t, err)
		return tok
	}
	validate := func(tok string) (int, string) {
		resp, err := http.Get(srv.URL + "/rtc/validate?access_token=" + tok)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	bridge := map[string]string{"origin": "bridge"}

	code, body := validate(token("alice", bridge))
	require.Equal(t, http.StatusOK, code, body)
	code, body = validate(token("bob", bridge))
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, ErrNotAdmitted.Error(), body, "the admitter's reason is not sent to the client")
	code, _ = validate(token("carol", nil))
	require.Equal(t, http.StatusOK, code, "a token the admitter has no opinion on")

	// The websocket is refused before the upgrade, with the same status.
	_, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/rtc?access_token="+token("bob", bridge), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.False(t, sfu.RoomExists("r"), "a refused join creates nothing")

	adm.mu.Lock()
	defer adm.mu.Unlock()
	require.Len(t, adm.asked, 4)
	require.Equal(t, "bridge", adm.asked[0].Attributes["origin"], "minted attributes reach the admitter")
}
