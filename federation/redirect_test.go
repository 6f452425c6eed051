package federation

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

const (
	testURLA = "https://rtc.a.test"
	testURLB = "https://rtc.b.test"
)

// TestRedirectMirrorRooms: with a token service URL per agency, one trunk
// per call carries both transports' rooms. R(A)'s publishers appear in
// M(B<-A) on B and R(B)'s in M(A<-B) on A, never in the other's R; a
// subscribe-only participant is not copied; a legacy-mode publisher of
// M(B<-A) reaches R(A) on A and does not come back.
func TestRedirectMirrorRooms(t *testing.T) {
	tn := startNodesWith(t, testURLA, testURLB)
	mAB, mBA := MirrorRoom(testRoom, testURLB), MirrorRoom(testRoom, testURLA)
	require.NotEqual(t, testRoom, mAB)
	require.NotEqual(t, mAB, mBA)
	const alice, bob, carol = "@alice:a.test:DEV", "@bob:b.test:DEV", "@carol:b.test:DEV"

	publisher(t, tn.sfuA, alice)
	publisher(t, tn.sfuB, bob)
	_, _, _ = subscriber(t, tn.sfuA, "@sam:a.test:DEV") // subscribe-only in R(A)
	require.Eventually(t, func() bool {
		return tn.sfuB.HasParticipant(mBA, alice) && tn.sfuA.HasParticipant(mAB, bob)
	}, 10*time.Second, 20*time.Millisecond, "each node's publisher appears in the other's mirror room of its transport")

	// Alice's subscribe-only connection for B's transport, on her own node.
	_, e, _ := subscriberIn(t, tn.sfuA, mAB, alice)
	require.Eventually(t, func() bool { return e.video(media.KindVideo) != "" && e.video(media.KindAudio) != "" },
		10*time.Second, 20*time.Millisecond, "alice gets bob's camera and microphone in M(A<-B)")
	before := e.packets.Load()
	require.Eventually(t, func() bool { return e.packets.Load() > before+20 }, 10*time.Second, 50*time.Millisecond,
		"bob's media reaches alice")

	// Legacy mode: carol, of B, publishes on A's transport, in B's mirror of it.
	publisherIn(t, tn.sfuB, mBA, carol)
	require.Eventually(t, func() bool { return tn.sfuA.HasParticipant(testRoom, carol) }, 10*time.Second, 20*time.Millisecond,
		"a publisher of M(B<-A) reaches R(A)")

	time.Sleep(time.Second)
	for _, c := range []struct {
		sfu            *media.SFU
		room, identity string
	}{
		// Never into the other's R; alice's subscribe-only participant of
		// M(A<-B) is not copied into R(B), nor sam's of R(A) into M(B<-A).
		{tn.sfuB, testRoom, alice}, {tn.sfuA, testRoom, bob}, {tn.sfuB, mBA, "@sam:a.test:DEV"},
		{tn.sfuA, mAB, carol}, {tn.sfuB, testRoom, carol}, // carol does not come back, nor go elsewhere
	} {
		require.False(t, c.sfu.HasParticipant(c.room, c.identity), "%s in %s", c.identity, c.room)
	}
	la, lb := tn.nodeA.Links(), tn.nodeB.Links()
	require.Len(t, la, 1, "one trunk per peer and call")
	require.Len(t, lb, 1, "one trunk per peer and call")
	require.Equal(t, mAB, la[0].MirrorRoom)
	require.Equal(t, mBA, lb[0].MirrorRoom)
	require.Equal(t, 2, la[0].Remotes, "A holds bob (M(A<-B)) and carol (R(A))")
	require.Equal(t, 1, lb[0].Remotes, "B holds alice only: carol is not echoed back")
}

// TestSharedTransportHasNoMirror: a peer URL equal to this node's own is
// the shared transport: one room pair, no mirror room.
func TestSharedTransportHasNoMirror(t *testing.T) {
	tn := startNodesWith(t, testURLA, testURLA+"/")
	publisher(t, tn.sfuA, "@alice:a.test:DEV")
	require.Eventually(t, func() bool { return tn.sfuB.HasParticipant(testRoom, "@alice:a.test:DEV") }, 10*time.Second, 20*time.Millisecond)
	require.Empty(t, tn.nodeA.Links()[0].MirrorRoom)
	require.False(t, tn.nodeA.Forwards("b.test"))
}

// fakeIssuer is a token service answering forwarded requests.
type fakeIssuer struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeIssuer) IssueForwarded(_ context.Context, endpoint string, body []byte, mirror func(string) string) (int, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, endpoint+" "+string(body))
	return 200, []byte(`{"url":"wss://a","jwt":"for ` + mirror(testRoom) + `"}`)
}

