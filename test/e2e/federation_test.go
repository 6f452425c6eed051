package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/dendritetest"
)

// federatedAgencies are two agencies, each with its Dendrite and its node,
// the two homeservers federating and each node on the other's peer list.
type federatedAgencies struct {
	a, b   *matrixNode
	dbgA   string // node A's debug listener
	dbgB   string
	roomID string
	alice  dendritetest.User // of A
	bob    dendritetest.User // of B
	// serviceA and serviceB are the transports (livekit_service_url) the
	// agencies' members advertise: one shared URL, or each its own.
	serviceA, serviceB string
}

// sharedServiceURL is the one transport of agencies sharing it.
const sharedServiceURL = "https://rtc.federation.test"

// startFederatedAgencies starts both agencies and makes a public room of
// A's that Bob of B joins over federation; call memberships may be sent
// by anyone in it. The agencies share one transport.
func startFederatedAgencies(t *testing.T) *federatedAgencies {
	t.Helper()
	return startAgenciesAt(t, false, "")
}

// startFederatedAgenciesLogging is startFederatedAgencies with the nodes
// at the given log level ("debug" if empty).
func startFederatedAgenciesLogging(t *testing.T, logLevel string) *federatedAgencies {
	t.Helper()
	return startAgenciesAt(t, false, logLevel)
}

// startAgencies is startFederatedAgencies; with ownURLs each agency keeps
// its own token service URL (matrix.token_service_url) and names the
// other's in its peer entry (the redirect).
func startAgencies(t *testing.T, ownURLs bool) *federatedAgencies {
	t.Helper()
	return startAgenciesAt(t, ownURLs, "")
}

