package livekit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
)

// startServer runs a signal server with opts over an auto-creating SFU,
// both closed when the test ends.
func startServer(t *testing.T, opts ...ServerOption) (*httptest.Server, *media.SFU) {
	t.Helper()
	sfu, eng := testNode(t, media.Config{
		AutoCreate:   true,
		EmptyTimeout: time.Minute, DepartureTimeout: time.Minute,
	})
	mux := http.NewServeMux()
	NewServer(sfu, eng, testKeys(), zerolog.Nop(), opts...).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		sfu.Close()
	})
	return srv, sfu
}

// rawClient is a bare websocket signal client: it sends what the test
// says, answers nothing on its own, and reads only when asked to (so it
// does not even answer websocket pings in between).
type rawClient struct {
	t    *testing.T
	conn *websocket.Conn
	join *livekit.JoinResponse
}

// dialRaw connects with tok and reads up to the join answer.
func dialRaw(t *testing.T, ctx context.Context, srv *httptest.Server, tok string) *rawClient {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/rtc?access_token="+tok, nil)
	require.NoError(t, err)
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	c := &rawClient{t: t, conn: conn}
	m := c.readUntil(ctx, func(m *livekit.SignalResponse) bool { return m.GetJoin() != nil })
	c.join = m.GetJoin()
	return c
}

func (c *rawClient) send(ctx context.Context, req *livekit.SignalRequest) error {
	b, err := proto.Marshal(req)
	require.NoError(c.t, err)
	return c.conn.Write(ctx, websocket.MessageBinary, b)
}

// readUntil reads responses until one satisfies ok, and returns it.
func (c *rawClient) readUntil(ctx context.Context, ok func(*livekit.SignalResponse) bool) *livekit.SignalResponse {
	c.t.Helper()
	for {
		_, data, err := c.conn.Read(ctx)
		require.NoError(c.t, err)
		var m livekit.SignalResponse
		require.NoError(c.t, proto.Unmarshal(data, &m))
		if ok(&m) {
			return &m
		}
	}
}