func (f *fakeIssuer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// TestTokenForwardRoundTrip: B forwards a request of A's user to A's bot;
// A's token service answers for M(A<-B), named from A's configuration of
// B; B gets the answer unchanged.
func TestTokenForwardRoundTrip(t *testing.T) {
	tn := startNodesWith(t, testURLA, testURLB)
	issuer := &fakeIssuer{}
	tn.nodeA.SetTokenIssuer(issuer)
	status, body, err := tn.nodeB.ForwardToken(context.Background(), "a.test", EndpointSFUGet, []byte(`{"room":"!r:a.test"}`), "!r:a.test", testRoom)
	require.NoError(t, err)
	require.Equal(t, 200, status)
	require.Equal(t, `{"url":"wss://a","jwt":"for `+MirrorRoom(testRoom, testURLB)+`"}`, string(body))
	require.Equal(t, []string{`/sfu/get {"room":"!r:a.test"}`}, issuer.calls)

	_, _, err = tn.nodeB.ForwardToken(context.Background(), "c.test", EndpointSFUGet, nil, "!r:a.test", testRoom)
	require.ErrorIs(t, err, ErrNotForwarded, "a server off the peer list is never forwarded to")

	// A node without a token service declines at once.
	_, _, err = tn.nodeA.ForwardToken(context.Background(), "b.test", EndpointSFUGet, []byte(`{}`), "!r:a.test", testRoom)
	require.ErrorIs(t, err, ErrNoAnswer)
}

// TestTokenForwardNoAnswer: a peer that does not answer leaves the asking
// node to serve the user itself, within the wait.
func TestTokenForwardNoAnswer(t *testing.T) {
	tn := startNodesWith(t, testURLA, testURLB)
	tn.net.mu.Lock()
	delete(tn.net.nodes, "@entente:a.test") // A's node is down
	tn.net.mu.Unlock()
	start := time.Now()
	_, _, err := tn.nodeB.ForwardToken(context.Background(), "a.test", EndpointSFUGet, []byte(`{}`), "!r:a.test", testRoom)
	require.ErrorIs(t, err, ErrNoAnswer)
	require.InDelta(t, forwardWait.Seconds(), time.Since(start).Seconds(), 1)
}

// TestTokenMessagesFromOffTheList: a token request or response from a bot
// that is not a peer's is dropped and logged; a response to no request of
// ours is dropped.
func TestTokenMessagesFromOffTheList(t *testing.T) {
	net := &fakeNet{nodes: map[string]*Node{}, wires: map[string]*fakeWire{}}
	n, _, logs := loggedNode(t, Config{ServerName: "a.test", Bot: "@entente:a.test", ServiceURL: testURLA,
		Peers: map[string]Peer{"b.test": {Bot: "@entente:b.test", URL: testURLB}}}, &staticCalls{}, net, 0)
	issuer := &fakeIssuer{}
	n.SetTokenIssuer(issuer)
	req, err := json.Marshal(tokenRequest{ReqID: "r1", Endpoint: EndpointSFUGet, Body: "{}", RoomID: "!r:a.test"})
	require.NoError(t, err)
	n.HandleToDevice(ToDevice{Sender: "@entente:c.test", Type: EventTokenRequest, Content: req})
	n.HandleToDevice(ToDevice{Sender: "@mallory:b.test", Type: EventTokenRequest, Content: req})
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), "not on the peer list refused") == 2
	}, 5*time.Second, 20*time.Millisecond, logs.String())
	require.Zero(t, issuer.count())

	// A response from a non-peer to a waiting request is not taken.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _, err := n.ForwardToken(ctx, "b.test", EndpointSFUGet, []byte(`{}`), "!r:a.test", testRoom)
		done <- err
	}()
	var reqID string
	require.Eventually(t, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		for id := range n.pending {
			reqID = id
		}
		return reqID != ""
	}, time.Second, 5*time.Millisecond)
	resp, _ := json.Marshal(tokenResponse{ReqID: reqID, Status: 200, Body: "{}"})
	n.HandleToDevice(ToDevice{Sender: "@entente:c.test", Type: EventTokenResponse, Content: resp})
	err = <-done
	require.True(t, errors.Is(err, ErrNoAnswer), "%v", err)
}

// TestPeerURLValidated: a peer's URL must be an http(s) URL; equal to
// this node's own (trailing slash aside), it means the shared transport.
func TestPeerURLValidated(t *testing.T) {
	for _, u := range []string{"wss://rtc.b.test", "rtc.b.test", "https://"} {
		cfg := Config{ServerName: "a.test", Bot: "@entente:a.test", Peers: map[string]Peer{"b.test": {Bot: "@entente:b.test", URL: u}}}
		require.ErrorIs(t, cfg.Validate(), ErrInvalidConfig, u)
	}
	cfg := Config{ServerName: "a.test", Bot: "@entente:a.test", ServiceURL: testURLA + "/",
		Peers: map[string]Peer{"b.test": {Bot: "@entente:b.test", URL: testURLA}, "c.test": {Bot: "@entente:c.test", URL: testURLB},
			"d.test": {Bot: "@entente:d.test"}}}
	require.NoError(t, cfg.Validate())
	require.False(t, cfg.Redirects("b.test"))
	require.True(t, cfg.Redirects("c.test"))
	require.False(t, cfg.Redirects("d.test"))
	require.False(t, cfg.Redirects("e.test"))
}