// startAgenciesAt is startAgencies with the nodes at the given log level.
func startAgenciesAt(t *testing.T, ownURLs bool, logLevel string) *federatedAgencies {
	t.Helper()
	hsA, hsB := dendritetest.New(t), dendritetest.New(t)
	dbgA, dbgB := fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")), fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp"))
	f := &federatedAgencies{dbgA: dbgA, dbgB: dbgB, serviceA: sharedServiceURL, serviceB: sharedServiceURL}
	extraA, extraB := `allow = ["*"]`, `allow = ["*"]`
	peerURLOfA, peerURLOfB := "", ""
	if ownURLs {
		f.serviceA, f.serviceB = "https://rtc-a.federation.test", "https://rtc-b.federation.test"
		extraA += fmt.Sprintf("\ntoken_service_url = %q", f.serviceA)
		extraB += fmt.Sprintf("\ntoken_service_url = %q", f.serviceB)
		peerURLOfA, peerURLOfB = fmt.Sprintf("url = %q\n", f.serviceA), fmt.Sprintf("url = %q\n", f.serviceB)
	}
	fed := func(dbg, peer, peerURL string) string {
		return fmt.Sprintf("\n[debug]\npprof_listen = %q\n\n[federation.peers.%q]\nbot = %q\n%s", dbg, peer, "@entente:"+peer, peerURL)
	}
	f.a = startMatrixNode(t, matrixNodeOptions{homeserver: hsA, extraMatrix: extraA, extraTOML: fed(dbgA, hsB.ServerName, peerURLOfB), logLevel: logLevel})
	f.b = startMatrixNode(t, matrixNodeOptions{homeserver: hsB, extraMatrix: extraB, extraTOML: fed(dbgB, hsA.ServerName, peerURLOfA), logLevel: logLevel})
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
// does on joining, advertising its agency's transport.
func (f *federatedAgencies) joinCall(t *testing.T, m *matrixNode, u dendritetest.User) tokenAnswer {
	t.Helper()
	var tok tokenAnswer
	require.Eventually(t, func() bool {
		tok = m.sfuGet(t, u, m.hs.OpenIDToken(t, u), f.roomID)
		return tok.Status == http.StatusOK
	}, 60*time.Second, 500*time.Millisecond, "%s gets a token from its own node", u.ID)
	service := f.serviceA
	if m == f.b {
		service = f.serviceB
	}
	m.hs.SendState(t, u, f.roomID, "org.matrix.msc3401.call.member", "_"+u.ID+"_"+u.DeviceID, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": u.DeviceID, "expires": 3600000,
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": service, "livekit_alias": f.roomID}},
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

// debugJSON reads one of a node's debug pages into out.
func debugJSON(t *testing.T, debugAddr, path string, out any) {
	t.Helper()
	resp, err := http.Get("http://" + debugAddr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
}

// trunks reads a node's trunks from its debug listener.
func trunks(t *testing.T, debugAddr string) []trunkInfo {
	t.Helper()
	var out struct {
		Trunks []trunkInfo `json:"trunks"`
	}
	debugJSON(t, debugAddr, "/debug/federation", &out)
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

	// Data packets cross with their sender's identity: a broadcast, and
	// one addressed to the other agency's person.
	require.NoError(t, ca.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hello from A")), lksdk.WithDataPublishReliable(true)))
	require.NoError(t, cb.room.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("for alice")),
		lksdk.WithDataPublishReliable(true), lksdk.WithDataPublishDestination([]string{aliceID})))
	hasData := func(c *sdkClient, want string) func() bool {
		return func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return slices.Contains(c.data, want)
		}
	}
	eventually(t, 20*time.Second, "Bob gets Alice's broadcast", hasData(cb, aliceID+":hello from A"))
	eventually(t, 20*time.Second, "Alice gets Bob's packet for her", hasData(ca, bobID+":for alice"))

	ta, tb := trunks(t, f.dbgA), trunks(t, f.dbgB)
	require.Len(t, ta, 1, "one trunk on A")
	require.Len(t, tb, 1, "one trunk on B")
	require.True(t, ta[0].Up && tb[0].Up)
	require.Equal(t, f.b.hs.ServerName, ta[0].Peer)
	require.NotEqual(t, ta[0].Offerer, tb[0].Offerer, "exactly one node offered")
	require.Equal(t, 1, ta[0].Remotes, "A holds Bob only")
	require.Equal(t, 1, tb[0].Remotes, "B holds Alice only")

	// Each client's only connection is its own node: each node's
	// connection list has its own user as a client with a media address,
	// the other agency's user only as a remote participant (no
	// connection: its media comes on the trunk), and the trunk's export
	// participant connected to the other node's media port.
	for _, side := range []struct {
		dbg, own, other string
		otherUDP        int
	}{{f.dbgA, aliceID, bobID, f.b.UDPPort}, {f.dbgB, bobID, aliceID, f.a.UDPPort}} {
		conns := connections(t, side.dbg)
		t.Logf("connections of %s: %+v", side.dbg, conns)
		var own, other, trunk int
		for _, c := range conns {
			switch {
			case c.Identity == side.own:
				own++
				require.Empty(t, c.Origin)
				require.NotEmpty(t, c.Remote, "the own client's media address is known")
			case c.Identity == side.other:
				other++
				require.NotEmpty(t, c.Origin, "the other agency's user is here only as a remote participant")
				require.Empty(t, c.Remote, "and has no connection to this node")
			case c.Hidden && c.Kind == 8:
				trunk++
				require.Equal(t, fmt.Sprintf("127.0.0.1:%d", side.otherUDP), c.Remote, "the trunk goes to the other node's media port")
			}
		}
		require.Equal(t, []int{1, 1, 1}, []int{own, other, trunk}, "own client, remote participant, trunk")
	}

	// The audit log, read by `entente audit` beside the running node: A's
	// record of the trunk, open, with the bytes each way that the node
	// writes every 15 s while the trunk runs.
	role := "answerer"
	if ta[0].Offerer {
		role = "offerer"
	}
	var rec auditRecord
	eventually(t, 40*time.Second, "A's audit log has the trunk with bytes both ways", func() bool {
		recs := auditRecords(t, f.a.ConfigPath, "--kind", "trunk")
		if len(recs) != 1 {
			return false
		}
		rec = recs[0]
		return rec.BytesSent > 0 && rec.BytesReceived > 0
	})
	require.Equal(t, f.b.hs.ServerName, rec.Peer)
	require.Equal(t, f.roomID, rec.RoomID)
	require.Equal(t, ta[0].MediaRoom, rec.MediaRoom)
	require.Equal(t, role, rec.Role)
	require.NotEmpty(t, rec.CallID)
	require.Nil(t, rec.End, "open while the trunk runs")
	// Alice's camera and microphone crossed, and Bob's came back.
	require.Greater(t, rec.BytesSent, uint64(20_000))
	require.Greater(t, rec.BytesReceived, uint64(20_000))
}

// auditRecord is one line of `entente audit --json`.
type auditRecord struct {
	Kind          string     `json:"kind"`
	Role          string     `json:"role"`
	Peer          string     `json:"peer"`
	RoomID        string     `json:"room_id"`
	MediaRoom     string     `json:"media_room"`
	CallID        string     `json:"call_id"`
	End           *time.Time `json:"end"`
	BytesSent     uint64     `json:"bytes_sent"`
	BytesReceived uint64     `json:"bytes_received"`
	Outcome       string     `json:"outcome"`
}

// auditRecords runs the built binary's `audit --json` on a node's
// configuration.
func auditRecords(t *testing.T, configPath string, args ...string) []auditRecord {
	t.Helper()
	out, err := exec.Command(ententeBinary(t), append([]string{"audit", "--config", configPath, "--json"}, args...)...).Output()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		t.Fatalf("entente audit: %v\n%s", err, exitErr.Stderr)
	}
	require.NoError(t, err)
	var recs []auditRecord
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var r auditRecord
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		recs = append(recs, r)
	}
	return recs
}

