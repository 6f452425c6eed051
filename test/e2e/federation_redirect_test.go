package e2e

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/federation"
)

// jwtRoom reads the video.room claim of a token (unverified: the test
// only checks where a node sent its holder).
func jwtRoom(t *testing.T, jwt string) string {
	t.Helper()
	return jwtClaims(t, jwt).Video.Room
}

// selectedRemotePorts returns the far ports of the ICE candidate pairs a
// Go SDK client selected, on each of its peer connections. The SDK keeps
// its engine unexported; the test reads it to check where media really
// goes.
func selectedRemotePorts(t *testing.T, r *lksdk.Room) []int {
	t.Helper()
	field := reflect.ValueOf(r).Elem().FieldByName("engine")
	require.True(t, field.IsValid(), "lksdk.Room has an engine")
	engine := (*lksdk.RTCEngine)(unsafe.Pointer(field.Pointer()))
	var ports []int
	for _, get := range []func() (*lksdk.PCTransport, bool){engine.Publisher, engine.Subscriber} {
		tr, ok := get()
		if !ok || tr == nil {
			continue
		}
		pc := tr.PeerConnection()
		var ice *webrtc.ICETransport
		if sctp := pc.SCTP(); sctp != nil && sctp.Transport() != nil {
			ice = sctp.Transport().ICETransport()
		}
		for _, x := range pc.GetTransceivers() {
			if ice != nil {
				break
			}
			if s := x.Sender(); s != nil && s.Transport() != nil {
				ice = s.Transport().ICETransport()
			} else if rc := x.Receiver(); rc != nil && rc.Transport() != nil {
				ice = rc.Transport().ICETransport()
			}
		}
		if ice == nil {
			continue
		}
		pair, err := ice.GetSelectedCandidatePair()
		if err == nil && pair != nil {
			ports = append(ports, int(pair.Remote.Port))
		}
	}
	return ports
}

// requireOwnNode checks that every connection of a client selected its
// own node's media port.
func requireOwnNode(t *testing.T, who string, r *lksdk.Room, n *matrixNode) {
	t.Helper()
	var ports []int
	eventually(t, 20*time.Second, who+" has selected ICE pairs", func() bool {
		ports = selectedRemotePorts(t, r)
		return len(ports) > 0
	})
	for _, p := range ports {
		require.Equal(t, n.UDPPort, p, "%s's media goes to its own node only", who)
	}
}

