package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The browser tests drive headless Chromium through test/e2e/browser/run.mjs
// (playwright-core from web/node_modules) against a real node. They need:
// Chromium, Node.js, `make web` (node_modules and the built join page). When
// one is missing they skip with the reason, or fail when CI=true.

const (
	// browserRunTimeout bounds one run.mjs: launch, join, media.
	browserRunTimeout = 40 * time.Second
	// browserKillAfter is when the Go side gives up on run.mjs and kills it.
	browserKillAfter = 55 * time.Second
)

type browserPage struct {
	Label     string `json:"label"`
	Kind      string `json:"kind"` // "client" (browser/client.html) or "joinpage" (the node's page)
	URL       string `json:"url"`
	WSURL     string `json:"wsURL,omitempty"`
	Token     string `json:"token,omitempty"`
	Simulcast bool   `json:"simulcast,omitempty"`
	Name      string `json:"name,omitempty"`
	// Fill and Click drive a "joinpage" page's form: the fields to fill
	// (CSS selector -> value) and the button to click; without them the
	// page's guest form gets Name and #join is clicked.
	Fill  map[string]string `json:"fill,omitempty"`
	Click string            `json:"click,omitempty"`
	// TokenService and TokenRequest make a "client" page get its url and
	// token itself: it POSTs TokenRequest to TokenService + "/sfu/get".
	TokenService string `json:"tokenService,omitempty"`
	TokenRequest any    `json:"tokenRequest,omitempty"`
	// TokenEndpoint replaces "/sfu/get" (e.g. "/get_token").
	TokenEndpoint string `json:"tokenEndpoint,omitempty"`
	// Subscribe, when set, makes the page open a second, subscribe-only
	// connection with a token it asks there (Element Call's compatibility
	// mode, for another member's transport).
	Subscribe *pageSubscribe `json:"subscribe,omitempty"`
	// Browser names the Chromium process the page runs in (one per name,
	// started with the Args of the first page naming it); empty is the
	// run's default process.
	Browser string   `json:"browser,omitempty"`
	Args    []string `json:"args,omitempty"`
	// ExpectFrom makes the page wait for audio packets from each identity
	// named and, from each, decoded video frames ("frames") or video
	// packets ("packets", for a Go SDK client's synthetic VP8).
	ExpectFrom map[string]string `json:"expectFrom,omitempty"`
}

// pageSubscribe is the token call of a page's subscribe-only connection.
type pageSubscribe struct {
	TokenService  string `json:"tokenService"`
	TokenEndpoint string `json:"tokenEndpoint"`
	TokenRequest  any    `json:"tokenRequest"`
}

type pageTile struct {
	Identity string `json:"identity"`
	Source   string `json:"source"`
	Name     string `json:"name"`
	MicMuted bool   `json:"micMuted"`
	HasVideo bool   `json:"hasVideo"`
}

type pageResult struct {
	Label         string             `json:"label"`
	Kind          string             `json:"kind"`
	OK            bool               `json:"ok"`
	T             map[string]float64 `json:"t"` // ms since the page's navigation start
	Log           []string           `json:"log"`
	State         string             `json:"state"`
	Joined        bool               `json:"joined"`
	Error         *string            `json:"error"`
	Identity      string             `json:"identity"`
	Remotes       []string           `json:"remotes"`
	Tiles         []pageTile         `json:"tiles"`
	FramesDecoded int                `json:"framesDecoded"`
	AudioPackets  int                `json:"audioPackets"`
	// Websockets are the URLs of the websockets the page opened (tokens
	// redacted); SelectedPairs the remote end of each of its peer
	// connections' selected ICE candidate pair ("udp 127.0.0.1:P").
	Websockets    []string `json:"websockets"`
	SelectedPairs []string `json:"selectedPairs"`
	// SelectedLocal is the local end of the same pairs: candidate type,
	// protocol and, for a relay, the protocol to the TURN server ("host
	// tcp", "relay udp via tls").
	SelectedLocal []string `json:"selectedLocal"`
	// FramesBy is the video frames decoded from each remote identity
	// ("client" pages).
	FramesBy map[string]int `json:"framesBy"`
	// FirstFrameFrom is when the page decoded its first video frame
	// from each remote identity, in ms since its navigation start.
	FirstFrameFrom map[string]float64 `json:"firstFrameFrom"`
	// Tokens are the token answers a "client" page got: "<service><endpoint>
	// url=<SFU url> sub=<identity> room=<media room>".
	Tokens []string `json:"tokens"`
	// InboundBy is, for a page with ExpectFrom, what it received of each
	// remote identity; FirstMediaFrom when (ms since navigation start) it
	// had each expected identity's audio and video.
	InboundBy      map[string]inboundCounts `json:"inboundBy"`
	FirstMediaFrom map[string]float64       `json:"firstMediaFrom"`
}

