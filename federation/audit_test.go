package federation

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memAudit is an AuditLog in memory.
type memAudit struct {
	mu   sync.Mutex
	recs []memRecord
}

type memRecord struct {
	AuditEntry
	sent, received uint64
	updates        int
	closed         bool
	outcome        string
}

func (m *memAudit) OpenAudit(_ context.Context, e AuditEntry) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, memRecord{AuditEntry: e})
	return int64(len(m.recs)), nil
}

func (m *memAudit) UpdateAudit(_ context.Context, id int64, sent, received uint64, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &m.recs[id-1]
	if r.closed {
		return errors.New("closed")
	}
	r.sent, r.received = sent, received
	r.updates++
	return nil
}

func (m *memAudit) CloseAudit(_ context.Context, id int64, sent, received uint64, _ time.Time, outcome string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &m.recs[id-1]
	if r.closed {
		return errors.New("closed twice")
	}
	r.sent, r.received, r.closed, r.outcome = sent, received, true, outcome
	return nil
}

// of returns the records of one kind.
func (m *memAudit) of(kind string) []memRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(m.recs), func(r memRecord) bool { return r.Kind != kind })
}

// TestTrunkAudited: each node records the trunk (peer, room, call, its
// role), writes its byte counts while it runs, which are what crossed the
// wire (one side's sent is the other's received, but for what crosses
// while the two close), and closes the record
// with the final counts and why it ended.
func TestTrunkAudited(t *testing.T) {
	tn := startNodes(t)
	publisher(t, tn.sfuA, "@alice:a.test:DEV")
	_, e, _ := subscriber(t, tn.sfuB, "@bob:b.test:DEV")
	require.Eventually(t, func() bool { return e.packets.Load() > 50 }, 10*time.Second, 20*time.Millisecond,
		"alice's media reaches bob")

	require.Eventually(t, func() bool {
		a, b := tn.auditA.of(AuditTrunk), tn.auditB.of(AuditTrunk)
		return len(a) == 1 && len(b) == 1 && a[0].updates > 0 && b[0].updates > 0 && a[0].sent > 0 && b[0].received > 0
	}, 5*time.Second, 20*time.Millisecond, "both records opened and updated while the trunk runs")
	a, b := tn.auditA.of(AuditTrunk)[0], tn.auditB.of(AuditTrunk)[0]
	require.Equal(t, AuditEntry{Kind: AuditTrunk, Role: RoleOfferer, Peer: "b.test", RoomID: "!r:a.test", MediaRoom: testRoom,
		CallID: a.CallID, Start: a.Start}, a.AuditEntry)
	require.Equal(t, AuditEntry{Kind: AuditTrunk, Role: RoleAnswerer, Peer: "a.test", RoomID: "!r:a.test", MediaRoom: testRoom,
		CallID: a.CallID, Start: b.Start}, b.AuditEntry, "the same call ID on both nodes")
	require.NotEmpty(t, a.CallID)
	require.False(t, a.closed || b.closed)

	tn.stop()
	a, b = tn.auditA.of(AuditTrunk)[0], tn.auditB.of(AuditTrunk)[0]
	require.True(t, a.closed && b.closed)
	require.True(t, strings.HasPrefix(a.outcome, "ok: "), a.outcome)
	// The nodes close one after the other: what A sends between B's final
	// reading and its own is counted by A only.
	near := func(x, y uint64, what string) {
		t.Helper()
		diff := max(x, y) - min(x, y)
		require.LessOrEqual(t, diff, 8192+max(x, y)/20, "%s: %d and %d", what, x, y)
	}
	near(a.sent, b.received, "A's sent is what B received")
	near(a.received, b.sent, "B's sent is what A received")
	require.Greater(t, a.sent, uint64(50*200), "at least the media bob got")
	require.Greater(t, a.received, uint64(0), "B's control messages")
}

