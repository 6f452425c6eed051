package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"github.com/pion/rtp"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	_ "github.com/mattn/go-sqlite3" // read the node's store from the tests
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/appservice"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/dendritetest"
)

// The Matrix end-to-end tests run the real binary with a [matrix] section,
// registered (by `entente register`) as the application service of a real
// Dendrite, and real LiveKit clients holding the tokens its token service
// issues. A recording proxy sits between Dendrite and the node's
// appservice listener, so that the tests can replay what Dendrite really
// sent.

// matrixNode is a node with its Matrix side, and the homeserver it serves.
type matrixNode struct {
	*Node
	hs  *dendritetest.Homeserver // nil when the test plays the homeserver
	reg *appservice.Registration
	// bot is the node's bot user ID.
	bot string
	// asURL is the node's appservice listener, reached directly.
	asURL string
	txns  *txnRecorder
}

type matrixNodeOptions struct {
	// withoutDendrite starts no homeserver: the test sends transactions
	// itself (the node's bot then never gets registered, which is harmless).
	withoutDendrite bool
	// openIDLifetime is Dendrite's OpenID token lifetime (an hour if zero).
	openIDLifetime time.Duration
	// extraMatrix is appended to the [matrix] section.
	extraMatrix string
	// extraTOML follows the [matrix] section (other sections).
	extraTOML string
	// homeserver, when set, is a Dendrite made with dendritetest.New and
	// not started yet (its server name was needed before the node's
	// configuration was written); startMatrixNode starts it.
	homeserver *dendritetest.Homeserver
	// logLevel is the node's log level ("debug" if empty).
	logLevel string
	// federationProxy puts a web server in front of Dendrite's federation
	// port that routes MSC4195's server-server get_token to the node, as
	// docs/matrix.md asks of an agency (dendritetest.Options.FederationProxy).
	federationProxy bool
}

// startMatrixNode writes the registration with `entente register`, starts
// the node, then Dendrite with the registration installed (node first, as
// docs/matrix.md says: Dendrite backs off from an appservice that does not
// answer), and waits for the node's bot.
func startMatrixNode(t *testing.T, opts matrixNodeOptions) *matrixNode {
	t.Helper()
	var hs *dendritetest.Homeserver
	serverName, homeserverURL := "127.0.0.1:1", fmt.Sprintf("http://127.0.0.1:%d", FreePort(t, "tcp"))
	if !opts.withoutDendrite {
		hs = opts.homeserver
		if hs == nil {
			hs = dendritetest.New(t)
		}
		serverName, homeserverURL = hs.ServerName, hs.ClientURL
	}
	dir := t.TempDir()
	regPath := filepath.Join(dir, "registration.yaml")
	asListen := fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp"))
	m := &matrixNode{hs: hs, asURL: "http://" + asListen, txns: &txnRecorder{}}
	proxy := m.txns.proxy(t, m.asURL)
	section := fmt.Sprintf(`
[matrix]
homeserver_url = %q
server_name = %q
registration = %q
appservice_listen = %q
appservice_url = %q
insecure_skip_verify = true
%s
`, homeserverURL, serverName, regPath, asListen, proxy, opts.extraMatrix)

	// The registration, as an admin would make it.
	regCfg := filepath.Join(dir, "register.toml")
	require.NoError(t, os.WriteFile(regCfg, []byte(section), 0o600))
	out, err := exec.Command(ententeBinary(t), "register", "--config", regCfg).CombinedOutput()
	require.NoError(t, err, "entente register: %s", out)
	m.reg, err = appservice.LoadRegistration(regPath)
	require.NoError(t, err)
	require.Equal(t, proxy, m.reg.URL, "the registration points the homeserver at appservice_url")
	m.bot = matrix.BotUserID(m.reg.SenderLocalpart, serverName)

	m.Node = StartNode(t, NodeOptions{ExtraTOML: section + opts.extraTOML, LogLevel: opts.logLevel})
	if hs != nil {
		if opts.federationProxy {
			hs.Route(matrix.PathFederationLiveKitGetToken, m.HTTPURL)
			hs.Route(matrix.PathFederationLiveKitGetTokenUnstable, m.HTTPURL)
		}
		hs.Start(t, dendritetest.Options{AppServices: []string{regPath}, OpenIDTokenLifetime: opts.openIDLifetime, FederationProxy: opts.federationProxy})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.True(t, m.WaitLog(ctx, "bot ready"), "the node registers its bot with Dendrite")
	}
	return m
}