// inboundCounts is what a page received of one remote participant.
type inboundCounts struct {
	Frames       int `json:"frames"`
	VideoPackets int `json:"videoPackets"`
	AudioPackets int `json:"audioPackets"`
}

type browserResult struct {
	LaunchMs int64        `json:"launchMs"`
	TotalMs  int64        `json:"totalMs"`
	TimedOut bool         `json:"timedOut"`
	Error    string       `json:"error"`
	Pages    []pageResult `json:"pages"`
	Leave    *leaveResult `json:"leave"`
}

// leaveResult is what the other pages saw of the page that left: the
// remote identities each saw before and after, and how long after the
// page left each stopped seeing it (absent: it never did).
type leaveResult struct {
	Label    string              `json:"label"`
	Identity string              `json:"identity"`
	Before   map[string][]string `json:"before"`
	After    map[string][]string `json:"after"`
	GoneMs   map[string]int64    `json:"goneMs"`
}

// browserEnv is what the browser tests found installed.
type browserEnv struct {
	repo, modules, chromium string
}

// needOrSkip skips the test with why, or fails it under CI, where everything
// must be installed.
func needOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("browser test prerequisite missing under CI: %s", why)
	}
	t.Skipf("skipping: %s", why)
}

func findBrowserEnv(t *testing.T, needJoinPage bool) browserEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests are not short")
	}
	env := browserEnv{repo: RepoRoot(t), chromium: os.Getenv("ENTENTE_CHROMIUM")}
	if env.chromium == "" {
		env.chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(env.chromium); err != nil {
		needOrSkip(t, "no Chromium at "+env.chromium+" (apt-get install chromium, or set ENTENTE_CHROMIUM)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		needOrSkip(t, "Node.js (node) is not on PATH")
	}
	env.modules = filepath.Join(env.repo, "web", "node_modules")
	for _, f := range []string{"playwright-core/package.json", "livekit-client/dist/livekit-client.umd.js"} {
		if _, err := os.Stat(filepath.Join(env.modules, f)); err != nil {
			needOrSkip(t, "web/node_modules lacks "+f+": run `make web`")
		}
	}
	if needJoinPage {
		if _, err := os.Stat(filepath.Join(env.repo, "web", "dist", "index.html")); err != nil {
			needOrSkip(t, "the join page is not built (web/dist/index.html): run `make web`")
		}
	}
	return env
}

// serveClientPage serves browser/client.html and the livekit-client UMD
// bundle it loads, from another origin than the node (as a third-party
// LiveKit app would be).
func serveClientPage(t *testing.T, env browserEnv) string {
	t.Helper()
	srv := httptest.NewServer(clientPageHandler(env))
	t.Cleanup(srv.Close)
	return srv.URL + "/client.html"
}

// clientPageHandler serves /client.html and the livekit-client UMD bundle.
func clientPageHandler(env browserEnv) http.Handler {
	page := filepath.Join(env.repo, "test", "e2e", "browser", "client.html")
	umd := filepath.Join(env.modules, "livekit-client", "dist", "livekit-client.umd.js")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /client.html", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, page) })
	mux.HandleFunc("GET /livekit-client.umd.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, umd) })
	return mux
}

// runBrowser runs run.mjs with pages and returns its report. It never takes
// longer than browserKillAfter: on its deadline the script's process group
// gets SIGTERM (it closes Chromium), then SIGKILL, and any Chromium left
// using this run's profile directory is killed by pid.
func runBrowser(t *testing.T, env browserEnv, pages []browserPage) browserResult {
	t.Helper()
	return runBrowserLeaving(t, env, pages, "")
}

// runBrowserLeaving is runBrowser where, once every page has media, the
// page labelled leave disconnects from its room and the run waits until
// the other pages no longer see it (browserResult.Leave).
func runBrowserLeaving(t *testing.T, env browserEnv, pages []browserPage, leave string) browserResult {
	t.Helper()
	cfg := map[string]any{"timeoutMs": browserRunTimeout.Milliseconds(), "holdMs": 1000, "pages": pages, "leave": leave}
	if d := os.Getenv("ENTENTE_E2E_SCREENSHOTS"); d != "" {
		cfg["screenshotDir"] = d
	}
	s := startBrowserScript(t, env, "run.mjs", "run.mjs", cfg, exec.Command, false)
	defer s.end(t)
	if !s.wait(browserKillAfter) {
		s.stop(t)
		t.Fatalf("browser run killed after %s\nstdout: %s\nstderr: %s", browserKillAfter, s.stdout.String(), s.stderr.String())
	}
	var res browserResult
	s.report(t, &res)
	if s.err != nil {
		var ee *exec.ExitError
		if !errors.As(s.err, &ee) {
			t.Fatalf("run.mjs: %v\nstderr: %s", s.err, s.stderr.String())
		}
		t.Logf("run.mjs exited %d\nstderr: %s", ee.ExitCode(), s.stderr.String())
	}
	return res
}

// browserScript is one run of a browser script of test/e2e/browser
// (run.mjs, element-call.mjs) in a process group of its own.
type browserScript struct {
	label            string
	cmd              *exec.Cmd
	profiles         string // the script's userDataDir
	ready, release   string // its readyFile and releaseFile (together)
	stdout           bytes.Buffer
	stderr           lockedBuffer
	exited           chan struct{}
	err              error // Wait's, once exited is closed
	endOnce          sync.Once
	started, stopped time.Time
}

// startBrowserScript starts `node script CONFIG` with command (exec.Command,
// or an agency's Command to run it in the agency's network namespace). To
// cfg it adds the modules, Chromium and a fresh profile directory, and with
// together a readyFile and a releaseFile (runTogether). The script runs in
// a process group of its own, killed if the test process dies; on cleanup
// (or end) the group gets SIGTERM, then SIGKILL, and any Chromium left
// using its profiles is killed (playwright starts Chromium in a group of
// its own).
func startBrowserScript(t *testing.T, env browserEnv, label, script string, cfg map[string]any,
	command func(name string, args ...string) *exec.Cmd, together bool) *browserScript {
	t.Helper()
	dir := t.TempDir()
	s := &browserScript{label: label, profiles: filepath.Join(dir, "profiles"), exited: make(chan struct{})}
	if err := os.Mkdir(s.profiles, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg["modules"], cfg["chromium"], cfg["userDataDir"] = env.modules, env.chromium, s.profiles
	if together {
		s.ready, s.release = filepath.Join(dir, "ready"), filepath.Join(dir, "release")
		cfg["readyFile"], cfg["releaseFile"] = s.ready, s.release
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd = command("node", filepath.Join(env.repo, "test", "e2e", "browser", script), cfgPath)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	s.started = time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		s.stopped = time.Now()
		close(s.exited)
	}()
	t.Cleanup(func() { s.end(t) })
	return s
}

// isReady reports whether the script wrote its readyFile.
func (s *browserScript) isReady() bool {
	if s.ready == "" {
		return false
	}
	_, err := os.Stat(s.ready)
	return err == nil
}

// done reports whether the script has exited.
func (s *browserScript) done() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// wait waits up to d for the script to exit and reports whether it did.
func (s *browserScript) wait(d time.Duration) bool {
	select {
	case <-s.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// stop ends the script's process group: SIGTERM (the scripts close
// Chromium on it), SIGKILL after 10 s.
func (s *browserScript) stop(t *testing.T) {
	if s.done() {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	if !s.wait(10 * time.Second) {
		t.Logf("%s: script did not stop within 10 s of SIGTERM", s.label)
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// end stops the script, kills what is left of its group and of its
// Chromium processes.
func (s *browserScript) end(t *testing.T) {
	s.endOnce.Do(func() {
		s.stop(t)
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) // stragglers of the group
		killProfileProcesses(t, s.profiles)
	})
}

// report decodes the script's JSON report into out.
func (s *browserScript) report(t *testing.T, out any) {
	t.Helper()
	if err := json.Unmarshal(bytes.TrimSpace(s.stdout.Bytes()), out); err != nil {
		t.Fatalf("%s: %v (%v)\nstdout: %s\nstderr: %s", s.label, s.err, err, s.stdout.String(), s.stderr.tail(40))
	}
}

// killProfileProcesses kills processes whose command line names profile (a
// Chromium run.mjs could not close); the profile is unique to one run, so
// nothing else can match.
func killProfileProcesses(t *testing.T, profile string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(profile)) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		t.Logf("killing leftover browser process %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// checkPages asserts that every page decoded video and received audio from
// the others, logs the numbers, and returns the results by label.
func checkPages(t *testing.T, res browserResult) map[string]pageResult {
	t.Helper()
	t.Logf("chromium launch %d ms, whole run %d ms", res.LaunchMs, res.TotalMs)
	if res.Error != "" {
		t.Errorf("run.mjs: %s", res.Error)
	}
	if res.TimedOut {
		t.Errorf("media did not flow within %s", browserRunTimeout)
	}
	byLabel := make(map[string]pageResult, len(res.Pages))
	for _, p := range res.Pages {
		byLabel[p.Label] = p
		t.Logf("page %s (%s, %s): joined at %s, first decoded frame at %s, first audio packet at %s ms after page load "+
			"(first frame %s ms after joining); %d frames decoded, %d audio packets",
			p.Label, p.Kind, p.Identity, ms(p.T, "joined"), ms(p.T, "firstDecodedFrame"), ms(p.T, "firstAudioPacket"),
			sinceJoin(p.T, "firstDecodedFrame"), p.FramesDecoded, p.AudioPackets)
		if p.Error != nil && *p.Error != "" {
			t.Errorf("page %s: error %q", p.Label, *p.Error)
		}
		if !p.Joined {
			t.Errorf("page %s: not joined (state %q)", p.Label, p.State)
		}
		if p.FramesDecoded <= 0 {
			t.Errorf("page %s: decoded no remote video frame", p.Label)
		}
		if p.AudioPackets <= 0 {
			t.Errorf("page %s: received no remote audio packet", p.Label)
		}
		if t.Failed() && len(p.Log) > 0 {
			t.Logf("page %s console:\n  %s", p.Label, strings.Join(p.Log, "\n  "))
		}
	}
	for _, p := range res.Pages {
		for _, o := range res.Pages {
			if o.Label != p.Label && o.Identity != "" && !slices.Contains(p.Remotes, o.Identity) {
				t.Errorf("page %s does not see %s (%s); it sees %v", p.Label, o.Label, o.Identity, p.Remotes)
			}
		}
	}
	return byLabel
}

func ms(t map[string]float64, k string) string {
	v, ok := t[k]
	if !ok {
		return "never"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// sinceJoin is how long after joining the page saw event k.
func sinceJoin(t map[string]float64, k string) string {
	j, ok1 := t["joined"]
	v, ok2 := t[k]
	if !ok1 || !ok2 {
		return "never"
	}
	return strconv.FormatFloat(v-j, 'f', 0, 64)
}

// TestBrowserTwoPages joins two Chromium pages running livekit-client to one
// room on a node, one publishing simulcast video and one a single layer, and
// checks that each decodes the other's video and receives its audio.
func TestBrowserTwoPages(t *testing.T) {
	env := findBrowserEnv(t, false)
	n := StartNode(t, NodeOptions{})
	client := serveClientPage(t, env)
	const room = "e2e-browser-two"
	res := runBrowser(t, env, []browserPage{
		{Label: "simulcast", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "alice"), Simulcast: true},
		{Label: "single", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "bob"), Simulcast: false},
	})
	pages := checkPages(t, res)
	if len(pages) != 2 {
		t.Fatalf("want 2 page results, got %d", len(pages))
	}
	// Chromium answers the node's offers as the DTLS client, so the node
	// learns the SRTP keys and sends both pages' media itself (media/direct.go),
	// with AES-GCM.
	logs := n.Logs()
	if got := strings.Count(logs, "subscriber media sent directly"); got != 2 || !strings.Contains(logs, "SRTP_AEAD_AES_128_GCM") {
		t.Fatalf("want both subscriber connections on the direct path with AES-GCM, got %d:\n%s", got, logs)
	}
}

// TestBrowserJoinPage opens the node's own join page with ?room=, types a
// name, clicks Join, and checks that it and a livekit-client page in the same
// room see and hear each other, and that the page shows a tile for the other.
func TestBrowserJoinPage(t *testing.T) {
	env := findBrowserEnv(t, true)
	n := StartNode(t, NodeOptions{})
	client := serveClientPage(t, env)
	const room = "e2e-browser-joinpage"
	res := runBrowser(t, env, []browserPage{
		{Label: "joinpage", Kind: "joinpage", URL: n.HTTPURL + "/?room=" + room, Name: "Joan"},
		{Label: "client", Kind: "client", URL: client, WSURL: n.WSURL, Token: n.Token(t, room, "carol"), Simulcast: true},
	})
	pages := checkPages(t, res)
	jp := pages["joinpage"]
	if !strings.HasPrefix(jp.Identity, "guest-") {
		t.Errorf("join page identity %q, want a guest- identity from /api/join", jp.Identity)
	}
	var self, other bool
	for _, tile := range jp.Tiles {
		switch tile.Identity {
		case jp.Identity:
			self = tile.Name == "Joan (you)" && tile.HasVideo
		case "carol":
			other = tile.Name == "carol" && tile.HasVideo
		}
	}
	if !self || !other {
		t.Errorf("join page tiles %+v: want Joan (you) and carol, both with video", jp.Tiles)
	}
}