// TestTrunkRefusalAudited: an invite for a call that does not span both
// nodes here is refused, and the refusal recorded.
func TestTrunkRefusalAudited(t *testing.T) {
	tn := startNodes(t)
	tn.calls.mu.Lock()
	tn.calls.calls[0].Servers = []string{"a.test"} // B has no member in the call
	tn.calls.mu.Unlock()
	c := &callContent{CallID: "call1", ConfID: testRoom, Offer: &description{Type: "offer", SDP: "x"},
		Trunk: &trunkInfo{Version: 1, RoomID: "!r:a.test"}}
	tn.nodeB.invited(context.Background(), "a.test", c)
	recs := tn.auditB.of(AuditTrunk)
	require.Len(t, recs, 1)
	require.Equal(t, RoleAnswerer, recs[0].Role)
	require.Equal(t, "call1", recs[0].CallID)
	require.True(t, recs[0].closed)
	require.Equal(t, "refused: the call has no members of both servers", recs[0].outcome)
}

// TestTokenForwardAudited: a forwarded token request is recorded on both
// nodes under its req_id, with the sizes of the request and the answer,
// never their bodies.
func TestTokenForwardAudited(t *testing.T) {
	tn := startNodesWith(t, testURLA, testURLB)
	tn.nodeA.SetTokenIssuer(&fakeIssuer{})
	req := []byte(`{"room":"!r:a.test","openid_token":{"access_token":"secret-openid"}}`)
	status, body, err := tn.nodeB.ForwardToken(context.Background(), "a.test", EndpointSFUGet, req, "!r:a.test", testRoom)
	require.NoError(t, err)
	require.Equal(t, 200, status)

	b := tn.auditB.of(AuditToken)
	require.Len(t, b, 1)
	require.Equal(t, RoleForwarded, b[0].Role)
	require.Equal(t, "a.test", b[0].Peer)
	require.Equal(t, "!r:a.test", b[0].RoomID)
	require.Equal(t, testRoom, b[0].MediaRoom)
	require.Equal(t, uint64(len(req)), b[0].sent)
	require.Equal(t, uint64(len(body)), b[0].received)
	require.Equal(t, "ok: status 200", b[0].outcome)
	require.Eventually(t, func() bool {
		a := tn.auditA.of(AuditToken)
		return len(a) == 1 && a[0].closed
	}, 5*time.Second, 10*time.Millisecond)
	a := tn.auditA.of(AuditToken)[0]
	require.Equal(t, RoleAnswered, a.Role)
	require.Equal(t, "b.test", a.Peer)
	require.Equal(t, b[0].CallID, a.CallID, "one req_id on both nodes")
	require.Equal(t, uint64(len(req)), a.received)
	require.Equal(t, uint64(len(body)), a.sent)
	require.Equal(t, "ok: status 200", a.outcome)
	for _, r := range append(tn.auditA.of(AuditToken), b...) {
		require.NotContains(t, r.outcome+r.RoomID+r.MediaRoom+r.CallID, "secret", "no token in a record")
	}

	// A node without a token service declines, and both record it.
	_, _, err = tn.nodeA.ForwardToken(context.Background(), "b.test", EndpointSFUGet, []byte(`{}`), "!r:a.test", testRoom)
	require.ErrorIs(t, err, ErrNoAnswer)
	require.Equal(t, "declined by the peer", tn.auditA.of(AuditToken)[1].outcome)
	require.Eventually(t, func() bool {
		recs := tn.auditB.of(AuditToken)
		return len(recs) == 2 && recs[1].outcome == "declined: this node issues no tokens"
	}, 5*time.Second, 10*time.Millisecond)
}

// TestAuditOptional: without an audit log a record does nothing.
func TestAuditOptional(t *testing.T) {
	n := &Node{}
	rec := n.openAudit(context.Background(), AuditEntry{Kind: AuditTrunk}, n.log)
	require.False(t, rec.ok)
	rec.update(context.Background(), 1, 2)
	rec.close(context.Background(), 1, 2, "ok")
	ta := &trunkAudit{rec: rec}
	ta.tick(context.Background())
	ta.close(context.Background(), "ok")
}

func TestCleanOutcome(t *testing.T) {
	require.Equal(t, "ok: a b", cleanOutcome("ok: a\nb"))
	long := cleanOutcome(strings.Repeat("é", 300))
	require.LessOrEqual(t, len(long), maxOutcome)
	require.True(t, strings.HasPrefix(strings.Repeat("é", 300), long))
}
