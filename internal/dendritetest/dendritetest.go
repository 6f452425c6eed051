// Package dendritetest starts throw-away Dendrite homeservers (v0.13.8) for
// the Matrix tests (bridge/matrix and the end-to-end tests in test/e2e): on
// free loopback ports, with fresh keys, a fresh data directory and optional
// appservice registrations, and stops them when the test ends.
//
// The binaries come from scripts/install-dendrite.sh (into .deps/bin, or
// $DENDRITE_BIN_DIR). Without them a test is skipped, unless CI=true, where
// it fails. It imports only the standard library: never media, bridge or
// web (internal/archtest).
package dendritetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

//go:embed dendrite.yaml.tmpl
var configTemplate string

// Homeserver is one running Dendrite.
type Homeserver struct {
	// ServerName is "127.0.0.1:<federation port>"; federation (HTTPS, self-
	// signed) listens there too.
	ServerName string
	// ClientURL is the client-server API base, "http://127.0.0.1:<port>".
	ClientURL string
	// Dir holds the keys, config, databases and dendrite.log.
	Dir string

	cmd    *exec.Cmd
	client *http.Client
	net    Net
	// fedBind is where Dendrite's federation listener binds: ServerName,
	// or behind the proxy a port of its own.
	fedBind string
	routeMu sync.Mutex
	routes  map[string]*url.URL
	opts    Options
	exited  chan struct{}
	logf    *os.File
}

// Net places a homeserver in a network of the test's own (a namespace of
// internal/netnstest) instead of on loopback.
type Net struct {
	// Host is the address it listens on and names itself by: the server
	// name is Host:8448, the client API http://Host:8008.
	Host string
	// Command makes a command run in that network.
	Command func(name string, args ...string) *exec.Cmd
	// Dial dials from inside it (the test's own client API calls).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// User is a registered account.
type User struct {
	ID       string
	Token    string
	DeviceID string
	// Password logs it in again (a browser client does).
	Password string
}

// OpenID is an OpenID token as POST /openid/request_token returns it.
type OpenID struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// Options configures Start.
type Options struct {
	// AppServices are registration files (made absolute by Start).
	AppServices []string
	// OpenIDTokenLifetime is how long OpenID tokens stay valid; an hour
	// when zero. Tests of expired tokens set it short.
	OpenIDTokenLifetime time.Duration
	// FederationProxy puts a reverse proxy in front of the federation
	// listener, as an agency's web server would be: it holds the server
	// name's port and passes everything to Dendrite (on a port of its
	// own) except the paths given to Route. Loopback homeservers only.
	FederationProxy bool
}

// BinDir returns the directory holding dendrite, generate-keys and
// create-account: $DENDRITE_BIN_DIR, else <repository root>/.deps/bin.
func BinDir() string {
	if d := os.Getenv("DENDRITE_BIN_DIR"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ".deps/bin"
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".deps", "bin")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ".deps/bin"
		}
		dir = parent
	}
}

