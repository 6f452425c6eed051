package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// syncBuffer is a log sink the test reads while the nodes write.
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

// loggedNode is a node of its own SFU whose log the test reads.
func loggedNode(t *testing.T, cfg Config, calls Calls, net *fakeNet, side int) (*Node, *media.SFU, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	sfu := media.New(media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}, log, nil)
	n, err := New(cfg, sfu, calls, fakeSignal{net, cfg.Bot}, net.newConn(side), nil, log)
	require.NoError(t, err)
	net.mu.Lock()
	net.nodes[cfg.Bot] = n
	net.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; sfu.Close() })
	return n, sfu, logs
}

func invite(t *testing.T, room, conf string, at time.Time) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(callContent{CallID: "c1", PartyID: "D", Version: "1", ConfID: conf, SenderSessionID: "s1",
		Offer: &description{Type: "offer", SDP: "v=0"}, Trunk: &trunkInfo{Version: 1, RoomID: room, TS: at.UnixMilli()}})
	require.NoError(t, err)
	return b
}

// TestTrunkRefusals: a server off the peer list, a peer's server with
// another user than its bot, a stale invite, an invite for a call that
// does not span both servers, and a call whose room the peer's bot is not
// in never make a trunk; each refusal is logged with its reason, and a
// refused sender off the list gets no answer at all.
func TestTrunkRefusals(t *testing.T) {
	net := &fakeNet{nodes: map[string]*Node{}, wires: map[string]*fakeWire{}}
	calls := &staticCalls{
		calls: []Call{
			{RoomID: "!both:b.test", MediaRoom: "both", Servers: []string{"b.test", "a.test"}},
			{RoomID: "!only:b.test", MediaRoom: "only", Servers: []string{"b.test"}},
			{RoomID: "!nobot:b.test", MediaRoom: "nobot", Servers: []string{"b.test", "a.test"}},
		},
		joined: map[string]bool{"!both:b.test|@entente:b.test": true, "!both:b.test|@entente:a.test": true,
			"!only:b.test|@entente:b.test": true, "!only:b.test|@entente:a.test": true, "!nobot:b.test|@entente:b.test": true},
	}
	// b.test's bot sorts after a.test's: b answers, a offers.
	b, _, logs := loggedNode(t, Config{ServerName: "b.test", Bot: "@entente:b.test",
		Peers: map[string]Peer{"a.test": {Bot: "@entente:a.test"}}}, calls, net, 1)
	now := time.Now()
	for _, c := range []struct {
		sender, room, conf string
		at                 time.Time
		logged             string
	}{
		{"@entente:c.test", "!both:b.test", "both", now, "not on the peer list"},
		{"@mallory:a.test", "!both:b.test", "both", now, "not on the peer list"},
		{"@entente:a.test", "!both:b.test", "both", now.Add(-time.Hour), "not within"},
		{"@entente:a.test", "!only:b.test", "only", now, "no members of both servers"},
		{"@entente:a.test", "!nobot:b.test", "nobot", now, "@entente:a.test is not in the room"},
		{"@entente:a.test", "!both:b.test", "other", now, "no call in that room here"},
	} {
		sentBefore := net.sent.Load()
		b.HandleToDevice(ToDevice{Sender: c.sender, Type: EventInvite, Content: invite(t, c.room, c.conf, c.at)})
		require.Eventually(t, func() bool { return strings.Contains(logs.String(), c.logged) }, 5*time.Second, 10*time.Millisecond,
			"refusal of %s for %s logged", c.sender, c.conf)
		require.Empty(t, b.Links(), "no trunk for %s", c.sender)
		if strings.Contains(c.logged, "peer list") {
			time.Sleep(50 * time.Millisecond)
			require.Equal(t, sentBefore, net.sent.Load(), "nothing is sent to a sender off the list")
		}
	}

	// The answerer never offers, and refuses an invite from a peer that
	// should be answering it (both would offer otherwise).
	a, _, logsA := loggedNode(t, Config{ServerName: "a.test", Bot: "@entente:a.test",
		Peers: map[string]Peer{"b.test": {Bot: "@entente:b.test"}}}, &staticCalls{}, net, 0)
	a.HandleToDevice(ToDevice{Sender: "@entente:b.test", Type: EventInvite, Content: invite(t, "!both:b.test", "both", now)})
	require.Eventually(t, func() bool { return strings.Contains(logsA.String(), "offers to that peer") }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, a.Links())
}

// TestRemoteIdentityChecks: a peer may not pass one of its participants
// off as a user of this node's server, as a user of another peer, or as
// someone already in the room.
func TestRemoteIdentityChecks(t *testing.T) {
	n := &Node{cfg: Config{ServerName: "a.test", Peers: map[string]Peer{"b.test": {}, "c.test": {}}},
		sfu: media.New(media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute}, zerolog.Nop(), nil)}
	t.Cleanup(n.sfu.Close)
	room, err := n.sfu.CreateRoom("r")
	require.NoError(t, err)
	p, _, err := room.Join(context.Background(), media.JoinParams{Identity: "@dave:d.test:X", Signaller: nopSignaller{}, Transport: &remoteTransport{}})
	require.NoError(t, err)
	defer p.Leave()
	l := &link{n: n, peer: "b.test", call: Call{MediaRoom: "r"}, remotes: map[string]*remote{}}
	for _, c := range []struct {
		identity string
		attrs    map[string]string
		ok       bool
	}{
		{"@bob:b.test:DEV", nil, true},
		{"hashedidentity", map[string]string{"matrix_user_id": "@bob:b.test"}, true},
		{"@erin:e.test:DEV", nil, true}, // a server without a node, served by the peer
		{"@alice:a.test:DEV", nil, false},
		{"hashed", map[string]string{"matrix_user_id": "@alice:a.test"}, false},
		{"@carol:c.test:DEV", nil, false},
		{"@dave:d.test:X", nil, false},
	} {
		err := l.admissible(&side{name: "r"}, &participantMessage{Sid: "PA_x", Identity: c.identity, Attributes: c.attrs})
		if c.ok {
			require.NoError(t, err, c.identity)
		} else {
			require.Error(t, err, c.identity)
		}
	}
}
