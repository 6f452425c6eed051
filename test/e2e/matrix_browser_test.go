package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/dendritetest"
)

// serveMatrixPage bundles browser/matrix-call.mjs (matrix-js-sdk and
// livekit-client from web/node_modules) into a temporary directory and
// serves it with browser/matrix.html from an origin of its own, as Element
// Call is served apart from the homeserver and the node.
func serveMatrixPage(t *testing.T, env browserEnv) string {
	t.Helper()
	for _, f := range []string{"matrix-js-sdk/package.json", "esbuild/package.json"} {
		if _, err := os.Stat(filepath.Join(env.modules, f)); err != nil {
			needOrSkip(t, "web/node_modules lacks "+f+": run `make web`")
		}
	}
	dir := filepath.Join(env.repo, "test", "e2e", "browser")
	bundle := filepath.Join(t.TempDir(), "matrix-call.js")
	out, err := exec.Command("node", filepath.Join(dir, "bundle.mjs"), env.modules, filepath.Join(dir, "matrix-call.mjs"), bundle).CombinedOutput()
	require.NoError(t, err, "bundle matrix-call.mjs: %s", out)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /matrix.html", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(dir, "matrix.html"))
	})
	mux.HandleFunc("GET /matrix-call.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, bundle) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/matrix.html"
}

// TestBrowserMatrixCall: two Chromium pages run matrix-js-sdk against a
// real Dendrite the way Element Call does: log in, one creates the room and
// invites the other and the node's bot, both send their call membership,
// get an OpenID token, discover the SFU through rtc/transports, get a
// LiveKit token from the node's /get_token and join with livekit-client;
// each must decode the other's video.
func TestBrowserMatrixCall(t *testing.T) {
	env := findBrowserEnv(t, false)
	page := serveMatrixPage(t, env)
	m := startMatrixNode(t, matrixNodeOptions{})
	hs := m.hs
	alice, bob := hs.Register(t, "alice"), hs.Register(t, "bob")
	const alias = "e2e-call"
	pageURL := func(u dendritetest.User, role, peer string) string {
		q := url.Values{
			"hs": {hs.ClientURL}, "node": {m.HTTPURL}, "user": {localpart(u.ID)}, "password": {u.Password},
			"role": {role}, "alias": {alias}, "server": {hs.ServerName}, "bot": {m.bot}, "peer": {peer},
		}
		return page + "?" + q.Encode()
	}
	res := runBrowser(t, env, []browserPage{
		{Label: "alice", Kind: "client", URL: pageURL(alice, "create", bob.ID)},
		{Label: "bob", Kind: "client", URL: pageURL(bob, "join", "")},
	})
	pages := checkPages(t, res)
	require.Len(t, pages, 2)
	for _, p := range res.Pages {
		tokenAsked, ok1 := p.T["tokenAsked"]
		frame, ok2 := p.T["firstDecodedFrame"]
		if ok1 && ok2 {
			t.Logf("page %s: first decoded frame %.0f ms after asking /get_token (token answered in %.0f ms; Matrix log-in, room and bot ready at %.0f ms after page load)",
				p.Label, frame-tokenAsked, p.T["tokenReceived"]-tokenAsked, p.T["matrixReady"])
		}
	}

	// Identities are lk-jwt-service's hashes of user, device and member ID:
	// what a MatrixRTC client computes for the members it sees. The pages
	// can finish before Dendrite has delivered the second membership to the
	// application service (it sends transactions from its own queue, seen
	// here up to 3 s after the event), so the node's store is read until it
	// has both, within a generous deadline.
	db := storeDB(t, m.DataDir)
	type member struct{ userID, deviceID string }
	readMembers := func() ([]member, error) {
		rows, err := db.Query(`SELECT user_id, device_id FROM matrix_call_members ORDER BY user_id`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var ms []member
		for rows.Next() {
			var mb member
			if err := rows.Scan(&mb.userID, &mb.deviceID); err != nil {
				return nil, err
			}
			ms = append(ms, mb)
		}
		return ms, rows.Err()
	}
	var members []member
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		members, err = readMembers()
		require.NoError(t, err)
		if len(members) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var users []string
	for _, mb := range members {
		users = append(users, mb.userID)
		want := matrix.Identity(mb.userID, mb.deviceID, mb.userID+":"+mb.deviceID)
		require.True(t, slices.ContainsFunc(res.Pages, func(p pageResult) bool { return p.Identity == want }),
			"a page joined the SFU as %s's identity %s", mb.userID, want)
	}
	require.Equal(t, []string{alice.ID, bob.ID}, users, "the node saw both call memberships through the appservice")
}

func localpart(userID string) string {
	l, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return l
}
