package livekit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestSilentClientIsDisconnected: with a ping timeout of one second, a
// client that joins and then neither sends anything nor reads (so does
// not answer the server's websocket pings) is disconnected and leaves
// with SIGNAL_CLOSE; a client that pings stays, and so does one that only
// reads (the Go SDK never pings but answers websocket pings).
func TestSilentClientIsDisconnected(t *testing.T) {
	srv, _ := startServer(t, WithPing(200*time.Millisecond, time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token := func(identity string) string {
		return mint(t, identity, &auth.VideoGrant{RoomJoin: true, Room: "live"}, nil)
	}

	pinger := dialRaw(t, ctx, srv, token("pinger"))
	require.Equal(t, int32(1), pinger.join.PingTimeout, "the join answer announces the timeout")
	reader := dialRaw(t, ctx, srv, token("reader"))
	silent := dialRaw(t, ctx, srv, token("silent"))

	var wg sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer func() { stopLoops(); wg.Wait() }()
	// reader reads, never sends; pinger pings every 100 ms and reads.
	readerGone, pingerGone := make(chan error, 1), make(chan error, 1)
	wg.Add(3)
	go func() { defer wg.Done(); readerGone <- drain(loopCtx, reader.conn, nil) }()
	gone := make(chan *livekit.ParticipantInfo, 1)
	go func() {
		defer wg.Done()
		pingerGone <- drain(loopCtx, pinger.conn, func(m *livekit.SignalResponse) {
			for _, p := range m.GetUpdate().GetParticipants() {
				if p.Identity == "silent" && p.State == livekit.ParticipantInfo_DISCONNECTED {
					select {
					case gone <- p:
					default:
					}
				}
			}
		})
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-t.C:
			}
			b, _ := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Ping{Ping: time.Now().UnixMilli()}})
			if pinger.conn.Write(loopCtx, websocket.MessageBinary, b) != nil {
				return
			}
		}
	}()

	select {
	case p := <-gone:
		require.Equal(t, livekit.DisconnectReason_SIGNAL_CLOSE, p.DisconnectReason)
	case err := <-pingerGone:
		t.Fatalf("the pinging client was disconnected: %v", err)
	case err := <-readerGone:
		t.Fatalf("the reading client was disconnected: %v", err)
	case <-ctx.Done():
		t.Fatal("the silent client was never disconnected")
	}
	// The silent client's socket is closed: reading finds the frames
	// queued before, then the end.
	require.Error(t, drain(ctx, silent.conn, nil))
	select {
	case err := <-pingerGone:
		t.Fatalf("the pinging client was disconnected: %v", err)
	case err := <-readerGone:
		t.Fatalf("the reading client was disconnected: %v", err)
	default:
	}
}

// drain reads responses, handing each to each (when set), until the
// connection or ctx ends; it returns why.
func drain(ctx context.Context, conn *websocket.Conn, each func(*livekit.SignalResponse)) error {
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		var m livekit.SignalResponse
		if err := proto.Unmarshal(data, &m); err != nil {
			return err
		}
		if each != nil {
			each(&m)
		}
		if l := m.GetLeave(); l != nil {
			return fmt.Errorf("the server sent a leave: %s", l.GetReason())
		}
	}
}

// TestGoSDKStaysWithoutPinging: the Go SDK sends no signal pings; it
// stays connected, in the same session, through several ping timeouts
// because it answers the server's websocket pings. (Dropped, it would
// rejoin on its own, as a new session.)
func TestGoSDKStaysWithoutPinging(t *testing.T) {
	srv, _ := startServer(t, WithPing(200*time.Millisecond, time.Second))
	var dropped atomic.Bool
	cb := &lksdk.RoomCallback{
		OnDisconnected: func() { dropped.Store(true) },
		OnReconnecting: func() { dropped.Store(true) },
	}
	room, err := lksdk.ConnectToRoomWithToken("ws"+strings.TrimPrefix(srv.URL, "http"),
		mint(t, "sdk", &auth.VideoGrant{RoomJoin: true, Room: "live"}, nil), cb, lksdk.WithAutoSubscribe(false))
	require.NoError(t, err)
	defer room.Disconnect()
	sid := room.LocalParticipant.SID()
	time.Sleep(3 * time.Second) // three ping timeouts
	require.False(t, dropped.Load(), "the SDK client was dropped")
	require.Equal(t, sid, room.LocalParticipant.SID(), "the SDK client is still in its first session")
	require.Equal(t, lksdk.ConnectionStateConnected, room.ConnectionState())
}