// tokenAnswer is the token service's answer, or its Matrix error.
type tokenAnswer struct {
	Status  int
	URL     string `json:"url"`
	JWT     string `json:"jwt"`
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

// getToken asks the node's /get_token as Element Call does
// (openIDSFU.ts getLiveKitJWTWithDelayDelegation) for the room's call.
func (m *matrixNode) getToken(t *testing.T, u dendritetest.User, oid dendritetest.OpenID, roomID string) tokenAnswer {
	t.Helper()
	return m.postToken(t, matrix.PathGetToken, map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
		"member": map[string]any{"id": memberID(u), "claimed_user_id": u.ID, "claimed_device_id": u.DeviceID},
	})
}

// sfuGet asks the legacy /sfu/get (openIDSFU.ts getLiveKitJWT).
func (m *matrixNode) sfuGet(t *testing.T, u dendritetest.User, oid dendritetest.OpenID, roomID string) tokenAnswer {
	t.Helper()
	return m.postToken(t, matrix.PathSFUGet, map[string]any{"room": roomID, "openid_token": oid, "device_id": u.DeviceID})
}

func memberID(u dendritetest.User) string { return "member-" + u.DeviceID }

func (m *matrixNode) postToken(t *testing.T, path string, body any) tokenAnswer {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	resp, err := http.Post(m.HTTPURL+path, "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	var a tokenAnswer
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &a), "%s answered %d %q", path, resp.StatusCode, raw)
	a.Status = resp.StatusCode
	require.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"), "token service CORS")
	return a
}

// putTxn sends a transaction to the node's appservice listener as a
// homeserver would, and returns the status code.
func (m *matrixNode) putTxn(t *testing.T, txnID string, body []byte, hsToken string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, m.asURL+"/_matrix/app/v1/transactions/"+url.PathEscape(txnID), bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+hsToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// storeDB opens the node's SQLite store read-only (WAL lets it read while
// the node writes).
func storeDB(t *testing.T, dataDir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dataDir, "entente.db")+"?mode=ro&_busy_timeout=5000")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// membershipOf is the node's stored m.room.member state of userID in roomID
// ("" when none).
func membershipOf(t *testing.T, db *sql.DB, roomID, userID string) string {
	t.Helper()
	var m string
	err := db.QueryRow(`SELECT membership FROM matrix_memberships WHERE room_id = ? AND user_id = ?`, roomID, userID).Scan(&m)
	if err == sql.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	return m
}

func countRows(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(query, args...).Scan(&n))
	return n
}

// txnRecorder is a reverse proxy in front of the node's appservice listener
// that keeps every transaction the homeserver sent.
type txnRecorder struct {
	mu   sync.Mutex
	txns []recordedTxn
}

type recordedTxn struct {
	ID   string
	Body []byte
}

func (r *txnRecorder) proxy(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = nil
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if id, ok := strings.CutPrefix(req.URL.Path, "/_matrix/app/v1/transactions/"); ok && req.Method == http.MethodPut {
			body, err := io.ReadAll(req.Body)
			if err != nil {
				http.Error(w, "read", http.StatusBadRequest)
				return
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			r.mu.Lock()
			r.txns = append(r.txns, recordedTxn{ID: id, Body: body})
			r.mu.Unlock()
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// find returns the first recorded transaction holding an m.room.member
// event for userID with the given membership.
func (r *txnRecorder) find(userID, membership string) (recordedTxn, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, txn := range r.txns {
		var body struct {
			Events []struct {
				Type     string  `json:"type"`
				StateKey *string `json:"state_key"`
				Content  struct {
					Membership string `json:"membership"`
				} `json:"content"`
			} `json:"events"`
		}
		if json.Unmarshal(txn.Body, &body) != nil {
			continue
		}
		for _, e := range body.Events {
			if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == userID && e.Content.Membership == membership {
				return txn, true
			}
		}
	}
	return recordedTxn{}, false
}

// matrixClient is an sdkClient joined with a token from the node's token
// service, that also notices its own disconnection.
type matrixClient struct {
	*sdkClient
	disconnected chan struct{}
	reason       lksdk.DisconnectionReason
	discAt       time.Time
}

// connectMatrixClient joins the SFU at wsURL with jwt, counting what it
// receives like connectClient does.
func connectMatrixClient(t *testing.T, wsURL, jwt string) (*matrixClient, error) {
	t.Helper()
	c := &sdkClient{
		got: map[string]int{}, firstKey: map[string]bool{}, firstAt: map[string]time.Time{},
		subAt: map[string]time.Time{}, muted: map[string]bool{}, gone: map[string]bool{}, speakers: map[string]bool{},
		started: time.Now(),
	}
	mc := &matrixClient{sdkClient: c, disconnected: make(chan struct{})}
	var once sync.Once
	cb := &lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{
			OnTrackSubscribed: func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
				k := key(rp.Identity(), tr.Kind())
				c.mu.Lock()
				c.subAt[k] = time.Now()
				c.mu.Unlock()
				readTrack(&c.readers, tr, func(p *rtp.Packet) { c.count1(tr, k, p) })
			},
		},
		OnParticipantDisconnected: func(rp *lksdk.RemoteParticipant) {
			c.mu.Lock()
			c.gone[rp.Identity()] = true
			c.mu.Unlock()
		},
		OnDisconnectedWithReason: func(reason lksdk.DisconnectionReason) {
			once.Do(func() {
				c.mu.Lock()
				mc.reason, mc.discAt = reason, time.Now()
				c.mu.Unlock()
				close(mc.disconnected)
			})
		},
	}
	r, err := lksdk.ConnectToRoomWithToken(wsURL, jwt, cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		return nil, err
	}
	c.room = r
	c.identity = r.LocalParticipant.Identity()
	t.Cleanup(func() { r.Disconnect(); c.readers.Wait() })
	return mc, nil
}

// stillConnected fails the test if c is disconnected within d.
func (c *matrixClient) stillConnected(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case <-c.disconnected:
		t.Fatalf("%s was disconnected (%v): %s", c.identity, c.reason, why)
	case <-time.After(d):
	}
}

