package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/dendritetest"
)

// federatedAgencies are two agencies, each with its Dendrite and its node,
// the two homeservers federating and each node on the other's peer list.
type federatedAgencies struct {
	a, b     *matrixNode
	dbgA     string // node A's debug listener
	dbgB     string
	roomID   string
	alice    dendritetest.User // of A
	bob      dendritetest.User // of B
	serviceA string
}

// startFederatedAgencies starts both agencies and makes a public room of
// A's that Bob of B joins over federation; call memberships may be sent
// by anyone in it.
func startFederatedAgencies(t *testing.T) *federatedAgencies {
	t.Helper()
	return startFederatedAgenciesLogging(t, "")
}

// startFederatedAgenciesLogging is startFederatedAgencies with the nodes
// at the given log level ("debug" if empty).
func startFederatedAgenciesLogging(t *testing.T, logLevel string) *federatedAgencies {
	t.Helper()
	hsA, hsB := dendritetest.New(t), dendritetest.New(t)
	dbgA, dbgB := fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")), fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp"))
	fed := func(dbg, peer string) string {
		return fmt.Sprintf("\n[debug]\npprof_listen = %q\n\n[federation.peers.%q]\nbot = %q\n", dbg, peer, "@entente:"+peer)
	}
	f := &federatedAgencies{dbgA: dbgA, dbgB: dbgB}
	f.a = startMatrixNode(t, matrixNodeOptions{homeserver: hsA, extraMatrix: `allow = ["*"]`, extraTOML: fed(dbgA, hsB.ServerName), logLevel: logLevel})
	f.b = startMatrixNode(t, matrixNodeOptions{homeserver: hsB, extraMatrix: `allow = ["*"]`, extraTOML: fed(dbgB, hsA.ServerName), logLevel: logLevel})
	f.alice, f.bob = f.a.hs.Register(t, "alice"), f.b.hs.Register(t, "bob")
	f.roomID = f.a.hs.CreateRoom(t, f.alice, map[string]any{
		"preset": "public_chat", "name": "Inter-agency",
		"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
	})
	f.b.hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(f.roomID)+"?server_name="+url.QueryEscape(f.a.hs.ServerName),
		f.bob.Token, map[string]any{}, nil)
	return f
}

// joinCall gets u a token from its own node (legacy /sfu/get, as Element
// Call's own transport) and sends u's call membership, as Element Call
// does on joining (the shared transport: both agencies advertise one URL).
func (f *federatedAgencies) joinCall(t *testing.T, m *matrixNode, u dendritetest.User) tokenAnswer {
	t.Helper()
	var tok tokenAnswer
	require.Eventually(t, func() bool {
		tok = m.sfuGet(t, u, m.hs.OpenIDToken(t, u), f.roomID)
		return tok.Status == http.StatusOK
	}, 60*time.Second, 500*time.Millisecond, "%s gets a token from its own node", u.ID)
	m.hs.SendState(t, u, f.roomID, "org.matrix.msc3401.call.member", "_"+u.ID+"_"+u.DeviceID, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": u.DeviceID, "expires": 3600000,
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://rtc.federation.test", "livekit_alias": f.roomID}},
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
	})
	return tok
}

type trunkInfo struct {
	Peer      string `json:"peer"`
	MediaRoom string `json:"media_room"`
	Up        bool   `json:"up"`
	Remotes   int    `json:"remote_participants"`
	Offerer   bool   `json:"offerer"`
}

// trunks reads a node's trunks from its debug listener.
func trunks(t *testing.T, debugAddr string) []trunkInfo {
	t.Helper()
	resp, err := http.Get("http://" + debugAddr + "/debug/federation")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Trunks []trunkInfo `json:"trunks"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Trunks
}

// TestFederationTwoNodesSDK: Alice of agency A and Bob of agency B, in one
// Matrix room, each get a token from their own node and connect there
// with the LiveKit Go SDK (the shared transport: each agency's clients
// dial their own node). The nodes link with one trunk, signalled between
// their bots over Matrix; each sees and hears the other, with the
// original identities, through it.
func TestFederationTwoNodesSDK(t *testing.T) {
	f := startFederatedAgencies(t)
	tokA := f.joinCall(t, f.a, f.alice)
	tokB := f.joinCall(t, f.b, f.bob)
	require.True(t, strings.HasPrefix(tokA.URL, "ws://127.0.0.1") && tokA.URL != tokB.URL, "each agency's own node: %s, %s", tokA.URL, tokB.URL)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	aliceID, bobID := f.alice.ID+":"+f.alice.DeviceID, f.bob.ID+":"+f.bob.DeviceID
	start := time.Now()
	ca := connectClientWithToken(t, ctx, tokA.URL, tokA.JWT, aliceID)
	cb := connectClientWithToken(t, ctx, tokB.URL, tokB.JWT, bobID)
	ca.publish(t, ctx, &wg)
	cb.publish(t, ctx, &wg)

	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		eventually(t, 60*time.Second, "Bob, on B, receives Alice's "+k.String()+" from A", func() bool { return cb.count(key(aliceID, k)) > 20 })
		eventually(t, 60*time.Second, "Alice, on A, receives Bob's "+k.String()+" from B", func() bool { return ca.count(key(bobID, k)) > 20 })
	}
	t.Logf("both directions decoded %v after the clients connected", time.Since(start).Round(10*time.Millisecond))
	eventually(t, 20*time.Second, "Bob hears Alice speak", func() bool {
		cb.mu.Lock()
		defer cb.mu.Unlock()
		return cb.speakers[aliceID]
	})

	ta, tb := trunks(t, f.dbgA), trunks(t, f.dbgB)
	require.Len(t, ta, 1, "one trunk on A")
	require.Len(t, tb, 1, "one trunk on B")
	require.True(t, ta[0].Up && tb[0].Up)
	require.Equal(t, f.b.hs.ServerName, ta[0].Peer)
	require.NotEqual(t, ta[0].Offerer, tb[0].Offerer, "exactly one node offered")
	require.Equal(t, 1, ta[0].Remotes, "A holds Bob only")
	require.Equal(t, 1, tb[0].Remotes, "B holds Alice only")

	// Each client's only connection is its own node: the SDK dialled the
	// URL its own token service gave, and neither node has the other's
	// user as a client.
	require.Contains(t, f.a.Logs(), "federation trunk up")
	require.Contains(t, f.b.Logs(), "federation trunk up")
}