type connection struct {
	Room     string `json:"room"`
	Identity string `json:"identity"`
	Kind     int    `json:"kind"`
	Hidden   bool   `json:"hidden"`
	Origin   string `json:"origin"`
	Remote   string `json:"remote"`
}

// connections reads a node's connection list from its debug listener.
func connections(t *testing.T, debugAddr string) []connection {
	t.Helper()
	var out struct {
		Connections []connection `json:"connections"`
	}
	debugJSON(t, debugAddr, "/debug/connections", &out)
	return out.Connections
}

// TestFederationPeerOffTheList: agency C's node lists A as a peer (with
// A's own token service URL), but A does not list C. Alice of A and Carol
// of C are in one call; C's bot sorts first, so C offers a trunk. A
// refuses it, says so in its log, and answers nothing; no trunk exists on
// A and none comes up on C (whose offer waits for an answer until it
// times out). A never forwards a token request of Carol's to C; a token
// request C forwards for Alice is refused and logged by A, and C serves
// Alice itself.
func TestFederationPeerOffTheList(t *testing.T) {
	// C's bot must sort first: of two homeservers, C is the one whose
	// server name (its port) sorts lower. (Drawing C again until it sorts
	// below A failed when A drew a port at the bottom of the range.)
	hsA, hsC := dendritetest.New(t), dendritetest.New(t)
	if "@entente:"+hsC.ServerName > "@entente:"+hsA.ServerName {
		hsA, hsC = hsC, hsA
	}
	dbgA, dbgC := fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")), fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp"))
	const serviceA = "https://rtc-a.federation.test"
	a := startMatrixNode(t, matrixNodeOptions{homeserver: hsA, extraMatrix: `allow = ["*"]` + "\ntoken_service_url = \"" + serviceA + "\"",
		extraTOML: fmt.Sprintf("\n[debug]\npprof_listen = %q\n\n[federation]\n", dbgA)})
	c := startMatrixNode(t, matrixNodeOptions{homeserver: hsC, extraMatrix: `allow = ["*"]`,
		extraTOML: fmt.Sprintf("\n[debug]\npprof_listen = %q\n\n[federation.peers.%q]\nbot = %q\nurl = %q\n", dbgC, hsA.ServerName,
			"@entente:"+hsA.ServerName, serviceA)})
	f := &federatedAgencies{a: a, b: c, dbgA: dbgA, dbgB: dbgC, serviceA: sharedServiceURL, serviceB: sharedServiceURL}
	f.alice, f.bob = a.hs.Register(t, "alice"), c.hs.Register(t, "carol")
	f.roomID = a.hs.CreateRoom(t, f.alice, map[string]any{
		"preset": "public_chat", "name": "Off the list",
		"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
	})
	c.hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(f.roomID)+"?server_name="+url.QueryEscape(hsA.ServerName),
		f.bob.Token, map[string]any{}, nil)
	f.joinCall(t, a, f.alice)
	f.joinCall(t, c, f.bob)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.True(t, a.WaitLog(ctx, "not on the peer list refused"), "A logs the refusal of C's offer")
	require.Contains(t, a.Logs(), "@entente:"+hsC.ServerName, "the refusal names C's bot")
	time.Sleep(2 * time.Second)
	require.Empty(t, trunks(t, dbgA), "no trunk on A")
	for _, tr := range trunks(t, dbgC) {
		require.False(t, tr.Up, "C's offer is never answered: its trunk never comes up")
	}
	require.NotContains(t, a.Logs(), "federation trunk offered", "A never offers to a server off its list")

	// Carol asks A's token service: A serves her itself (its allow policy
	// lets every server in), never forwarding to C.
	ans := a.sfuGet(t, f.bob, c.hs.OpenIDToken(t, f.bob), f.roomID)
	require.Equal(t, http.StatusOK, ans.Status, "%s: %s", ans.ErrCode, ans.Error)
	require.Equal(t, a.WSURL, ans.URL)
	require.NotContains(t, a.Logs(), "answered by the user's own node")
	require.NotContains(t, a.Logs(), "not answered by the user's own node")
	require.NotContains(t, c.Logs(), "forwarded token request")

	// C forwards Alice's request to A, which refuses it, logs it, and
	// answers nothing: C serves her itself.
	ans = c.sfuGet(t, f.alice, a.hs.OpenIDToken(t, f.alice), f.roomID)
	require.Equal(t, http.StatusOK, ans.Status, "%s: %s", ans.ErrCode, ans.Error)
	require.Equal(t, c.WSURL, ans.URL, "C serves Alice itself")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	require.True(t, a.WaitLog(ctx2, "type=org.entente.token.request"), "A logs the refused token request")
	requireLog(t, c.Node, "the user's own node did not answer the forwarded token request")
	require.NotContains(t, a.Logs(), "forwarded token request answered")
}

