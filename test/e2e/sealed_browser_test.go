package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/netnstest"
)

// Browsers in sealed agencies: each agency's Chromium runs inside the
// agency's network namespace (run.mjs or element-call.mjs started there
// by startBrowserScript with Agency.Command; playwright drives Chromium over a pipe, so nothing
// of the driver crosses namespaces), and the pages and Element Call's
// files are served from listeners made inside the namespace
// (Agency.Listen), on its own loopback. Chromium resolves the
// shared name through the agency's hosts file (`ip netns exec` lays
// /etc/netns/NAME/hosts over /etc/hosts): no --host-resolver-rules.

// Ports of the test's own servers inside each agency.
const (
	sealedPagePort   = 8081 // livekit-client page and bundle
	sealedAppPort    = 8082 // Element Call's files and config.json
	sealedHSProxPort = 8009 // the agency's reverse proxy in front of Dendrite and the node
)

const (
	// sealedScriptTimeout bounds each script's own run (launch, join,
	// media, waiting for the other agencies' runs).
	sealedScriptTimeout = 100 * time.Second
	// sealedScriptKillAfter is when the test gives up on a script.
	sealedScriptKillAfter = 120 * time.Second
)

// serveIn serves h at host:port inside the agency's namespace (host is
// the agency's address or its own loopback), from a listener made there,
// and returns its base URL.
func serveIn(t *testing.T, a *sealedAgency, host string, port int, h http.Handler) string {
	t.Helper()
	ln, err := a.ns.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("http://%s:%d/", host, port)
}

