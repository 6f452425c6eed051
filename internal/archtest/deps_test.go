package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// module is Entente's module path. Patterns below whose first element has no dot are relative
// to it; "x/..." matches x and every package below it, "..." the whole module.
const module = "entente.dev/entente"

// rule forbids packages matching from (except those matching except) to depend, directly or
// through other packages, on any package matching a deny pattern.
type rule struct {
	from   string
	except string
	deny   []string
}

// rules are DESIGN.md section 1's one-way dependencies.
var rules = []rule{
	{from: "internal/...", deny: []string{"media/...", "bridge/...", "federation/...", "web/..."}},
	{from: "media/...", deny: []string{"bridge/...", "federation/...", "web/...", "maunium.net/go/mautrix/...", "mellium.im/xmpp/..."}},
	// The SFU core never depends on its LiveKit front end, nor on LiveKit's protobufs at all:
	// its data model is its own (media/model.go), and media/livekit converts to and from it,
	// not the other way round. Nor on WebRTC: a participant's transport (media/rtc's peer
	// connections, a federation trunk, a recorder) plugs into the core's interfaces, so the
	// core knows packets (pion/rtp, pion/rtcp) but no peer connection.
	{from: "media", deny: append([]string{"media/livekit/...", "media/rtc/...", "github.com/livekit/protocol/..."}, peerConnection...)},
	// The WebRTC transport serves every front end that uses peer connections.
	{from: "media/rtc", deny: []string{"media/livekit/..."}},
	{from: "bridge/...", deny: []string{"federation/..."}},
	{from: "federation/...", deny: []string{"bridge/..."}},
	// Only cmd wires concrete types together; nothing else depends on it.
	{from: "...", except: "cmd/...", deny: []string{"cmd/..."}},
}

// peerConnection is pion's WebRTC stack above RTP and RTCP: what only media/rtc may use.
var peerConnection = []string{
	"github.com/pion/webrtc/...", "github.com/pion/ice/...", "github.com/pion/dtls/...", "github.com/pion/srtp/...",
	"github.com/pion/interceptor/...", "github.com/pion/sctp/...", "github.com/pion/datachannel/...", "github.com/pion/sdp/...",
}

// independentChildren lists packages whose subtrees must not depend on one another: bridge/matrix
// and bridge/xmpp share only what is in bridge itself, and bridge itself depends on neither.
var independentChildren = []string{"bridge"}

// mediaMayImport is everything media/... may import directly, besides the standard library.
// Edit this table to admit a library into the SFU; say why in the commit.
var mediaMayImport = []string{
	"internal/...",
	"media/...",
	"github.com/pion/...",
	"github.com/livekit/protocol/...",
	"github.com/livekit/mediatransportutil/...",
	"github.com/golang-jwt/jwt/...", // LiveKit access tokens: livekit/protocol/auth's error values
	"github.com/rs/zerolog/...",
	"google.golang.org/protobuf/...",
	"golang.org/x/...",
	"github.com/coder/websocket/...",
}

// graph maps every package of a build to its direct imports.
type graph map[string][]string

// abs turns a module-relative pattern into an import-path pattern.
func abs(pattern string) string {
	if pattern == "..." {
		return module + "/..."
	}
	first, _, _ := strings.Cut(pattern, "/")
	if strings.Contains(first, ".") {
		return pattern
	}
	return module + "/" + pattern
}

// match reports whether import path p matches the (module-relative) pattern.
func match(pattern, p string) bool {
	pattern = abs(pattern)
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == pattern
}

// isStd uses the go command's own test: a standard-library path has no dot in its first element.
func isStd(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}

// rel strips the module path for messages.
func rel(p string) string {
	if r, ok := strings.CutPrefix(p, module+"/"); ok {
		return r
	}
	return p
}

// paths returns, for every package reachable from start, the chain of imports that first
// reaches it (breadth first, so the shortest).
func (g graph) paths(start string) map[string][]string {
	via := map[string][]string{start: {start}}
	queue := []string{start}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range g[p] {
			if _, seen := via[imp]; !seen {
				via[imp] = append(slices.Clone(via[p]), imp)
				queue = append(queue, imp)
			}
		}
	}
	return via
}