// layerSubscriber is a Go SDK client on node B that records the layer of
// every camera packet it receives (simLayers' sizes).
type layerSubscriber struct {
	room   *lksdk.Room
	mu     sync.Mutex
	layers map[string]int // layer -> packets
	total  int
	pub    *lksdk.RemoteTrackPublication
	muted  bool
	seen   map[string]bool // identities present
	reader sync.WaitGroup
}

func connectLayerSubscriber(t *testing.T, wsURL, jwt string) *layerSubscriber {
	t.Helper()
	s := &layerSubscriber{layers: map[string]int{}, seen: map[string]bool{}}
	var err error
	s.room, err = lksdk.ConnectToRoomWithToken(wsURL, jwt, &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(tr *webrtc.TrackRemote, p *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
				if tr.Kind() != webrtc.RTPCodecTypeVideo {
					return
				}
				s.mu.Lock()
				s.pub = p
				s.mu.Unlock()
				readTrack(&s.reader, tr, func(pkt *rtp.Packet) {
					s.mu.Lock()
					s.layers[layerOf(len(pkt.Payload))]++
					s.total++
					s.mu.Unlock()
				})
			},
			OnTrackMuted: func(pub lksdk.TrackPublication, _ lksdk.Participant) {
				if pub.Kind() == lksdk.TrackKindVideo {
					s.mu.Lock()
					s.muted = true
					s.mu.Unlock()
				}
			},
		},
		OnParticipantConnected:    func(rp *lksdk.RemoteParticipant) { s.mu.Lock(); s.seen[rp.Identity()] = true; s.mu.Unlock() },
		OnParticipantDisconnected: func(rp *lksdk.RemoteParticipant) { s.mu.Lock(); s.seen[rp.Identity()] = false; s.mu.Unlock() },
	}, lksdk.WithAutoSubscribe(true))
	require.NoError(t, err)
	for _, rp := range s.room.GetRemoteParticipants() {
		s.seen[rp.Identity()] = true
	}
	t.Cleanup(func() { s.room.Disconnect(); s.reader.Wait() })
	return s
}

// counts returns a copy of the per-layer counts and the total.
func (s *layerSubscriber) counts() (map[string]int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.layers))
	for k, v := range s.layers {
		out[k] = v
	}
	return out, s.total
}

// receivedVideo is the packets node B's trunk received of the peer's
// video track, and the layer it asked for.
func receivedVideo(t *testing.T, debugAddr string) (uint64, int) {
	t.Helper()
	var out struct {
		Trunks []struct {
			Received []struct {
				Kind    string `json:"kind"`
				Want    int    `json:"want"`
				Packets uint64 `json:"packets"`
			} `json:"received"`
		} `json:"trunks"`
	}
	debugJSON(t, debugAddr, "/debug/federation", &out)
	for _, tr := range out.Trunks {
		for _, r := range tr.Received {
			if r.Kind == "video" {
				return r.Packets, r.Want
			}
		}
	}
	return 0, -1
}