// TestMatrixCall runs an Element-style call through the real binary: two
// Dendrite users in a room get LiveKit tokens from the node's token service
// (with OpenID tokens their homeserver issued) and exchange media; outsiders
// and bad OpenID tokens are refused; a kicked user is disconnected; a wrong
// hs_token and a replayed transaction change nothing.
func TestMatrixCall(t *testing.T) {
	const openIDLifetime = 3 * time.Second
	m := startMatrixNode(t, matrixNodeOptions{openIDLifetime: openIDLifetime})
	hs := m.hs
	db := storeDB(t, m.DataDir)
	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })

	alice, bob, carol := hs.Register(t, "alice"), hs.Register(t, "bob"), hs.Register(t, "carol")
	room := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{m.bot, bob.ID}})
	hs.Join(t, bob, room)
	eventually(t, 10*time.Second, "the bot accepts alice's invitation", func() bool { return hs.IsJoined(t, alice, room, m.bot) })

	// An OpenID token to let expire while the call runs.
	staleOID, staleAt := hs.OpenIDToken(t, alice), time.Now()

	// Alice asks /get_token (matrix_2_0 style), Bob the legacy /sfu/get;
	// both land in the LiveKit room of the Matrix room's call.
	type joined struct {
		c       *matrixClient
		askedAt time.Time
	}
	join := func(u dendritetest.User, legacy bool) joined {
		oid := hs.OpenIDToken(t, u)
		asked := time.Now()
		var a tokenAnswer
		if legacy {
			a = m.sfuGet(t, u, oid, room)
		} else {
			a = m.getToken(t, u, oid, room)
		}
		require.Equal(t, http.StatusOK, a.Status, "%s: %s %s", u.ID, a.ErrCode, a.Error)
		require.Equal(t, m.WSURL, a.URL)
		c, err := connectMatrixClient(t, a.URL, a.JWT)
		require.NoError(t, err, "%s joins the SFU", u.ID)
		c.publish(t, ctx, &gens)
		return joined{c, asked}
	}
	aj, bj := join(alice, false), join(bob, true)
	aliceID, bobID := matrix.Identity(alice.ID, alice.DeviceID, memberID(alice)), matrix.LegacyIdentity(bob.ID, bob.DeviceID)
	require.Equal(t, aliceID, aj.c.identity, "/get_token identity as lk-jwt-service computes it")
	require.Equal(t, bobID, bj.c.identity, "/sfu/get identity @user:server:DEVICE")
	require.Equal(t, matrix.RoomAlias(room, "m.call#ROOM"), aj.c.room.Name())
	require.Equal(t, aj.c.room.Name(), bj.c.room.Name())
	for _, p := range []struct {
		rx     joined
		from   string
		rxName string
	}{{aj, bobID, "alice"}, {bj, aliceID, "bob"}} {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			k := key(p.from, kind)
			eventually(t, 20*time.Second, p.rxName+" receives "+kind.String(), func() bool { return p.rx.c.count(k) >= 50 })
			p.rx.c.mu.Lock()
			t.Logf("%s: first %s packet %v after asking the token service", p.rxName, kind, p.rx.c.firstAt[k].Sub(p.rx.askedAt).Round(time.Millisecond))
			p.rx.c.mu.Unlock()
		}
	}

	// Carol, not in the room, gets no token.
	a := m.getToken(t, carol, hs.OpenIDToken(t, carol), room)
	require.Equal(t, http.StatusForbidden, a.Status)
	require.Equal(t, "M_FORBIDDEN", a.ErrCode)
	a = m.sfuGet(t, carol, hs.OpenIDToken(t, carol), room)
	require.Equal(t, http.StatusForbidden, a.Status)

	// A forged OpenID token, and an expired one, are refused.
	forged := hs.OpenIDToken(t, alice)
	forged.AccessToken = strings.Repeat("x", len(forged.AccessToken))
	a = m.getToken(t, alice, forged, room)
	require.Equal(t, http.StatusUnauthorized, a.Status)
	require.Equal(t, "M_UNAUTHORIZED", a.ErrCode)
	time.Sleep(time.Until(staleAt.Add(openIDLifetime + 500*time.Millisecond)))
	a = m.getToken(t, alice, staleOID, room)
	require.Equal(t, http.StatusUnauthorized, a.Status, "expired OpenID token")
	require.Equal(t, "M_UNAUTHORIZED", a.ErrCode)

	// A token Bob keeps for later, unused.
	spare := m.sfuGet(t, bob, hs.OpenIDToken(t, bob), room)
	require.Equal(t, http.StatusOK, spare.Status)

	// Alice kicks Bob: the node hears it from Dendrite and disconnects him.
	kickedAt := time.Now()
	hs.Kick(t, alice, room, bob.ID)
	select {
	case <-bj.c.disconnected:
		t.Logf("kicked user disconnected %v after the kick (reason %v)", bj.c.discAt.Sub(kickedAt).Round(time.Millisecond), bj.c.reason)
	case <-time.After(10 * time.Second):
		t.Fatal("the kicked user is still connected 10 s after the kick")
	}
	eventually(t, 5*time.Second, "alice sees bob leave", func() bool {
		aj.c.mu.Lock()
		defer aj.c.mu.Unlock()
		return aj.c.gone[bobID]
	})
	require.Equal(t, "leave", membershipOf(t, db, room, bob.ID))
	kick, ok := m.txns.find(bob.ID, "leave")
	require.True(t, ok, "Dendrite sent the kick to the node")
	a = m.sfuGet(t, bob, hs.OpenIDToken(t, bob), room)
	require.Equal(t, http.StatusForbidden, a.Status, "a kicked user gets no new token")
	// Nor does the token he got before the kick let him back in: the node
	// checks the Matrix room again when a token it issued is used.
	_, err := connectMatrixClient(t, spare.URL, spare.JWT)
	require.Error(t, err, "a kicked user's unused token is refused")
	require.Contains(t, err.Error(), "participant not admitted")

	// Bob is invited back and rejoins the call.
	hs.Invite(t, alice, room, bob.ID)
	hs.Join(t, bob, room)
	eventually(t, 10*time.Second, "the node sees bob rejoin", func() bool { return membershipOf(t, db, room, bob.ID) == "join" })
	bj = join(bob, true)
	eventually(t, 20*time.Second, "bob receives alice again", func() bool { return bj.c.count(key(aliceID, webrtc.RTPCodecTypeVideo)) > 0 })

	// The kick again, from someone who does not hold the hs_token: 403,
	// nothing stored, nobody removed.
	txnsBefore := countRows(t, db, `SELECT count(*) FROM appservice_txns`)
	require.Equal(t, http.StatusForbidden, m.putTxn(t, "forged-kick", kick.Body, "not-the-hs-token-"+strings.Repeat("z", 40)))
	require.Equal(t, http.StatusUnauthorized, m.putTxn(t, "forged-kick", kick.Body, ""))
	bj.c.stillConnected(t, time.Second, "a transaction with a wrong hs_token")
	require.Equal(t, "join", membershipOf(t, db, room, bob.ID))
	require.Equal(t, txnsBefore, countRows(t, db, `SELECT count(*) FROM appservice_txns`))

	// Dendrite's own kick transaction, replayed with the right token: acknowledged, ignored.
	require.Equal(t, http.StatusOK, m.putTxn(t, kick.ID, kick.Body, m.reg.ServerToken))
	bj.c.stillConnected(t, time.Second, "a replayed transaction")
	require.Equal(t, "join", membershipOf(t, db, room, bob.ID))
	require.Equal(t, txnsBefore, countRows(t, db, `SELECT count(*) FROM appservice_txns`))

	// The same events under a new transaction ID do take effect: the
	// replay above was refused for being a replay, nothing else.
	require.Equal(t, http.StatusOK, m.putTxn(t, kick.ID+"-new", kick.Body, m.reg.ServerToken))
	select {
	case <-bj.c.disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("a new transaction with the kick did not disconnect bob")
	}
	require.Equal(t, "leave", membershipOf(t, db, room, bob.ID))
	aj.c.stillConnected(t, 100*time.Millisecond, "alice was never kicked")
}
