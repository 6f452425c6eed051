package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/dendritetest"
)

// Browsers of two federating agencies on the shared transport
// (/work/shared/FEDERATION.md, "A shared transport"): both agencies
// advertise one token service, http://rtc.federation.test:P, and each
// agency's DNS resolves that name to its own node. Here each agency's
// "DNS" is its own Chromium process, started with
// --host-resolver-rules mapping the name to a loopback address of the
// agency's own (127.0.0.2 for A, 127.0.0.3 for B), where a reverse proxy
// on the same port P stands for the agency's node.

// sharedRTCHost is the token service's name that both agencies advertise.
const sharedRTCHost = "rtc.federation.test"

// agencyFront is one agency's reverse proxy for the shared name: its
// loopback address and the requests it forwarded to the agency's node.
type agencyFront struct {
	ip string
	ln net.Listener

	mu   sync.Mutex
	seen []string // "POST /sfu/get"
}

// resolverArgs are the Chromium flags that make the shared name resolve
// to this agency's front.
func (f *agencyFront) resolverArgs() []string {
	return []string{"--host-resolver-rules=MAP " + sharedRTCHost + " " + f.ip}
}

// requests returns the requests the front forwarded so far.
func (f *agencyFront) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.seen)
}

// serve forwards everything the front receives to nodeURL.
func (f *agencyFront) serve(t *testing.T, nodeURL string) {
	t.Helper()
	u, err := url.Parse(nodeURL)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(f.ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// sharedFronts listens on 127.0.0.2:P and 127.0.0.3:P for one port P
// free on both (the shared URL names one port).
func sharedFronts(t *testing.T) (a, b *agencyFront, port int) {
	t.Helper()
	for range 50 {
		la, err := net.Listen("tcp", "127.0.0.2:0")
		require.NoError(t, err, "127.0.0.2 on the loopback interface")
		port = la.Addr().(*net.TCPAddr).Port
		lb, err := net.Listen("tcp", fmt.Sprintf("127.0.0.3:%d", port))
		if err != nil {
			_ = la.Close()
			continue
		}
		t.Cleanup(func() { _ = la.Close(); _ = lb.Close() })
		return &agencyFront{ip: "127.0.0.2", ln: la}, &agencyFront{ip: "127.0.0.3", ln: lb}, port
	}
	t.Fatal("no port free on both 127.0.0.2 and 127.0.0.3")
	return nil, nil, 0
}

// sharedAgencies are two federating agencies (a Dendrite and a node
// each, each node on the other's peer list) that both advertise the
// shared token service, each agency's name resolving to its own node.
type sharedAgencies struct {
	a, b           *matrixNode
	dbgA, dbgB     string
	frontA, frontB *agencyFront
	service        string // http://rtc.federation.test:P
}

func startSharedTransportAgencies(t *testing.T) *sharedAgencies {
	t.Helper()
	frontA, frontB, port := sharedFronts(t)
	s := &sharedAgencies{
		frontA: frontA, frontB: frontB, service: fmt.Sprintf("http://%s:%d", sharedRTCHost, port),
		dbgA: fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")), dbgB: fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")),
	}
	hsA, hsB := dendritetest.New(t), dendritetest.New(t)
	fed := func(dbg, peer string) string {
		return fmt.Sprintf("\n[debug]\npprof_listen = %q\n\n[federation.peers.%q]\nbot = %q\n", dbg, peer, "@entente:"+peer)
	}
	// token_service_url: what rtc/transports advertises, the same for both.
	matrixCfg := fmt.Sprintf("allow = [\"*\"]\ntoken_service_url = %q", s.service)
	s.a = startMatrixNode(t, matrixNodeOptions{homeserver: hsA, extraMatrix: matrixCfg, extraTOML: fed(s.dbgA, hsB.ServerName)})
	s.b = startMatrixNode(t, matrixNodeOptions{homeserver: hsB, extraMatrix: matrixCfg, extraTOML: fed(s.dbgB, hsA.ServerName)})
	frontA.serve(t, s.a.HTTPURL)
	frontB.serve(t, s.b.HTTPURL)
	return s
}