// Require returns BinDir when the Dendrite binaries are there. Otherwise it
// skips the test, or fails it when CI=true.
func Require(t testing.TB) string {
	t.Helper()
	bin := BinDir()
	for _, name := range []string{"dendrite", "generate-keys"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			msg := fmt.Sprintf("dendrite binaries not found in %s (run scripts/install-dendrite.sh)", bin)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return bin
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	return PickPort(t, "tcp")
}

// handedOut are the ports PickPort gave in this process: a port chosen
// for a server that starts later (a Dendrite is given its ports before the
// node beside it starts) is never given twice. A test helper's process-wide
// record, not the node's: the node has no globals.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// handOut records port as given and reports whether it was free to give.
func handOut(port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

// PickPort returns a port of network ("tcp" or "udp") on 127.0.0.1 that was
// free a moment ago, chosen at random below Linux's ephemeral range
// (32768-60999), and never one it gave before in this process. A port the
// kernel hands out (":0", or the source port of any outgoing connection)
// may be taken by another connection between the test choosing it and its
// server binding it, and a port given to a Dendrite that starts after the
// node beside it must not be given to that node: both made Dendrite fail to
// start in CI ("address already in use").
func PickPort(t testing.TB, network string) int {
	t.Helper()
	const lo, hi = 10000, 32000
	for range 500 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		port := lo + (int(b[0])<<8|int(b[1]))%(hi-lo)
		if !handOut(port) {
			continue // given to an earlier caller, which may not have bound it yet
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if network == "udp" {
			c, err := net.ListenPacket("udp", addr)
			if err == nil {
				_ = c.Close()
				return port
			}
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatalf("no free %s port found in %d-%d", network, lo, hi)
	return 0
}

// Start is New followed by Homeserver.Start.
func Start(t testing.TB, opts Options) *Homeserver {
	t.Helper()
	hs := New(t)
	hs.Start(t, opts)
	return hs
}

// New picks the ports and data directory of a Dendrite without starting it,
// so that its ServerName is known before its appservice registrations are
// written.
func New(t testing.TB) *Homeserver {
	t.Helper()
	Require(t)
	fedPort, clientPort := FreePort(t), FreePort(t)
	hs := &Homeserver{
		ServerName: "127.0.0.1:" + strconv.Itoa(fedPort),
		ClientURL:  "http://127.0.0.1:" + strconv.Itoa(clientPort),
		Dir:        t.TempDir(),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test server
		}},
	}
	hs.generateKeys(t)
	return hs
}

// NewIn is New for a homeserver in the network n.
func NewIn(t testing.TB, n Net) *Homeserver {
	t.Helper()
	Require(t)
	return &Homeserver{
		ServerName: n.Host + ":8448",
		ClientURL:  "http://" + n.Host + ":8008",
		Dir:        t.TempDir(),
		net:        n,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext:     n.Dial,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test server
		}},
	}
}

// command is exec.Command in the homeserver's network.
func (hs *Homeserver) command(name string, args ...string) *exec.Cmd {
	if hs.net.Command != nil {
		return hs.net.Command(name, args...)
	}
	return exec.Command(name, args...)
}

// Start launches the Dendrite and waits until both its client and federation
// listeners answer. It is stopped (SIGTERM, then SIGKILL) when t ends; its
// log is printed if t failed.
func (hs *Homeserver) Start(t testing.TB, opts Options) {
	t.Helper()
	Require(t)
	dir := hs.Dir
	hs.generateKeys(t)
	hs.fedBind = hs.ServerName
	if opts.FederationProxy {
		hs.startProxy(t)
	}
	var regs []string
	for _, f := range opts.AppServices {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, strconv.Quote(abs))
	}
	openIDLifetime := opts.OpenIDTokenLifetime
	if openIDLifetime <= 0 {
		openIDLifetime = time.Hour
	}
	cfg := strings.NewReplacer("{{SERVER_NAME}}", hs.ServerName, "{{DIR}}", dir,
		"{{APPSERVICES}}", strings.Join(regs, ", "),
		"{{OPENID_LIFETIME_MS}}", strconv.FormatInt(openIDLifetime.Milliseconds(), 10)).Replace(configTemplate)
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hs.opts = opts
	hs.launch(t)
	t.Cleanup(func() {
		hs.stop()
		_ = hs.logf.Close()
		hs.client.CloseIdleConnections()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dendrite.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- dendrite %s log tail:\n%s", hs.ServerName, b)
		}
	})
	hs.waitReady(t)
}

// SigningKeyFile is the homeserver's federation signing key (Dendrite's
// matrix_key.pem), made when the homeserver is made (New), so that a
// program configured before the homeserver starts can be given it.
func (hs *Homeserver) SigningKeyFile() string { return filepath.Join(hs.Dir, "matrix_key.pem") }

// generateKeys makes the signing key and the TLS certificate once.
func (hs *Homeserver) generateKeys(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(hs.SigningKeyFile()); err == nil {
		return
	}
	out, err := exec.Command(filepath.Join(BinDir(), "generate-keys"),
		"--private-key", hs.SigningKeyFile(),
		"--tls-cert", filepath.Join(hs.Dir, "server.crt"),
		"--tls-key", filepath.Join(hs.Dir, "server.key"),
		"--keysize", "2048").CombinedOutput()
	if err != nil {
		t.Fatalf("generate-keys: %v\n%s", err, out)
	}
}