// runTogether waits until every script (started with together) is ready
// (its pages have all they wait for, or it gave up) or has exited, calls whileIn with everyone
// still in the call, then releases them all and waits until they exit.
// It returns how long the scripts took to be ready.
func runTogether(t *testing.T, scripts []*browserScript, whileIn func()) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(sealedScriptKillAfter)
	for {
		all := true
		for _, s := range scripts {
			if !s.isReady() && !s.done() {
				all = false
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			for _, s := range scripts {
				s.stop(t)
			}
			t.Fatalf("the browser scripts were not ready within %s", sealedScriptKillAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
	readyAfter := time.Since(start)
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		for _, s := range scripts {
			_ = os.WriteFile(s.release, nil, 0o600)
		}
		for _, s := range scripts {
			select {
			case <-s.exited:
			case <-time.After(30 * time.Second):
				t.Errorf("%s: script did not end within 30 s of its release", s.label)
				s.stop(t)
			}
		}
	}
	defer release() // also when whileIn fails the test
	for _, s := range scripts {
		if s.done() {
			t.Errorf("%s: script ended before the others were ready: %v\nstderr: %s", s.label, s.err, s.stderr.tail(40))
		}
	}
	if !t.Failed() && whileIn != nil {
		whileIn()
	}
	release()
	return readyAfter
}

// TestSealedFederationBrowsers: three agencies in sealed networks, each
// listing the other two, each with its clients inside its own namespace.
//
// First call: Alice in a livekit-client page in agency A, Bob in one in
// B, Carol with a Go SDK client in C and Dan with one in A, in a room of
// A's. The pages ask
// the shared token service, http://rtc.federation.test:7880, which each
// agency's hosts file resolves to its own node, with an OpenID token of
// their own homeserver, and join with the answer; Carol's client joins
// and Dan's with a token of their nodes. Everyone receives everyone: each
// page decodes the other page's video and receives its audio, and
// receives Carol's and Dan's audio and video packets (their synthetic VP8
// cannot be decoded); Carol and Dan receive the three others' audio and
// video.
//
// Second call: stock Element Call 0.26.1 in agencies A and B (all three
// with ENTENTE_SEALED_EC_AGENCIES=3), each agency's app served in its
// namespace against its own homeserver behind its reverse proxy (which
// sends rtc/transports to its node), in a public encrypted room of A's
// opened by link with per-participant keys: each person decodes video
// from and receives audio of every other.
//
// During each call, from the outside of the clients: no foreign
// connection in any agency (connection tracking and sockets); in the
// first call three trunks in all, each node holding two, up (in the
// second, one per pair of agencies in it). At the end the router's
// capture, started before the rooms were made, holds only node-to-node
// media and homeserver federation.
func TestSealedFederationBrowsers(t *testing.T) {
	env := findBrowserEnv(t, false)
	dist := elementCallApp(t, env, "0.26")
	t0 := time.Now()
	top, ag := startSealedAgencies(t, 3, func(i int) []int {
		var p []int
		for j := range 3 {
			if j != i {
				p = append(p, j)
			}
		}
		return p
	})
	for _, a := range ag {
		a.ns.TrackConnections(t)
	}
	capture := top.Capture(t)
	t.Logf("three agencies up in %v", time.Since(t0).Round(time.Millisecond))

	pageURLs := make([]string, len(ag))
	appURLs := make([]string, len(ag))
	for i, a := range ag {
		// The pages and Element Call are served on the agency's own
		// loopback: getUserMedia and WebCrypto (Element Call's E2EE) exist
		// only in secure contexts, which http://127.0.0.1 is and
		// http://10.77.x.2 is not. What they call (the shared name, the
		// homeserver) is at the agency's address.
		pageURLs[i] = serveIn(t, a, "127.0.0.1", sealedPagePort, clientPageHandler(env)) + "client.html"
		// The agency's reverse proxy (docs/matrix.md): the client API to
		// its Dendrite (http://<addr>:8008), rtc/transports to its node,
		// dialled from inside the agency.
		proxy := serveIn(t, a, a.ns.Addr, sealedHSProxPort, homeserverProxyHandler(t, a.hs.ClientURL, a.nodeURL(),
			&http.Transport{DialContext: a.ns.DialContext}))
		appURLs[i] = serveIn(t, a, "127.0.0.1", sealedAppPort, elementCallHandler(t, dist, strings.TrimSuffix(proxy, "/"), a.hs.ServerName, ""))
	}

	t.Run("livekit-client and SDK", func(t *testing.T) { sealedPagesCall(t, env, top, ag, pageURLs) })
	if t.Failed() {
		return
	}
	// Element Call in two agencies by default: with one person in each of
	// the three, a person's per-participant key sometimes never reaches
	// one of the others on this 2-core machine (3 of 15 runs, 1 of 6 since
	// everyone waits in the lobby: "key ... marked as invalid", then no
	// frame of that stream for 100 s, while every other stream decodes).
	// ENTENTE_SEALED_EC_AGENCIES=3 runs the three.
	nEC := 2
	if v, err := strconv.Atoi(os.Getenv("ENTENTE_SEALED_EC_AGENCIES")); err == nil && v >= 2 && v <= len(ag) {
		nEC = v
	}
	t.Run("Element Call", func(t *testing.T) { sealedElementCall(t, env, top, ag, nEC, appURLs) })
	if t.Failed() {
		return
	}
	requireSealedRouterFlows(t, capture, nil)
	t.Logf("whole test: %v", time.Since(t0).Round(time.Millisecond))
}

// sealedPagesCall is TestSealedFederationBrowsers' first call.
func sealedPagesCall(t *testing.T, env browserEnv, top *netnstest.Topology, ag []*sealedAgency, pageURLs []string) {
	room, users := sealedRoom(t, ag, []string{"alice", "bob", "carol"})
	// Dan, of agency A: a second client of A's node, besides Alice's page.
	users = append(users, ag[0].hs.Register(t, "dan"))
	ag[0].hs.Join(t, users[3], room)
	home := []*sealedAgency{ag[0], ag[1], ag[2], ag[0]}
	ids := make([]string, len(users))
	toks := make([]tokenAnswer, len(users))
	for i, u := range users {
		ids[i] = u.ID + ":" + u.DeviceID
		// The node serves the user (its bot joined the room), and the
		// user's membership names the shared transport.
		toks[i] = home[i].joinCall(t, u, room)
	}
	start := time.Now()
	sdk := map[string]*sealedClient{}
	for _, i := range []int{2, 3} {
		sdk[ids[i]] = startSealedClient(t, home[i], toks[i].URL, toks[i].JWT, ids[i])
	}
	scripts := make([]*browserScript, 2)
	for i := range 2 {
		p := browserPage{
			Label: strings.Split(ids[i][1:], ":")[0], Kind: "client", URL: pageURLs[i], Simulcast: i == 0,
			TokenService: sealedSharedRTCURL,
			TokenRequest: map[string]any{"room": room, "openid_token": ag[i].hs.OpenIDToken(t, users[i]), "device_id": users[i].DeviceID},
			ExpectFrom:   map[string]string{ids[1-i]: "frames", ids[2]: "packets", ids[3]: "packets"},
		}
		scripts[i] = startBrowserScript(t, env, p.Label, "run.mjs", map[string]any{
			"pages": []browserPage{p}, "holdMs": 500, "timeoutMs": sealedScriptTimeout.Milliseconds(),
		}, ag[i].ns.Command, true)
	}
	var sdkSaw bool
	readyAfter := runTogether(t, scripts, func() {
		// Checked while the pages are still in the call; failures are
		// reported after the pages' own reports.
		sdkSaw = assertEventually(30*time.Second, func() bool {
			for id, c := range sdk {
				for _, other := range ids {
					if other != id && !c.sees(other, 20) {
						return false
					}
				}
			}
			return true
		})
		t.Logf("Carol and Dan (Go SDK, agencies C and A) receive the three others: %v, %v after the clients started", sdkSaw, time.Since(start).Round(time.Millisecond))
		requireSealedTrunks(t, matrix.RoomAlias(room, matrix.LegacySlotID), ag, nil)
		require.Zero(t, countSealedForeign(t, top, ag), "foreign connections")
	})
	t.Logf("both pages had everyone's media %v after the clients started", readyAfter.Round(time.Millisecond))

	results := make([]browserResult, len(scripts))
	for i, s := range scripts {
		s.report(t, &results[i])
		res := results[i]
		for _, p := range res.Pages {
			t.Logf("%s (agency %s): Chromium launched in %d ms; state %q, error %v; joined at %s ms after page load, first remote frame at %s, everyone's media (by identity) at %v; received %v; tokens %v",
				p.Label, ag[i].ns.Addr, res.LaunchMs, p.State, deref(p.Error), ms(p.T, "joined"), ms(p.T, "firstDecodedFrame"), p.FirstMediaFrom, p.InboundBy, p.Tokens)
			if !p.OK {
				t.Logf("%s console:\n  %s", p.Label, strings.Join(p.Log, "\n  "))
			}
		}
	}
	for id, c := range sdk {
		require.True(t, sdkSaw, "%s receives the three others' audio and video: %+v", id, c.state())
	}
	// The call ends here: the SDK clients leave (the pages have), so
	// that the next call has the machine to itself.
	for _, c := range sdk {
		c.stop()
	}
	for i, s := range scripts {
		res := results[i]
		require.Empty(t, res.Error, "%s: run.mjs", s.label)
		require.False(t, res.TimedOut, "%s: media from everyone within %s", s.label, sealedScriptTimeout)
		require.Len(t, res.Pages, 1)
		p := res.Pages[0]
		require.True(t, p.OK, "%s has everyone's media: %+v", p.Label, p.InboundBy)
		require.Equal(t, ids[i], p.Identity)
		require.ElementsMatch(t, []string{ids[1-i], ids[2], ids[3]}, p.Remotes, "%s sees the three others", p.Label)
		require.Positive(t, p.InboundBy[ids[1-i]].Frames, "%s decodes the other page", p.Label)
		require.Positive(t, p.InboundBy[ids[1-i]].AudioPackets, "%s hears the other page", p.Label)
		for _, id := range ids[2:] {
			require.Positive(t, p.InboundBy[id].VideoPackets, "%s receives %s's video", p.Label, id)
			require.Positive(t, p.InboundBy[id].AudioPackets, "%s hears %s", p.Label, id)
		}
		// The page's token call went to the shared name, which Chromium
		// resolved through the agency's hosts file (nothing else routes
		// there), and the answer sent it to its own node.
		require.Len(t, p.Tokens, 1)
		require.True(t, strings.HasPrefix(p.Tokens[0], sealedSharedRTCURL+"/sfu/get url=ws://"+ag[i].ns.Addr+":"),
			"%s's token came from the shared name and names its own node: %s", p.Label, p.Tokens[0])
		for _, w := range p.Websockets {
			u, err := url.Parse(w)
			require.NoError(t, err)
			require.Equal(t, ag[i].ns.Addr, u.Hostname(), "%s's websocket goes to its own node", p.Label)
		}
		for _, pair := range p.SelectedPairs {
			require.Equal(t, "udp "+net.JoinHostPort(ag[i].ns.Addr, strconv.Itoa(sealedUDPPort)), pair, "%s's media goes to its own node", p.Label)
		}
		require.NotEmpty(t, p.SelectedPairs, "%s has a selected ICE pair", p.Label)
	}
}

// sealedElementCall is TestSealedFederationBrowsers' second call.
func sealedElementCall(t *testing.T, env browserEnv, top *netnstest.Topology, ag []*sealedAgency, n int, appURLs []string) {
	ec := ag[:n] // the agencies with an Element Call person
	organiser := ag[0].hs.Register(t, "organiser")
	room := ag[0].hs.CreateRoom(t, organiser, map[string]any{
		"preset": "public_chat", "name": "Sealed agencies, Element Call",
		"initial_state": []any{map[string]any{
			"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"},
		}},
	})
	q := "room/#/?" + url.Values{"roomId": {room}, "perParticipantE2EE": {"true"}}.Encode()
	names := []string{"Ada", "Bea", "Cyd"}
	scripts := make([]*browserScript, len(ec))
	for i, a := range ec {
		label := strings.ToLower(names[i])
		scripts[i] = startBrowserScript(t, env, label, "element-call.mjs", map[string]any{
			"app": appURLs[i], "people": []elementCallPerson{{Label: label, Name: names[i], URL: appURLs[i] + q, MinRemotes: n - 1, Gate: true}},
			"timeoutMs": sealedScriptTimeout.Milliseconds(),
		}, a.ns.Command, true)
	}
	// Everyone clicks "Join call" once all are in the lobby
	// (registered, their device keys uploaded, in the room): started
	// apart, a homeserver may send a newcomer's key to a device list it
	// fetched before the other's device existed, and that person's video
	// then never decrypts (seen here: "key ... marked as invalid", then no
	// frame for 100 s).
	lobbyStart := time.Now()
	for {
		all := true
		for i, s := range scripts {
			if _, err := os.Stat(filepath.Join(s.profiles, strings.ToLower(names[i])+".lobby")); err != nil && !s.done() {
				all = false
			}
		}
		if all {
			break
		}
		if time.Since(lobbyStart) > sealedScriptKillAfter {
			t.Fatalf("the Element Call pages did not reach the lobby within %s", sealedScriptKillAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the %d Element Call pages were in the lobby %v after their scripts started", n, time.Since(lobbyStart).Round(time.Millisecond))
	for i, s := range scripts {
		require.NoError(t, os.WriteFile(filepath.Join(s.profiles, strings.ToLower(names[i])+".go"), nil, 0o600))
	}
	readyAfter := runTogether(t, scripts, func() {
		alias := matrix.RoomAlias(room, matrix.LegacySlotID)
		requireSealedTrunks(t, alias, ec, nil)
		for _, a := range ag[n:] {
			for _, x := range a.trunks(t) {
				require.NotEqual(t, alias, x.MediaRoom, "%s, with nobody in the call, holds no trunk of it", a.ns.Addr)
			}
		}
		require.Zero(t, countSealedForeign(t, top, ag), "foreign connections")
	})
	t.Logf("the %d Element Call pages had everyone's media %v after they were let into the call", n, readyAfter.Round(time.Millisecond))
	for i, s := range scripts {
		var res elementCallResult
		s.report(t, &res)
		for _, p := range res.People {
			t.Logf("%s (agency %s): page ready in %d ms; clicked Join call at %d ms, first remote frame at %d ms, media from every other at %d ms after the page opened; video from %d, audio from %d remote streams; websockets %v, token calls %v, selected ICE pairs %v",
				p.Label, ag[i].ns.Addr, res.LaunchMs, p.T["joinClicked"], p.T["firstRemoteFrame"], p.T["allRemotes"],
				p.VideoStreams, p.AudioStreams, p.Websockets, p.TokenURLs, p.SelectedPairs)
		}
		for _, p := range res.People {
			// When each inbound video stream's first packet and first
			// decoded frame came (ms after the page opened): the gap is the
			// wait for the sender's key.
			for ssrc, v := range p.Video {
				at := func(x *int64) string {
					if x == nil {
						return "never"
					}
					return strconv.FormatInt(*x, 10)
				}
				t.Logf("  %s's video %s: first packet at %s ms, first frame at %s ms; %d frames", p.Label, ssrc, at(v.FirstPacket), at(v.FirstFrame), v.Frames)
			}
		}
		logMissingKeys(t, res)
		requireCall(t, res)
		require.Len(t, res.People, 1)
		p := res.People[0]
		require.GreaterOrEqual(t, p.VideoStreams, n-1, "%s decodes every other", p.Label)
		require.GreaterOrEqual(t, p.AudioStreams, n-1, "%s hears every other", p.Label)
		require.NotEmpty(t, p.TokenURLs)
		for _, c := range p.TokenURLs {
			require.True(t, strings.HasPrefix(c, "POST "+sealedSharedRTCURL+"/"), "%s asks the shared name for tokens: %s", p.Label, c)
		}
		require.NotEmpty(t, p.Websockets)
		for _, w := range p.Websockets {
			u, err := url.Parse(w)
			require.NoError(t, err)
			require.Equal(t, ag[i].ns.Addr, u.Hostname(), "%s's websocket goes to its own node", p.Label)
		}
		require.NotEmpty(t, p.SelectedPairs)
		for _, pair := range p.SelectedPairs {
			require.Equal(t, "udp "+net.JoinHostPort(ag[i].ns.Addr, strconv.Itoa(sealedUDPPort)), pair, "%s's media goes to its own node", p.Label)
		}
	}
}

// deref is *s, or "" for nil.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