// TestFederationRedirectSDK: two agencies keep their own token service
// URLs. Alice of A and Bob of B each get their own transport's token from
// their own node and publish there. Then, as Element Call's compatibility
// mode does for another member's transport, each asks the other agency's
// token service: that node forwards the request to the asker's own node
// over Matrix (bot to bot), which answers with its own SFU's URL and a
// token for its mirror room of the other transport; the asker connects
// there (subscribe-only) and gets the other's audio and video, under the
// other's identity. Every client's websocket and media go to its own node
// only, and each node holds one trunk.
func TestFederationRedirectSDK(t *testing.T) {
	f := startAgencies(t, true)
	tokA := f.joinCall(t, f.a, f.alice)
	tokB := f.joinCall(t, f.b, f.bob)
	require.Equal(t, f.a.WSURL, tokA.URL)
	require.Equal(t, f.b.WSURL, tokB.URL)
	mediaRoom := matrix.RoomAlias(f.roomID, matrix.LegacySlotID)
	require.Equal(t, mediaRoom, jwtRoom(t, tokA.JWT))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	aliceID, bobID := f.alice.ID+":"+f.alice.DeviceID, f.bob.ID+":"+f.bob.DeviceID
	ca := connectClientWithToken(t, ctx, tokA.URL, tokA.JWT, aliceID)
	cb := connectClientWithToken(t, ctx, tokB.URL, tokB.JWT, bobID)
	ca.publish(t, ctx, &wg)
	cb.publish(t, ctx, &wg)

	// Alice asks B's token service for B's transport, with an OpenID token
	// of her own homeserver; B forwards, A answers.
	var viaB, viaA tokenAnswer
	eventually(t, 60*time.Second, "B's token service answers Alice with A's answer", func() bool {
		viaB = f.b.sfuGet(t, f.alice, f.a.hs.OpenIDToken(t, f.alice), f.roomID)
		return viaB.Status == http.StatusOK
	})
	require.Equal(t, f.a.WSURL, viaB.URL, "Alice is sent to her own node")
	require.Equal(t, federation.MirrorRoom(mediaRoom, f.serviceB), jwtRoom(t, viaB.JWT), "into M(A<-B)")
	eventually(t, 60*time.Second, "A's token service answers Bob with B's answer", func() bool {
		viaA = f.a.sfuGet(t, f.bob, f.b.hs.OpenIDToken(t, f.bob), f.roomID)
		return viaA.Status == http.StatusOK
	})
	require.Equal(t, f.b.WSURL, viaA.URL, "Bob is sent to his own node")
	require.Equal(t, federation.MirrorRoom(mediaRoom, f.serviceA), jwtRoom(t, viaA.JWT), "into M(B<-A)")
	requireLog(t, f.b.Node, "token request answered by the user's own node")
	requireLog(t, f.a.Node, "forwarded token request answered")

	// The subscribe-only connections for the other transport.
	ca2 := connectClientWithToken(t, ctx, viaB.URL, viaB.JWT, aliceID)
	cb2 := connectClientWithToken(t, ctx, viaA.URL, viaA.JWT, bobID)
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		eventually(t, 60*time.Second, "Alice, on A, gets Bob's "+k.String()+" on the connection for B's transport",
			func() bool { return ca2.count(key(bobID, k)) > 20 })
		eventually(t, 60*time.Second, "Bob, on B, gets Alice's "+k.String()+" on the connection for A's transport",
			func() bool { return cb2.count(key(aliceID, k)) > 20 })
	}
	// Each transport's connection holds that transport's people only.
	require.Zero(t, ca.count(key(bobID, webrtc.RTPCodecTypeVideo)), "R(A) does not hold Bob")
	require.Zero(t, cb.count(key(aliceID, webrtc.RTPCodecTypeVideo)), "R(B) does not hold Alice")

	requireOwnNode(t, "Alice", ca.room, f.a)
	requireOwnNode(t, "Alice (B's transport)", ca2.room, f.a)
	requireOwnNode(t, "Bob", cb.room, f.b)
	requireOwnNode(t, "Bob (A's transport)", cb2.room, f.b)

	ta, tb := trunks(t, f.dbgA), trunks(t, f.dbgB)
	require.Len(t, ta, 1, "one trunk on A")
	require.Len(t, tb, 1, "one trunk on B")
	require.True(t, ta[0].Up && tb[0].Up)
	require.Equal(t, 1, ta[0].Remotes, "A holds Bob only (in M(A<-B)); Alice's subscribe-only connection was not copied")
	require.Equal(t, 1, tb[0].Remotes, "B holds Alice only (in M(B<-A))")

	// The audit logs: A forwarded Bob's request to B and answered Alice's
	// that B forwarded; B's records of the same requests carry the same
	// req_id. Sizes only: never a body.
	find := func(recs []auditRecord, role string) *auditRecord {
		for i := range recs {
			if recs[i].Role == role && recs[i].Outcome == "ok: status 200" {
				return &recs[i]
			}
		}
		return nil
	}
	var recsA, recsB []auditRecord
	eventually(t, 10*time.Second, "both nodes recorded both forwarded token requests", func() bool {
		recsA, recsB = auditRecords(t, f.a.ConfigPath, "--kind", "token"), auditRecords(t, f.b.ConfigPath, "--kind", "token")
		return find(recsA, "forwarded") != nil && find(recsA, "answered") != nil &&
			find(recsB, "forwarded") != nil && find(recsB, "answered") != nil
	})
	for _, c := range []struct {
		recs  []auditRecord
		other []auditRecord
		peer  string
	}{{recsA, recsB, f.b.hs.ServerName}, {recsB, recsA, f.a.hs.ServerName}} {
		fw := find(c.recs, "forwarded")
		require.Equal(t, c.peer, fw.Peer)
		require.Equal(t, f.roomID, fw.RoomID)
		require.Equal(t, mediaRoom, fw.MediaRoom)
		require.NotNil(t, fw.End)
		require.Positive(t, fw.BytesSent, "the request's size")
		require.Positive(t, fw.BytesReceived, "the answer's size")
		require.True(t, slices.ContainsFunc(c.other, func(r auditRecord) bool { return r.Role == "answered" && r.CallID == fw.CallID }),
			"the peer's record of the same request, by req_id %s", fw.CallID)
	}
}

// TestFederationRedirectHomeNodeDown: with A's node stopped, B's token
// service gets no answer to the request it forwards for Alice, serves her
// itself so that the call still works, and logs it.
func TestFederationRedirectHomeNodeDown(t *testing.T) {
	f := startAgencies(t, true)
	f.joinCall(t, f.a, f.alice)
	f.joinCall(t, f.b, f.bob)
	require.NoError(t, f.a.cmd.Process.Signal(syscall.SIGTERM))
	eventually(t, 20*time.Second, "A's node stopped", func() bool {
		resp, err := http.Get(f.a.HTTPURL + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})

	start := time.Now()
	ans := f.b.sfuGet(t, f.alice, f.a.hs.OpenIDToken(t, f.alice), f.roomID)
	took := time.Since(start)
	require.Equal(t, http.StatusOK, ans.Status, "%s: %s", ans.ErrCode, ans.Error)
	require.Equal(t, f.b.WSURL, ans.URL, "B serves Alice itself")
	require.Equal(t, matrix.RoomAlias(f.roomID, matrix.LegacySlotID), jwtRoom(t, ans.JWT))
	require.Less(t, took, 15*time.Second)
	t.Logf("B served Alice itself %v after she asked", took.Round(10*time.Millisecond))
	requireLog(t, f.b.Node, "the user's own node did not answer the forwarded token request: served by this node")
	require.Contains(t, f.b.Logs(), "user_id="+f.alice.ID)
}

// requireLog waits for a line of the node's log: the node writes it
// before answering, but the test reads the log through a pipe.
func requireLog(t *testing.T, n *Node, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.True(t, n.WaitLog(ctx, s), "the node logs %q", s)
}