// trunkWatch polls both nodes' trunks while clients run (they leave
// when the browsers close, and the trunk's remote participants with
// them): the most trunks each node had at once, and the most remote
// participants a trunk of each held while up.
type trunkWatch struct {
	stop chan struct{}
	done chan struct{}

	maxA, maxB         int
	remotesA, remotesB int
	peerA, peerB       string
	// When (Unix ms) each node's trunk was first listed, first up, and
	// first held its most remote participants.
	seenA, seenB, upA, upB, fullA, fullB int64
}

func (s *sharedAgencies) watchTrunks(t *testing.T) *trunkWatch {
	t.Helper()
	w := &trunkWatch{stop: make(chan struct{}), done: make(chan struct{})}
	read := func(dbg string) []trunkInfo {
		resp, err := http.Get("http://" + dbg + "/debug/federation")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var out struct {
			Trunks []trunkInfo `json:"trunks"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out.Trunks
	}
	note := func(ts []trunkInfo, most, remotes *int, peer *string, seen, up, full *int64) {
		now := time.Now().UnixMilli()
		*most = max(*most, len(ts))
		if len(ts) > 0 && *seen == 0 {
			*seen = now
		}
		for _, tr := range ts {
			if tr.Up {
				if *up == 0 {
					*up = now
				}
				if tr.Remotes > *remotes {
					*full = now
				}
				*remotes = max(*remotes, tr.Remotes)
				*peer = tr.Peer
			}
		}
	}
	go func() {
		defer close(w.done)
		for {
			note(read(s.dbgA), &w.maxA, &w.remotesA, &w.peerA, &w.seenA, &w.upA, &w.fullA)
			note(read(s.dbgB), &w.maxB, &w.remotesB, &w.peerB, &w.seenB, &w.upB, &w.fullB)
			select {
			case <-w.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

func (w *trunkWatch) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// requireOneTrunkEach checks what w saw: each node had one trunk at
// most, to the other, and it was up holding at most wantA (on A) and
// wantB (on B) remote participants.
func (s *sharedAgencies) requireOneTrunkEach(t *testing.T, w *trunkWatch, wantA, wantB int) {
	t.Helper()
	w.end()
	t.Logf("trunks: A had at most %d (to %s, up with %d remote participants), B at most %d (to %s, up with %d)",
		w.maxA, w.peerA, w.remotesA, w.maxB, w.peerB, w.remotesB)
	require.Equal(t, 1, w.maxA, "one trunk on A")
	require.Equal(t, 1, w.maxB, "one trunk on B")
	require.Equal(t, s.b.hs.ServerName, w.peerA)
	require.Equal(t, s.a.hs.ServerName, w.peerB)
	require.Equal(t, wantA, w.remotesA, "A's trunk held B's participants")
	require.Equal(t, wantB, w.remotesB, "B's trunk held A's participants")
}

func assertEventually(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// foreignConnections lists, of a client's websocket URLs and selected
// ICE pairs ("udp 127.0.0.1:P"), those that do not go to node own: its
// websockets must reach own's HTTP port, its media own's UDP port.
func foreignConnections(t *testing.T, own *Node, websockets, pairs []string) []string {
	t.Helper()
	node, err := url.Parse(own.HTTPURL)
	require.NoError(t, err)
	var foreign []string
	for _, w := range websockets {
		u, err := url.Parse(w)
		if err != nil || u.Host != node.Host {
			foreign = append(foreign, "websocket "+w)
		}
	}
	for _, p := range pairs {
		if p != "udp "+net.JoinHostPort("127.0.0.1", strconv.Itoa(own.UDPPort)) {
			foreign = append(foreign, "ICE pair "+p)
		}
	}
	return foreign
}

// localParticipants are the identities that joined node n's rooms over
// its own signalling (not the ones the federation brought in, nor a
// trunk's export participant), read from its log.
func localParticipants(n *Node) []string {
	var out []string
	for _, line := range strings.Split(n.Logs(), "\n") {
		if !strings.Contains(line, "participant joined") || strings.Contains(line, "origin=") {
			continue
		}
		_, rest, ok := strings.Cut(line, "participant=")
		if !ok {
			continue
		}
		id, _, _ := strings.Cut(rest, " ")
		if !strings.HasPrefix(id, "entente-trunk:") && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// signalConnections counts the LiveKit signalling connections among a
// client's websocket URLs: livekit-client tries /rtc/v1 first, which the
// node does not serve, then /rtc.
func signalConnections(websockets []string) int {
	n := 0
	for _, w := range websockets {
		if u, err := url.Parse(w); err == nil && u.Path == "/rtc" {
			n++
		}
	}
	return n
}

// requireDecodesEveryone checks that every page decoded video from every
// other page's identity.
func requireDecodesEveryone(t *testing.T, pages map[string]pageResult) {
	t.Helper()
	for _, p := range pages {
		t.Logf("%s decoded frames by identity: %v; joined at %s ms, first frame from each at %v ms", p.Label, p.FramesBy, ms(p.T, "joined"), p.FirstFrameFrom)
		for _, o := range pages {
			if o.Label != p.Label {
				require.Positive(t, p.FramesBy[o.Identity], "%s decoded %s's video", p.Label, o.Label)
			}
		}
	}
}

// withoutQuery drops the query of each URL, for logs.
func withoutQuery(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i], _, _ = strings.Cut(u, "?")
	}
	return out
}

// lastField is what follows the last colon of s (a device ID).
func lastField(s string) string { return s[strings.LastIndex(s, ":")+1:] }

// logFederation logs node n's trunk and remote-participant events (a
// timeline of the federation's side of a call).
func logFederation(t *testing.T, name string, n *Node) {
	t.Helper()
	for _, line := range strings.Split(n.Logs(), "\n") {
		if strings.Contains(line, "component=federation") && (strings.Contains(line, " INF ") || strings.Contains(line, " WRN ")) {
			_, msg, _ := strings.Cut(line, "Z ")
			t.Logf("%s: %.260s", name, msg)
		}
	}
}

// errNotOwn is why a client's connection is counted as foreign.
var errNotOwn = errors.New("connection to another agency's node")

// callRoom makes a public room of A's, where anyone may send call
// memberships, with members of both agencies joined.
func (s *sharedAgencies) callRoom(t *testing.T, creator dendritetest.User, others ...dendritetest.User) string {
	t.Helper()
	room := s.a.hs.CreateRoom(t, creator, map[string]any{
		"preset": "public_chat", "name": "Inter-agency",
		"power_level_content_override": map[string]any{"events": map[string]any{"org.matrix.msc3401.call.member": 0}},
	})
	for _, u := range others {
		hs := s.a.hs
		if strings.HasSuffix(u.ID, ":"+s.b.hs.ServerName) {
			hs = s.b.hs
		}
		hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(s.a.hs.ServerName),
			u.Token, map[string]any{}, nil)
	}
	return room
}

// joinCall waits until u's own node m serves u in room (its bot joins
// the room) and sends u's call membership naming the shared transport,
// as Element Call does on joining.
func (s *sharedAgencies) joinCall(t *testing.T, m *matrixNode, u dendritetest.User, room string) {
	t.Helper()
	require.Eventually(t, func() bool {
		return m.sfuGet(t, u, m.hs.OpenIDToken(t, u), room).Status == http.StatusOK
	}, 60*time.Second, 500*time.Millisecond, "%s gets a token from its own node", u.ID)
	m.hs.SendState(t, u, room, "org.matrix.msc3401.call.member", "_"+u.ID+"_"+u.DeviceID, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": u.DeviceID, "expires": 3600000,
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": s.service, "livekit_alias": room}},
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
	})
}

// page is a livekit-client page for u of agency m, in that agency's
// Chromium process: it asks the shared token service for a token with an
// OpenID token of u's homeserver, and joins with the answer.
func (s *sharedAgencies) page(t *testing.T, label, client string, m *matrixNode, u dendritetest.User, room string, simulcast bool) browserPage {
	t.Helper()
	browser, front := "agency-a", s.frontA
	if m == s.b {
		browser, front = "agency-b", s.frontB
	}
	return browserPage{
		Label: label, Kind: "client", URL: client, Simulcast: simulcast, Browser: browser, Args: front.resolverArgs(),
		TokenService: s.service,
		TokenRequest: map[string]any{"room": room, "openid_token": m.hs.OpenIDToken(t, u), "device_id": u.DeviceID},
	}
}

// TestFederationBrowsersSharedTransport: Alice of agency A and Bob of
// agency B, in one Matrix room of A's, each in a livekit-client page of
// their agency's own Chromium process. Each page asks the shared token
// service (http://rtc.federation.test:P/sfu/get, Element Call's call
// with an OpenID token of the user's own homeserver), which resolves to
// its own agency's node, and joins with the answer; both publish camera
// and microphone (Alice with simulcast). Each must decode the other, and
// every websocket and selected ICE pair of each page must go to its own
// node only; the nodes link with exactly one trunk.
func TestFederationBrowsersSharedTransport(t *testing.T) {
	env := findBrowserEnv(t, false)
	s := startSharedTransportAgencies(t)
	alice, bob := s.a.hs.Register(t, "alice"), s.b.hs.Register(t, "bob")
	room := s.callRoom(t, alice, bob)
	s.joinCall(t, s.a, alice, room)
	s.joinCall(t, s.b, bob, room)
	aFrontBefore, bFrontBefore := len(s.frontA.requests()), len(s.frontB.requests())

	client := serveClientPage(t, env)
	watch := s.watchTrunks(t)
	res := runBrowser(t, env, []browserPage{
		s.page(t, "alice", client, s.a, alice, room, true),
		s.page(t, "bob", client, s.b, bob, room, false),
	})
	pages := checkPages(t, res)
	require.False(t, t.Failed(), "both pages decode each other")
	requireDecodesEveryone(t, pages)
	require.Equal(t, alice.ID+":"+alice.DeviceID, pages["alice"].Identity)
	require.Equal(t, bob.ID+":"+bob.DeviceID, pages["bob"].Identity)

	// Each page asked the shared name once (after its CORS preflight), and
	// reached its own node.
	require.Equal(t, []string{"OPTIONS /sfu/get", "POST /sfu/get"}, s.frontA.requests()[aFrontBefore:], "Alice's token call reached A")
	require.Equal(t, []string{"OPTIONS /sfu/get", "POST /sfu/get"}, s.frontB.requests()[bFrontBefore:], "Bob's token call reached B")
	foreign := 0
	for label, own := range map[string]*Node{"alice": s.a.Node, "bob": s.b.Node} {
		p := pages[label]
		t.Logf("%s: websockets %v, selected ICE pairs %v (own node: %s, udp %d)", label, withoutQuery(p.Websockets), p.SelectedPairs, own.HTTPURL, own.UDPPort)
		require.NotEmpty(t, p.Websockets, "%s opened a websocket", label)
		require.NotEmpty(t, p.SelectedPairs, "%s has selected ICE pairs", label)
		f := foreignConnections(t, own, p.Websockets, p.SelectedPairs)
		foreign += len(f)
		for _, c := range f {
			t.Errorf("%s: %s: %v", label, c, errNotOwn)
		}
	}
	t.Logf("foreign connections: %d", foreign)
	require.Zero(t, foreign)
	// The nodes' side: each node's own clients are its own agency's only.
	require.Equal(t, []string{alice.ID + ":" + alice.DeviceID}, localParticipants(s.a.Node), "A's clients")
	require.Equal(t, []string{bob.ID + ":" + bob.DeviceID}, localParticipants(s.b.Node), "B's clients")
	require.Equal(t, 1, signalConnections(pages["alice"].Websockets), "Alice: one signalling connection")
	require.Equal(t, 1, signalConnections(pages["bob"].Websockets), "Bob: one signalling connection")
	s.requireOneTrunkEach(t, watch, 1, 1)
}

// TestFederationElementCallSharedTransport: stock Element Call 0.26.1 for
// each agency, both agencies advertising the shared token service in
// rtc/transports, each person's Chromium resolving its name to their own
// agency's node. In a public encrypted room of A's (per-participant keys),
// opened by link on each agency's app, Alice and Carol of A and Bob of B
// must each decode video from and receive audio of both others, and every
// websocket, token call and selected ICE pair of each must go to their
// own node only; the nodes link with one trunk.
func TestFederationElementCallSharedTransport(t *testing.T) {
	env := findBrowserEnv(t, false)
	dist := elementCallApp(t, env, "0.26")
	s := startSharedTransportAgencies(t)
	appA := serveElementCall(t, dist, homeserverProxy(t, s.a.hs.ClientURL, s.a.HTTPURL), s.a.hs.ServerName, "")
	appB := serveElementCall(t, dist, homeserverProxy(t, s.b.hs.ClientURL, s.b.HTTPURL), s.b.hs.ServerName, "")
	organiser := s.a.hs.Register(t, "organiser")
	room := s.a.hs.CreateRoom(t, organiser, map[string]any{
		"preset": "public_chat", "name": "Inter-agency",
		"initial_state": []any{map[string]any{
			"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"},
		}},
	})
	q := "room/#/?" + url.Values{"roomId": {room}, "perParticipantE2EE": {"true"}}.Encode()
	watch := s.watchTrunks(t)
	res := runElementCall(t, env, appA, []elementCallPerson{
		{Label: "alice", Name: "Alice", URL: appA + q, Args: s.frontA.resolverArgs(), MinRemotes: 2},
		{Label: "bob", Name: "Bob", URL: appB + q, Args: s.frontB.resolverArgs(), MinRemotes: 2},
		{Label: "carol", Name: "Carol", URL: appA + q, Args: s.frontA.resolverArgs(), MinRemotes: 2},
	})
	for _, p := range res.People {
		t.Logf("%s: video from %d, audio from %d remote streams; websockets %v, token calls %v, selected ICE pairs %v",
			p.Label, p.VideoStreams, p.AudioStreams, p.Websockets, p.TokenURLs, p.SelectedPairs)
	}
	watch.end()
	logElementCallTimeline(t, res, watch)
	logFederation(t, "A", s.a.Node)
	logFederation(t, "B", s.b.Node)
	requireCall(t, res)

	own := map[string]*matrixNode{"alice": s.a, "bob": s.b, "carol": s.a}
	foreign := 0
	for _, p := range res.People {
		require.GreaterOrEqual(t, p.VideoStreams, 2, "%s decodes both others", p.Label)
		require.GreaterOrEqual(t, p.AudioStreams, 2, "%s hears both others", p.Label)
		var f []string
		for _, c := range p.TokenURLs {
			method, u, _ := strings.Cut(c, " ")
			if method != http.MethodPost || !strings.HasPrefix(u, s.service+"/") {
				f = append(f, "token call "+c)
			}
		}
		require.NotEmpty(t, p.TokenURLs, "%s asked for a token", p.Label)
		require.NotEmpty(t, p.Websockets, "%s opened a websocket", p.Label)
		require.NotEmpty(t, p.SelectedPairs, "%s has selected ICE pairs", p.Label)
		f = append(f, foreignConnections(t, own[p.Label].Node, p.Websockets, p.SelectedPairs)...)
		foreign += len(f)
		for _, c := range f {
			t.Errorf("%s: %s: %v", p.Label, c, errNotOwn)
		}
	}
	t.Logf("foreign connections: %d", foreign)
	require.Zero(t, foreign)
	// One transport for everyone: one signalling connection each, to the
	// own node. Element Call 0.26.1 sometimes also connects with the
	// identity of a /get_token answer it asked for first, as it does with
	// one agency alone (seen in CI): a second connection, to the same
	// node, counted above among the own node's.
	for _, p := range res.People {
		n := signalConnections(p.Websockets)
		t.Logf("%s: %d signalling connection(s)", p.Label, n)
		require.True(t, n == 1 || n == 2 && slices.ContainsFunc(p.TokenURLs, func(u string) bool { return strings.HasSuffix(u, "/get_token") }),
			"%s: one signalling connection (one transport for everyone), or two when it also used a /get_token answer: %v", p.Label, p.Websockets)
	}
	// The nodes' side: each node's clients are its own agency's people
	// (Element Call registers its own users: their IDs are read from the
	// nodes' logs).
	for _, x := range []struct {
		m    *matrixNode
		name string
		want int
	}{{s.a, "A", 2}, {s.b, "B", 1}} {
		var ids, hashed []string
		for _, id := range localParticipants(x.m.Node) {
			if strings.HasPrefix(id, "@") {
				ids = append(ids, id)
			} else {
				hashed = append(hashed, id) // a /get_token identity: no server in it
			}
		}
		t.Logf("%s's clients: %v, and by /get_token identity %v", x.name, ids, hashed)
		require.Len(t, ids, x.want, "%s's clients", x.name)
		for _, id := range ids {
			require.True(t, strings.HasSuffix(strings.TrimSuffix(id, ":"+lastField(id)), ":"+x.m.hs.ServerName),
				"%s's client %s is a user of %s", x.name, id, x.m.hs.ServerName)
		}
	}
	// The shared name reached each agency's own node only: the token
	// calls through A's front were Alice's and Carol's, through B's Bob's.
	for _, x := range []struct {
		front  *agencyFront
		people []string
	}{{s.frontA, []string{"alice", "carol"}}, {s.frontB, []string{"bob"}}} {
		var posts, calls int
		t.Logf("front %s forwarded %v", x.front.ip, x.front.requests())
		for _, r := range x.front.requests() {
			if r == "POST /sfu/get" || r == "POST /get_token" {
				posts++
			}
		}
		for _, p := range res.People {
			if slices.Contains(x.people, p.Label) {
				calls += len(p.TokenURLs)
			}
		}
		require.Equal(t, calls, posts, "the token calls of %v all reached their own node", x.people)
	}
	s.requireOneTrunkEach(t, watch, 1, 2)
}

// TestFederationBrowsersLeave: Alice and Carol of agency A, Bob of agency
// B, in livekit-client pages on the shared transport (as in
// TestFederationBrowsersSharedTransport). Once everyone decodes everyone,
// Carol hangs up: Bob, on the other node, must stop seeing her as Alice
// does, and B's trunk must have carried both of A's people.
func TestFederationBrowsersLeave(t *testing.T) {
	env := findBrowserEnv(t, false)
	s := startSharedTransportAgencies(t)
	alice, carol, bob := s.a.hs.Register(t, "alice"), s.a.hs.Register(t, "carol"), s.b.hs.Register(t, "bob")
	room := s.callRoom(t, alice, carol, bob)
	s.joinCall(t, s.a, alice, room)
	s.joinCall(t, s.a, carol, room)
	s.joinCall(t, s.b, bob, room)

	client := serveClientPage(t, env)
	watch := s.watchTrunks(t)
	res := runBrowserLeaving(t, env, []browserPage{
		s.page(t, "alice", client, s.a, alice, room, true),
		s.page(t, "carol", client, s.a, carol, room, false),
		s.page(t, "bob", client, s.b, bob, room, false),
	}, "carol")
	pages := checkPages(t, res)
	require.False(t, t.Failed(), "everyone decodes everyone")
	aliceID, carolID, bobID := alice.ID+":"+alice.DeviceID, carol.ID+":"+carol.DeviceID, bob.ID+":"+bob.DeviceID
	require.ElementsMatch(t, []string{aliceID, carolID}, pages["bob"].Remotes, "Bob, on B, sees both of A's people")
	requireDecodesEveryone(t, pages)

	l := res.Leave
	require.NotNil(t, l, "Carol left")
	t.Logf("Carol left: Alice saw %v then %v (gone after %d ms); Bob saw %v then %v (gone after %d ms)",
		l.Before["alice"], l.After["alice"], l.GoneMs["alice"], l.Before["bob"], l.After["bob"], l.GoneMs["bob"])
	require.Equal(t, carolID, l.Identity)
	require.Contains(t, l.GoneMs, "alice", "Alice, on Carol's node, stops seeing her")
	require.Contains(t, l.GoneMs, "bob", "Bob, on the other node, stops seeing her")
	require.Equal(t, []string{bobID}, l.After["alice"], "Alice still sees Bob")
	require.Equal(t, []string{aliceID}, l.After["bob"], "Bob still sees Alice")
	require.Contains(t, s.b.Logs(), "remote participant left", "B removed Carol from its room")
	s.requireOneTrunkEach(t, watch, 1, 2)
}

// logElementCallTimeline logs, on one clock (ms after the first "Join call"),
// each person's click, first remote frame and media from everyone, each
// inbound video stream's first packet and frame, the trunks' progress, and
// the "missing key" messages of Element Call's console.
func logElementCallTimeline(t *testing.T, res elementCallResult, watch *trunkWatch) {
	t.Helper()
	// Where the time went, on one clock (ms after the first "Join call"):
	// each person's click, first remote frame and media from everyone, and
	// the trunk listed, up and holding everyone on each node.
	var first int64
	for _, p := range res.People {
		if j, ok := p.T["joinClicked"]; ok && (first == 0 || p.T0+j < first) {
			first = p.T0 + j
		}
	}
	at := func(abs int64) string {
		if abs == 0 {
			return "never"
		}
		return strconv.FormatInt(abs-first, 10)
	}
	for _, p := range res.People {
		rel := func(k string) string {
			if v, ok := p.T[k]; ok {
				return at(p.T0 + v)
			}
			return "never"
		}
		t.Logf("%s: clicked Join call at %s ms, first remote frame at %s, media from everyone at %s", p.Label, rel("joinClicked"), rel("firstRemoteFrame"), rel("allRemotes"))
		for ssrc, v := range p.Video {
			abs := func(x *int64) string {
				if x == nil {
					return "never"
				}
				return at(p.T0 + *x)
			}
			t.Logf("  %s's video %s: first packet at %s ms, first frame at %s; %d packets, %d frames (%d key), %d dropped, %d PLI, %d NACK sent, %d px wide",
				p.Label, ssrc, abs(v.FirstPacket), abs(v.FirstFrame), v.Packets, v.Frames, v.KeyFrames, v.Dropped, v.PLI, v.NACK, v.Width)
		}
	}
	t.Logf("trunk on A: listed at %s ms, up at %s, full at %s; on B: listed at %s, up at %s, full at %s",
		at(watch.seenA), at(watch.upA), at(watch.fullA), at(watch.seenB), at(watch.upB), at(watch.fullB))
	logMissingKeys(t, res)
}

// logMissingKeys logs, for each person, Element Call's "missing key"
// console messages: frames that arrive before the sender's per-participant
// key cannot be decrypted, and the keys travel as Olm to-device messages
// between the homeservers, not through the nodes.
func logMissingKeys(t *testing.T, res elementCallResult) {
	t.Helper()
	for _, p := range res.People {
		var n int
		var firstLog, lastLog string
		for _, l := range p.Log {
			if strings.Contains(strings.ToLower(l), "missing key") {
				n++
				if firstLog == "" {
					firstLog = l
				}
				lastLog = l
			}
		}
		if n > 0 {
			firstAt, _, _ := strings.Cut(firstLog, " ")
			lastAt, _, _ := strings.Cut(lastLog, " ")
			t.Logf("%s: %d \"missing key\" console messages, from %s to %s after the page opened (Join call clicked at +%dms)",
				p.Label, n, firstAt, lastAt, p.T["joinClicked"])
		}
	}
}