// Route sends the federation requests for path, through the proxy
// (Options.FederationProxy), to target (scheme and host; the path is
// kept), as an agency's web server routes MSC4195's server-server paths to
// its node.
func (hs *Homeserver) Route(path, target string) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		panic(fmt.Sprintf("dendritetest: route target %q", target))
	}
	hs.routeMu.Lock()
	defer hs.routeMu.Unlock()
	if hs.routes == nil {
		hs.routes = map[string]*url.URL{}
	}
	hs.routes[path] = u
}

// startProxy listens on the server name's port with the homeserver's
// certificate and passes requests to Dendrite, which moves to a port of
// its own, or to a routed target.
func (hs *Homeserver) startProxy(t testing.TB) {
	t.Helper()
	if hs.net.Command != nil {
		t.Fatal("dendritetest: FederationProxy is for loopback homeservers")
	}
	hs.fedBind = "127.0.0.1:" + strconv.Itoa(FreePort(t))
	cert, err := tls.LoadX509KeyPair(filepath.Join(hs.Dir, "server.crt"), filepath.Join(hs.Dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", hs.ServerName, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	dendrite := &url.URL{Scheme: "https", Host: hs.fedBind}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the test's own Dendrite
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			hs.routeMu.Lock()
			target, ok := hs.routes[r.In.URL.Path]
			hs.routeMu.Unlock()
			if !ok {
				target = dendrite
			}
			r.SetURL(target)
			r.Out.Host = r.In.Host // the server name, as the origin signed it
		},
		Transport: tr,
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		tr.CloseIdleConnections()
	})
}

// launch starts the process (its log appended to dendrite.log).
func (hs *Homeserver) launch(t testing.TB) {
	t.Helper()
	bin, dir := BinDir(), hs.Dir
	logf, err := os.OpenFile(filepath.Join(dir, "dendrite.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if hs.logf != nil {
		_ = hs.logf.Close()
	}
	hs.logf = logf
	// Both bind flags always: the defaults listen on every interface.
	hs.cmd = hs.command(filepath.Join(bin, "dendrite"),
		"-config", filepath.Join(dir, "dendrite.yaml"),
		"-http-bind-address", strings.TrimPrefix(hs.ClientURL, "http://"),
		"-https-bind-address", hs.fedBind,
		"-tls-cert", filepath.Join(dir, "server.crt"),
		"-tls-key", filepath.Join(dir, "server.key"),
		"-really-enable-open-registration")
	hs.cmd.Dir, hs.cmd.Stdout, hs.cmd.Stderr = dir, logf, logf
	hs.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := hs.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, cmd := make(chan struct{}), hs.cmd
	hs.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
}

// stop ends the process: SIGTERM, then SIGKILL after 10 s.
func (hs *Homeserver) stop() {
	_ = hs.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-hs.exited:
	case <-time.After(10 * time.Second):
		_ = hs.cmd.Process.Kill()
		<-hs.exited
	}
}

// waitReady waits until both listeners answer.
func (hs *Homeserver) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !hs.ready() {
		select {
		case <-hs.exited:
			b, _ := os.ReadFile(filepath.Join(hs.Dir, "dendrite.log"))
			t.Fatalf("dendrite exited during start-up:\n%s", b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dendrite %s not ready after 60s", hs.ServerName)
		}
	}
}

// Restart stops the homeserver (SIGTERM; its databases stay) and starts it
// again, waiting until it answers.
func (hs *Homeserver) Restart(t testing.TB) {
	t.Helper()
	hs.stop()
	hs.client.CloseIdleConnections()
	hs.launch(t)
	hs.waitReady(t)
}