// TestFederationFanout: Alice on A publishes a three-layer camera; five
// subscribers on B watch it at the low layer. The camera crosses the
// trunk once (the trunk's count of packets matches one subscriber's, not
// five), only the low layer crosses; one subscriber asking for the high
// layer makes it cross beside the low one, which the four others keep
// getting, and it stops crossing when that subscriber goes back. A mute on A shows on B, a newcomer on A appears on B, and Alice
// leaving disappears from B.
func TestFederationFanout(t *testing.T) {
	f := startFederatedAgencies(t)
	tokA := f.joinCall(t, f.a, f.alice)
	f.joinCall(t, f.b, f.bob) // the call now has members of both servers
	mediaRoom := matrix.RoomAlias(f.roomID, matrix.LegacySlotID)

	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })
	aliceID := f.alice.ID + ":" + f.alice.DeviceID
	alice, err := lksdk.ConnectToRoomWithToken(tokA.URL, tokA.JWT, &lksdk.RoomCallback{})
	require.NoError(t, err)
	t.Cleanup(alice.Disconnect)
	publishSimulcast(t, ctx, alice, &gens)

	var subs []*layerSubscriber
	for i := range 5 {
		id := fmt.Sprintf("@sub%d:%s:DEV", i, f.b.hs.ServerName)
		subs = append(subs, connectLayerSubscriber(t, f.b.WSURL, f.b.Token(t, mediaRoom, id)))
	}
	for i, s := range subs {
		eventually(t, 60*time.Second, fmt.Sprintf("subscriber %d on B gets Alice's camera", i), func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.pub != nil && s.total > 0
		})
		s.mu.Lock()
		require.NoError(t, s.pub.SetVideoQuality(livekit.VideoQuality_LOW))
		s.mu.Unlock()
	}
	settle := func() { time.Sleep(3 * time.Second) }
	window := func() (crossed uint64, want int, got []map[string]int, totals []int) {
		c0, _ := receivedVideo(t, f.dbgB)
		var t0 []int
		var l0 []map[string]int
		for _, s := range subs {
			l, n := s.counts()
			l0, t0 = append(l0, l), append(t0, n)
		}
		time.Sleep(3 * time.Second)
		c1, w := receivedVideo(t, f.dbgB)
		for i, s := range subs {
			l, n := s.counts()
			d := map[string]int{}
			for k, v := range l {
				if v-l0[i][k] > 0 {
					d[k] = v - l0[i][k]
				}
			}
			got, totals = append(got, d), append(totals, n-t0[i])
		}
		return c1 - c0, w, got, totals
	}

	settle()
	crossed, want, got, totals := window()
	t.Logf("low for all: the trunk carried %d camera packets in 3 s (asked for layer %d); B's subscribers got %v", crossed, want, totals)
	require.Equal(t, 0b001, want, "B asks for the low layer only")
	for i, g := range got {
		require.Equal(t, []string{"q"}, keys(g), "subscriber %d gets the low layer only", i)
		require.InDelta(t, float64(crossed), float64(totals[i]), float64(crossed)/5+5,
			"subscriber %d: what crossed once is what each subscriber got", i)
	}

	s0 := subs[0]
	s0.mu.Lock()
	require.NoError(t, s0.pub.SetVideoQuality(livekit.VideoQuality_HIGH))
	s0.mu.Unlock()
	settle()
	crossed, want, got, _ = window()
	t.Logf("one subscriber on high: %d packets crossed in 3 s (layers %03b), subscribers got %v", crossed, want, got)
	require.Equal(t, 0b101, want, "B asks for the low and the high layer, not the medium one nobody watches")
	require.Equal(t, []string{"f"}, keys(got[0]), "the high layer crosses once someone on B wants it")
	for i := 1; i < len(got); i++ {
		require.Equal(t, []string{"q"}, keys(got[i]), "subscriber %d still gets the low layer it asked for", i)
	}

	s0.mu.Lock()
	require.NoError(t, s0.pub.SetVideoQuality(livekit.VideoQuality_LOW))
	s0.mu.Unlock()
	settle()
	_, want, got, _ = window()
	require.Equal(t, 0b001, want)
	for i, g := range got {
		require.Equal(t, []string{"q"}, keys(g), "subscriber %d: the high layer stopped crossing", i)
	}

	// Mute, a newcomer, a leave.
	for _, pub := range alice.LocalParticipant.TrackPublications() {
		if pub.Kind() == lksdk.TrackKindVideo {
			pub.(*lksdk.LocalTrackPublication).SetMuted(true)
		}
	}
	eventually(t, 20*time.Second, "B sees Alice's camera muted", func() bool {
		subs[1].mu.Lock()
		defer subs[1].mu.Unlock()
		return subs[1].muted
	})
	carolID := "@carol:" + f.a.hs.ServerName + ":DEV"
	carol, err := lksdk.ConnectToRoomWithToken(f.a.WSURL, f.a.Token(t, mediaRoom, carolID), &lksdk.RoomCallback{})
	require.NoError(t, err)
	t.Cleanup(carol.Disconnect)
	eventually(t, 20*time.Second, "a newcomer on A appears on B", func() bool {
		subs[2].mu.Lock()
		defer subs[2].mu.Unlock()
		return subs[2].seen[carolID]
	})
	alice.Disconnect()
	eventually(t, 20*time.Second, "Alice's leave reaches B", func() bool {
		subs[3].mu.Lock()
		defer subs[3].mu.Unlock()
		present, known := subs[3].seen[aliceID]
		return known && !present
	})
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