// modulePackages returns the graph's packages of this module, sorted.
func (g graph) modulePackages() []string {
	var out []string
	for p := range g {
		if match("...", p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// violations checks every rule and returns one message per broken rule and dependency, sorted.
func violations(g graph) []string {
	var out []string
	chain := func(c []string) string {
		parts := make([]string, len(c))
		for i, p := range c {
			parts[i] = rel(p)
		}
		return strings.Join(parts, " -> ")
	}
	for _, from := range g.modulePackages() {
		reach := g.paths(from)
		deps := make([]string, 0, len(reach))
		for d := range reach {
			if d != from {
				deps = append(deps, d)
			}
		}
		slices.Sort(deps)

		for _, r := range rules {
			subject := func(p string) bool { return match(r.from, p) && (r.except == "" || !match(r.except, p)) }
			if !subject(from) {
				continue
			}
			for _, deny := range r.deny {
				denied := func(p string) bool { return match(deny, p) }
				for _, d := range deps {
					if denied(d) && firstReport(reach[d], subject, denied) {
						out = append(out, fmt.Sprintf("%s must not depend on %s: %s", r.from, deny, chain(reach[d])))
					}
				}
			}
		}

		for _, parent := range independentChildren {
			own, inTree := child(parent, from)
			if !inTree {
				continue
			}
			subject := func(p string) bool { _, ok := child(parent, p); return ok }
			denied := func(p string) bool { c, ok := child(parent, p); return ok && c != "" && c != own }
			for _, d := range deps {
				if denied(d) && firstReport(reach[d], subject, denied) {
					out = append(out, fmt.Sprintf("%s/<x> must not depend on another %s/<y>, nor %s on any: %s", parent, parent, parent, chain(reach[d])))
				}
			}
		}

		if match("media/...", from) {
			for _, imp := range g[from] {
				if !isStd(imp) && !slices.ContainsFunc(mediaMayImport, func(pat string) bool { return match(pat, imp) }) {
					out = append(out, fmt.Sprintf("media may import only the standard library and mediaMayImport: %s imports %s", rel(from), imp))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// firstReport reports whether the broken rule at the end of chain (from -> ... -> denied) is
// best reported from chain[0]: not when the next package is under the same rule (it reports it
// itself), nor when the chain passes through an earlier denied package (that one is reported).
func firstReport(chain []string, subject, denied func(string) bool) bool {
	inner := chain[1 : len(chain)-1]
	if len(inner) > 0 && subject(inner[0]) {
		return false
	}
	return !slices.ContainsFunc(inner, denied)
}

// child returns which child subtree of parent p lies in ("" for parent itself), and whether p
// is in parent's tree at all.
func child(parent, p string) (string, bool) {
	base := abs(parent)
	if p == base {
		return "", true
	}
	rest, ok := strings.CutPrefix(p, base+"/")
	if !ok {
		return "", false
	}
	c, _, _ := strings.Cut(rest, "/")
	return c, true
}

// listGraph runs `go list -e -deps -json ./...` at the module root. -e keeps a package that does
// not build yet from hiding the others' imports.
func listGraph(t *testing.T) graph {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err, "go env GOMOD")
	root := filepath.Dir(strings.TrimSpace(string(gomod)))

	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Imports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr.String())

	g := graph{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		g[p.ImportPath] = p.Imports
	}
	return g
}

func TestDependencyRules(t *testing.T) {
	g := listGraph(t)
	for _, p := range []string{"internal/config", "internal/store", "internal/logging"} {
		require.Contains(t, g, module+"/"+p, "go list found too little; is the test running in the module?")
	}
	require.Empty(t, violations(g), "DESIGN.md section 1 import rules are broken")
}

// TestViolationsOnSyntheticGraph checks that the checker catches each kind of broken rule, so a
// passing TestDependencyRules means something.
func TestViolationsOnSyntheticGraph(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	clean := graph{
		m("cmd/entente"):              {m("media/livekit"), m("bridge/matrix"), m("federation"), m("web"), m("internal/config")},
		m("internal/config"):          {"fmt", "github.com/BurntSushi/toml"},
		m("internal/store"):           {"database/sql", "github.com/mattn/go-sqlite3"},
		m("media"):                    {"github.com/pion/rtp", "github.com/rs/zerolog", m("internal/config")},
		m("media/rtc"):                {m("media"), "github.com/pion/webrtc/v4"},
		m("media/livekit"):            {m("media"), m("media/rtc"), "github.com/livekit/protocol/livekit", "github.com/coder/websocket", "net/http"},
		m("bridge"):                   {m("media")},
		m("bridge/matrix"):            {m("bridge"), m("bridge/matrix/internal/x"), "maunium.net/go/mautrix"},
		m("bridge/matrix/internal/x"): {"fmt"},
		m("bridge/xmpp"):              {m("bridge"), "mellium.im/xmpp"},
		m("federation"):               {m("media"), m("internal/store")},
		m("web"):                      {"embed", "net/http"},
		"github.com/pion/webrtc/v4":   {"github.com/pion/ice/v4"},
		"maunium.net/go/mautrix":      {"github.com/rs/zerolog"},
	}
	require.Empty(t, violations(clean))

	cases := []struct {
		name  string
		from  string
		add   string
		wants []string
	}{
		{"internal imports media", "internal/store", m("media"),
			[]string{"internal/... must not depend on media/...: internal/store -> media"}},
		{"internal imports web, media inherits it", "internal/config", m("web"), []string{
			"internal/... must not depend on web/...: internal/config -> web",
			"media/... must not depend on web/...: media -> internal/config -> web",
		}},
		{"media imports mautrix", "media", "maunium.net/go/mautrix",
			[]string{
				"media may import only the standard library and mediaMayImport: media imports maunium.net/go/mautrix",
				"media/... must not depend on maunium.net/go/mautrix/...: media -> maunium.net/go/mautrix",
			}},
		{"media imports an unlisted library", "media/livekit", "github.com/gorilla/websocket",
			[]string{"media may import only the standard library and mediaMayImport: media/livekit imports github.com/gorilla/websocket"}},
		{"media imports federation", "media/livekit", m("federation"),
			[]string{
				"media may import only the standard library and mediaMayImport: media/livekit imports entente.dev/entente/federation",
				"media/... must not depend on federation/...: media/livekit -> federation",
			}},
		{"core imports a peer connection", "media", "github.com/pion/webrtc/v4", []string{
			"media must not depend on github.com/pion/ice/...: media -> github.com/pion/webrtc/v4 -> github.com/pion/ice/v4",
			"media must not depend on github.com/pion/webrtc/...: media -> github.com/pion/webrtc/v4",
		}},
		{"core imports LiveKit's protobufs", "media", "github.com/livekit/protocol/livekit", []string{
			"media must not depend on github.com/livekit/protocol/...: media -> github.com/livekit/protocol/livekit",
		}},
		{"core reaches LiveKit's protocol through a package it imports", "internal/config", "github.com/livekit/protocol/logger", []string{
			"media must not depend on github.com/livekit/protocol/...: media -> internal/config -> github.com/livekit/protocol/logger",
		}},
		{"core imports the WebRTC transport", "media", m("media/rtc"), []string{
			"media must not depend on github.com/pion/ice/...: media -> media/rtc -> github.com/pion/webrtc/v4 -> github.com/pion/ice/v4",
			"media must not depend on github.com/pion/webrtc/...: media -> media/rtc -> github.com/pion/webrtc/v4",
			"media must not depend on media/rtc/...: media -> media/rtc",
		}},
		{"transport imports the LiveKit front end", "media/rtc", m("media/livekit"), []string{
			"media/rtc must not depend on media/livekit/...: media/rtc -> media/livekit",
		}},
		{"bridge sibling", "bridge/xmpp", m("bridge/matrix"),
			[]string{"bridge/<x> must not depend on another bridge/<y>, nor bridge on any: bridge/xmpp -> bridge/matrix"}},
		{"bridge root imports a child", "bridge", m("bridge/xmpp"), []string{
			"bridge/<x> must not depend on another bridge/<y>, nor bridge on any: bridge -> bridge/xmpp",
		}},
		{"federation imports bridge", "federation", m("bridge"),
			[]string{"federation/... must not depend on bridge/...: federation -> bridge"}},
		{"bridge imports federation", "bridge/matrix", m("federation"),
			[]string{"bridge/... must not depend on federation/...: bridge/matrix -> federation"}},
		{"web imports cmd", "web", m("cmd/entente"), []string{"... must not depend on cmd/...: web -> cmd/entente"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := graph{}
			for k, v := range clean {
				g[k] = slices.Clone(v)
			}
			from := m(tc.from)
			g[from] = append(g[from], tc.add)
			require.Equal(t, tc.wants, violations(g))
		})
	}
}