func (hs *Homeserver) ready() bool {
	for _, u := range []string{hs.ClientURL + "/_matrix/client/versions", "https://" + hs.ServerName + "/_matrix/key/v2/server"} {
		resp, err := hs.client.Get(u)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return true
}

// Do calls the client-server API and decodes the JSON answer, if any, into
// out (which may be nil). It returns the status code.
func (hs *Homeserver) Do(t testing.TB, method, path, token string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, hs.ClientURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hs.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: status %d, answer %q: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// MustDo is Do that fails the test unless the status is 200.
func (hs *Homeserver) MustDo(t testing.TB, method, path, token string, body, out any) {
	t.Helper()
	var raw json.RawMessage
	if code := hs.Do(t, method, path, token, body, &raw); code != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, path, code, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
	}
}

// Register creates an account (open registration) and logs it in.
func (hs *Homeserver) Register(t testing.TB, localpart string) User {
	t.Helper()
	var r struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	password := localpart + "-password-123"
	hs.MustDo(t, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": localpart, "password": password,
		"auth": map[string]any{"type": "m.login.dummy"},
	}, &r)
	return User{ID: r.UserID, Token: r.AccessToken, DeviceID: r.DeviceID, Password: password}
}

// RegisterAppServiceUser registers a user in an appservice's namespace
// (m.login.application_service with its as_token). Dendrite lets an
// appservice act as such a user (?user_id=) only after this.
func (hs *Homeserver) RegisterAppServiceUser(t testing.TB, asToken, localpart string) {
	t.Helper()
	var raw json.RawMessage
	code := hs.Do(t, "POST", "/_matrix/client/v3/register", asToken, map[string]any{
		"type": "m.login.application_service", "username": localpart, "inhibit_login": true,
	}, &raw)
	if code != http.StatusOK && !strings.Contains(string(raw), "M_USER_IN_USE") {
		t.Fatalf("register appservice user %s: status %d: %s", localpart, code, raw)
	}
}

// OpenIDToken asks the homeserver for an OpenID token for u.
func (hs *Homeserver) OpenIDToken(t testing.TB, u User) OpenID {
	t.Helper()
	var o OpenID
	hs.MustDo(t, "POST", "/_matrix/client/v3/user/"+url.PathEscape(u.ID)+"/openid/request_token", u.Token, map[string]any{}, &o)
	return o
}

// CreateRoom creates a room as u with the given createRoom body and returns
// its ID. Call members may send org.matrix.msc3401.call.member state.
func (hs *Homeserver) CreateRoom(t testing.TB, u User, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	if _, ok := body["power_level_content_override"]; !ok {
		body["power_level_content_override"] = map[string]any{
			"events": map[string]any{"org.matrix.msc3401.call.member": 0},
		}
	}
	var r struct {
		RoomID string `json:"room_id"`
	}
	hs.MustDo(t, "POST", "/_matrix/client/v3/createRoom", u.Token, body, &r)
	return r.RoomID
}

// Invite invites userID to roomID as u.
func (hs *Homeserver) Invite(t testing.TB, u User, roomID, userID string) {
	t.Helper()
	hs.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", u.Token,
		map[string]any{"user_id": userID}, nil)
}

// Join joins u to roomID (an invite or a public room is needed).
func (hs *Homeserver) Join(t testing.TB, u User, roomID string) {
	t.Helper()
	hs.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), u.Token, map[string]any{}, nil)
}

// IsJoined reports whether userID is joined to roomID, as u (a member) sees
// it.
func (hs *Homeserver) IsJoined(t testing.TB, u User, roomID, userID string) bool {
	t.Helper()
	var r struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	hs.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", u.Token, nil, &r)
	_, ok := r.Joined[userID]
	return ok
}

// Kick removes userID from roomID as u.
func (hs *Homeserver) Kick(t testing.TB, u User, roomID, userID string) {
	t.Helper()
	hs.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/kick", u.Token,
		map[string]any{"user_id": userID, "reason": "test"}, nil)
}

// SendState sets a state event as u and returns its event ID.
func (hs *Homeserver) SendState(t testing.TB, u User, roomID, evType, stateKey string, content any) string {
	t.Helper()
	var r struct {
		EventID string `json:"event_id"`
	}
	hs.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+url.PathEscape(evType)+"/"+url.PathEscape(stateKey),
		u.Token, content, &r)
	return r.EventID
}
