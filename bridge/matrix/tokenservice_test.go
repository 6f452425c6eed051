package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

type mintCall struct {
	room, identity, name string
	grant                Grant
}

type fakeSFU struct {
	mu       sync.Mutex
	rooms    map[string]bool
	mints    []mintCall
	ensured  []string
	removed  []string
	failMint bool
}

func newFakeSFU() *fakeSFU { return &fakeSFU{rooms: map[string]bool{}} }

func (f *fakeSFU) MintToken(room, identity, name string, grant Grant) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failMint {
		return "", errors.New("boom")
	}
	f.mints = append(f.mints, mintCall{room, identity, name, grant})
	return "jwt." + room, nil
}

func (f *fakeSFU) RoomExists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rooms[name]
}

func (f *fakeSFU) EnsureRoom(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rooms[name] = true
	f.ensured = append(f.ensured, name)
	return nil
}

func (f *fakeSFU) RemoveParticipant(room, identity string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, room+"/"+identity)
	return nil
}

// fakeOpenID maps "server/token" to a user ID.
type fakeOpenID struct {
	mu    sync.Mutex
	users map[string]string
	calls int
	err   error
}

func (f *fakeOpenID) UserInfo(_ context.Context, serverName, accessToken string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return "", f.err
	}
	u, ok := f.users[serverName+"/"+accessToken]
	if !ok {
		return "", ErrOpenIDRejected
	}
	return u, nil
}

// fakeMembers maps "room/user" to joined.
type fakeMembers struct {
	joined map[string]bool
	err    error
}

func (f *fakeMembers) IsJoined(_ context.Context, roomID, userID string) (bool, error) {
	if f.err != nil {
		return false, f.err
	}
	return f.joined[roomID+"/"+userID], nil
}

type tsFixture struct {
	sfu     *fakeSFU
	openid  *fakeOpenID
	members *fakeMembers
	svc     *TokenService
}

func newTSFixture(t *testing.T) *tsFixture {
	t.Helper()
	f := &tsFixture{
		sfu: newFakeSFU(),
		openid: &fakeOpenID{users: map[string]string{
			"example.com/tok-alice": "@alice:example.com",
			"remote.org/tok-bob":    "@bob:remote.org",
			"other.net/tok-eve":     "@eve:other.net",
		}},
		members: &fakeMembers{joined: map[string]bool{
			"!roomid:example.com/@alice:example.com": true,
			"!roomid:example.com/@bob:remote.org":    true,
			"!roomid:example.com/@eve:other.net":     true,
		}},
	}
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: f.sfu, OpenID: f.openid, Membership: f.members,
		ServerName: "example.com", Allow: []string{"remote.org"},
		URL: "wss://rtc.example.com", Log: zerolog.Nop(),
	})
	require.NoError(t, err)
	f.svc = svc
	return f
}

func getTokenBody(room, slot, server, token, user, device, member string) string {
	b, _ := json.Marshal(map[string]any{
		"room_id": room, "slot_id": slot,
		"openid_token": map[string]any{"access_token": token, "token_type": "Bearer", "matrix_server_name": server, "expires_in": 3600},
		"member":       map[string]any{"id": member, "claimed_user_id": user, "claimed_device_id": device},
	})
	return string(b)
}

func sfuGetBody(room, server, token, device string) string {
	b, _ := json.Marshal(map[string]any{
		"room":         room,
		"openid_token": map[string]any{"access_token": token, "token_type": "Bearer", "matrix_server_name": server, "expires_in": 3600},
		"device_id":    device,
	})
	return string(b)
}

func do(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr
}

func requireMatrixError(t *testing.T, rr *httptest.ResponseRecorder, status int, errcode string) {
	t.Helper()
	require.Equal(t, status, rr.Code, rr.Body.String())
	var e struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	require.NoError(t, json.Unmarshal(rr.Body.Bytes(), &e), rr.Body.String())
	require.Equal(t, errcode, e.ErrCode)
	require.NotEmpty(t, e.Error)
	require.Equal(t, "application/json", rr.Header().Get("Content-Type"))
}

// The happy path with the inputs of MSC4195's test vectors, as
// lk-jwt-service get_token_test.go TestHandleGetToken_Success uses them.
// The token does not let its holder change its own metadata (nor, with
// it, the Matrix attributes), as lk-jwt-service grants no such thing.
func TestGetTokenLocalUser(t *testing.T) {
	f := newTSFixture(t)
	rr := do(f.svc, "POST", PathGetToken, getTokenBody("!roomid:example.com", "slot1234", "example.com", "tok-alice", "@alice:example.com", "DEVICE123", "memberABC"))
	require.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
	require.Equal(t, "*", rr.Header().Get("Access-Control-Allow-Origin"))
	var resp map[string]string
	require.NoError(t, json.Unmarshal(rr.Body.Bytes(), &resp))
	const room = "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
	require.Equal(t, map[string]string{"url": "wss://rtc.example.com", "jwt": "jwt." + room}, resp)
	require.Equal(t, []string{room}, f.sfu.ensured, "a local user creates the room")
	require.Equal(t, []mintCall{{
		room: room, identity: "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU", name: "@alice:example.com",
		grant: Grant{CanPublish: true, CanSubscribe: true, CanPublishData: true, CanUpdateOwnMetadata: false, TTL: DefaultTokenTTL,
			Attributes: map[string]string{AttrMatrixRoomID: "!roomid:example.com", AttrMatrixUserID: "@alice:example.com"}},
	}}, f.sfu.mints)
}

func TestSFUGetLocalUser(t *testing.T) {
	f := newTSFixture(t)
	rr := do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "DEVICE123"))
	require.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
	require.Len(t, f.sfu.mints, 1)
	require.Equal(t, RoomAlias("!roomid:example.com", "m.call#ROOM"), f.sfu.mints[0].room)
	require.Equal(t, "@alice:example.com:DEVICE123", f.sfu.mints[0].identity)
	require.Equal(t, []string{f.sfu.mints[0].room}, f.sfu.ensured)
}

func TestRemoteUserJoinsOnlyExistingRoom(t *testing.T) {
	f := newTSFixture(t)
	body := getTokenBody("!roomid:example.com", "m.call#ROOM", "remote.org", "tok-bob", "@bob:remote.org", "BOBDEV", "m1")
	requireMatrixError(t, do(f.svc, "POST", PathGetToken, body), http.StatusForbidden, "M_FORBIDDEN")
	require.Empty(t, f.sfu.ensured)
	require.Empty(t, f.sfu.mints)

	f.sfu.rooms[RoomAlias("!roomid:example.com", "m.call#ROOM")] = true
	rr := do(f.svc, "POST", PathGetToken, body)
	require.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
	require.Empty(t, f.sfu.ensured, "a remote user never creates a room")
	require.Equal(t, Identity("@bob:remote.org", "BOBDEV", "m1"), f.sfu.mints[0].identity)
}

func TestHomeserverNotAllowed(t *testing.T) {
	f := newTSFixture(t)
	body := getTokenBody("!roomid:example.com", "s", "other.net", "tok-eve", "@eve:other.net", "D", "m")
	requireMatrixError(t, do(f.svc, "POST", PathGetToken, body), http.StatusForbidden, "M_FORBIDDEN")
	requireMatrixError(t, do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "other.net", "tok-eve", "D")), http.StatusForbidden, "M_FORBIDDEN")
	require.Zero(t, f.openid.calls, "a homeserver outside the policy is never contacted")
}

func TestAllowAll(t *testing.T) {
	f := newTSFixture(t)
	svc, err := NewTokenService(TokenServiceOptions{SFU: f.sfu, OpenID: f.openid, Membership: f.members,
		ServerName: "example.com", Allow: []string{"*"}, URL: "ws://127.0.0.1:7880", Log: zerolog.Nop()})
	require.NoError(t, err)
	f.sfu.rooms[RoomAlias("!roomid:example.com", "s")] = true
	rr := do(svc, "POST", PathGetToken, getTokenBody("!roomid:example.com", "s", "other.net", "tok-eve", "@eve:other.net", "D", "m"))
	require.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
}

func TestAuthenticationFailures(t *testing.T) {
	f := newTSFixture(t)
	// Claimed user differs from the OpenID subject (lk-jwt-service
	// TestHandleGetToken_UnauthorizedUser).
	requireMatrixError(t, do(f.svc, "POST", PathGetToken,
		getTokenBody("!roomid:example.com", "s", "example.com", "tok-alice", "@mallory:example.com", "D", "m")),
		http.StatusUnauthorized, "M_UNAUTHORIZED")
	// Claimed user of another server than the token's.
	requireMatrixError(t, do(f.svc, "POST", PathGetToken,
		getTokenBody("!roomid:example.com", "s", "remote.org", "tok-bob", "@alice:example.com", "D", "m")),
		http.StatusUnauthorized, "M_UNAUTHORIZED")
	// Unknown (forged) token.
	requireMatrixError(t, do(f.svc, "POST", PathGetToken,
		getTokenBody("!roomid:example.com", "s", "example.com", "forged", "@alice:example.com", "D", "m")),
		http.StatusUnauthorized, "M_UNAUTHORIZED")
	requireMatrixError(t, do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "forged", "D")),
		http.StatusUnauthorized, "M_UNAUTHORIZED")
	// Homeserver unreachable.
	f.openid.err = fmt.Errorf("%w: dial", ErrOpenIDUnavailable)
	requireMatrixError(t, do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "D")),
		http.StatusServiceUnavailable, "M_UNKNOWN")
	require.Empty(t, f.sfu.mints)
}

func TestMembershipRequired(t *testing.T) {
	f := newTSFixture(t)
	requireMatrixError(t, do(f.svc, "POST", PathGetToken,
		getTokenBody("!other:example.com", "s", "example.com", "tok-alice", "@alice:example.com", "D", "m")),
		http.StatusForbidden, "M_FORBIDDEN")
	f.members.err = fmt.Errorf("%w: %w", ErrMembershipUnavailable, ErrBotNotInRoom)
	requireMatrixError(t, do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "D")),
		http.StatusForbidden, "M_FORBIDDEN")
	f.members.err = fmt.Errorf("%w: timeout", ErrMembershipUnavailable)
	requireMatrixError(t, do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "D")),
		http.StatusServiceUnavailable, "M_UNKNOWN")
	require.Empty(t, f.sfu.mints)
	require.Empty(t, f.sfu.ensured)
}

func TestMintFailure(t *testing.T) {
	f := newTSFixture(t)
	f.sfu.failMint = true
	requireMatrixError(t, do(f.svc, "POST", PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "D")),
		http.StatusInternalServerError, "M_UNKNOWN")
}

func TestRequestValidation(t *testing.T) {
	f := newTSFixture(t)
	good := getTokenBody("!roomid:example.com", "s", "example.com", "tok-alice", "@alice:example.com", "D", "m")
	cases := []struct {
		path, body string
		status     int
		errcode    string
	}{
		{PathGetToken, "{invalid json}", 400, "M_NOT_JSON"},
		{PathGetToken, good + "{}", 400, "M_NOT_JSON"},
		{PathGetToken, "[]", 400, "M_NOT_JSON"},
		{PathGetToken, `{"room_id":"!r:x"}`, 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "", "example.com", "t", "@a:example.com", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "s", "example.com", "t", "@a:example.com", "", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "s", "", "t", "@a:example.com", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "s", "example.com", "", "@a:example.com", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("r:x", "s", "example.com", "t", "@a:example.com", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "s", "example.com", "t", "alice", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "s\n", "example.com", "t", "@a:example.com", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, getTokenBody("!r:x", "s", "example.com/x", "t", "@a:example.com/x", "D", "m"), 400, "M_BAD_JSON"},
		{PathGetToken, strings.Replace(good, `"member"`, `"delay_id":"d","member"`, 1), 400, "M_BAD_JSON"},
		{PathSFUGet, `{"openid_token":{"access_token":"t","matrix_server_name":"example.com"}}`, 400, "M_BAD_JSON"},
		{PathSFUGet, `{"room":"!r:x","openid_token":{}}`, 400, "M_BAD_JSON"},
		{PathSFUGet, `{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"u@example.com"}}`, 400, "M_BAD_JSON"},
		{PathSFUGet, `{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"example.com"},"delay_timeout":5}`, 400, "M_BAD_JSON"},
		{PathSFUGet, `{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"example.com"},"device_id":"a\u0000"}`, 400, "M_BAD_JSON"},
		{PathSFUGet, `{"room":` + strings.Repeat(" ", maxRequestBody) + `"!r:x"}`, 413, "M_TOO_LARGE"},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			requireMatrixError(t, do(f.svc, "POST", c.path, c.body), c.status, c.errcode)
		})
	}
	require.Zero(t, f.openid.calls, "nothing invalid reaches the homeserver")
	// Unknown fields and the ignored delay fields are accepted, as newer
	// clients send them.
	withExtras := strings.Replace(good, `"member"`, `"future_field":1,"delay_id":"d","delay_timeout":5000,"delay_cs_api_url":"https://x","member"`, 1)
	require.Equal(t, http.StatusOK, do(f.svc, "POST", PathGetToken, withExtras).Code)
}

func TestCORSAndMethods(t *testing.T) {
	f := newTSFixture(t)
	for _, p := range []string{PathGetToken, PathSFUGet} {
		rr := do(f.svc, "OPTIONS", p, "")
		require.Equal(t, http.StatusOK, rr.Code)
		require.Equal(t, "*", rr.Header().Get("Access-Control-Allow-Origin"))
		require.Contains(t, rr.Header().Get("Access-Control-Allow-Methods"), "POST")
		require.Contains(t, rr.Header().Get("Access-Control-Allow-Headers"), "Content-Type")
		for _, m := range []string{"GET", "PUT", "DELETE", "PATCH"} {
			rr := do(f.svc, m, p, "")
			require.Equal(t, http.StatusMethodNotAllowed, rr.Code, m)
			require.Equal(t, "*", rr.Header().Get("Access-Control-Allow-Origin"))
		}
	}
	require.Equal(t, http.StatusOK, do(f.svc, "GET", PathHealthz, "").Code)
	require.Equal(t, http.StatusOK, do(f.svc, "HEAD", PathHealthz, "").Code)
	require.Equal(t, http.StatusMethodNotAllowed, do(f.svc, "POST", PathHealthz, "").Code)
	requireMatrixError(t, do(f.svc, "GET", "/nope", ""), http.StatusNotFound, "M_UNRECOGNIZED")
}

func TestNewTokenServiceValidates(t *testing.T) {
	_, err := NewTokenService(TokenServiceOptions{ServerName: "bad/name", Allow: []string{"x@y"}, URL: "https://x"})
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, s := range []string{"required", "server name", "allow", "url"} {
		require.Contains(t, err.Error(), s)
	}
}

// fakeRecord maps "room/user" to a recorded membership and lists the rooms
// whose creation was seen.
type fakeRecord struct {
	members map[string]string
	seen    map[string]bool
}

func (f *fakeRecord) MatrixRecordedMembership(_ context.Context, roomID, userID string) (string, bool, error) {
	return f.members[roomID+"/"+userID], f.seen[roomID], nil
}

// TestTokenMembershipUnknown: with the bot outside the room, the record
// and the unknown_membership policy decide, in that order; serve_local
// never serves another homeserver's user.
func TestTokenMembershipUnknown(t *testing.T) {
	const room, old = "!roomid:example.com", "!old:example.com"
	record := &fakeRecord{
		members: map[string]string{room + "/@alice:example.com": "join", room + "/@bob:remote.org": "leave"},
		seen:    map[string]bool{room: true},
	}
	for _, c := range []struct {
		name, policy, room, server, token, user string
		status                                  int
		unverified                              bool
	}{
		{"recorded member", "refuse", room, "example.com", "tok-alice", "@alice:example.com", 200, false},
		{"recorded leave", "serve_local", room, "remote.org", "tok-bob", "@bob:remote.org", 403, false},
		{"never in a room seen from creation", "serve_local", room, "other.net", "tok-eve", "@eve:other.net", 403, false},
		{"unknown room, refuse", "refuse", old, "example.com", "tok-alice", "@alice:example.com", 403, false},
		{"unknown room, serve_local", "serve_local", old, "example.com", "tok-alice", "@alice:example.com", 200, true},
		{"unknown room, serve_local, remote", "serve_local", old, "remote.org", "tok-bob", "@bob:remote.org", 403, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newTSFixture(t)
			f.members.err = fmt.Errorf("%w: %w", ErrMembershipUnavailable, ErrBotNotInRoom)
			f.sfu.rooms[RoomAlias(c.room, "m.call#ROOM")] = true // remote users join running calls only
			svc, err := NewTokenService(TokenServiceOptions{
				SFU: f.sfu, OpenID: f.openid, Membership: f.members, ServerName: "example.com",
				Allow: []string{"remote.org", "other.net"}, URL: "wss://rtc.example.com", Record: record,
				RecordCatchUp: time.Millisecond, UnknownMembership: c.policy, Log: zerolog.Nop(),
			})
			require.NoError(t, err)
			rr := do(svc, http.MethodPost, PathGetToken, getTokenBody(c.room, "m.call#ROOM", c.server, c.token, c.user, "DEV", "m"))
			if c.status != 200 {
				requireMatrixError(t, rr, c.status, "M_FORBIDDEN")
				require.Empty(t, f.sfu.mints)
				return
			}
			require.Equal(t, 200, rr.Code, rr.Body.String())
			require.Len(t, f.sfu.mints, 1)
			_, marked := f.sfu.mints[0].grant.Attributes[AttrMembershipUnverified]
			require.Equal(t, c.unverified, marked)
		})
	}
	_, err := NewTokenService(TokenServiceOptions{SFU: newFakeSFU(), OpenID: &fakeOpenID{}, Membership: &fakeMembers{},
		ServerName: "example.com", URL: "wss://rtc.example.com", UnknownMembership: "allow"})
	require.ErrorIs(t, err, ErrInvalidConfig)
}

// TestTokenRefusalLogged: every refusal is one log line with the room, the
// user and the reason the client got; the OpenID token never appears.
func TestTokenRefusalLogged(t *testing.T) {
	var buf syncBuffer
	f := newTSFixture(t)
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: f.sfu, OpenID: f.openid, Membership: f.members, ServerName: "example.com", Allow: []string{"remote.org"},
		URL: "wss://rtc.example.com", Log: zerolog.New(&buf),
	})
	require.NoError(t, err)
	for _, c := range []struct{ body, user, reason string }{
		{getTokenBody("!other:example.com", "m.call#ROOM", "example.com", "tok-alice", "@alice:example.com", "D", "m"),
			"@alice:example.com", "You are not joined to that Matrix room"},
		{sfuGetBody("!roomid:example.com", "other.net", "tok-eve", "D"), "", "This homeserver is not allowed to use this service"},
	} {
		path := PathGetToken
		if strings.Contains(c.body, `"room":`) {
			path = PathSFUGet
		}
		rr := do(svc, http.MethodPost, path, c.body)
		require.Equal(t, http.StatusForbidden, rr.Code, rr.Body.String())
		var line map[string]any
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &line))
		require.Equal(t, "token refused", line["message"])
		require.Equal(t, c.reason, line["reason"])
		require.NotEmpty(t, line["matrix_room"])
		if c.user != "" {
			require.Equal(t, c.user, line["user_id"])
		}
	}
	require.NotContains(t, buf.String(), "tok-alice")
	require.NotContains(t, buf.String(), "tok-eve")
}

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// failingMarker is a record that cannot mark unverified tokens.
type failingMarker struct{ fakeRecord }

func (failingMarker) MarkUnverifiedToken(context.Context, string, string, string, string, time.Time, time.Time) error {
	return errors.New("disk full")
}

// TestUnverifiedTokenNeedsItsMark: under serve_local, a token the call
// history cannot mark is not issued.
func TestUnverifiedTokenNeedsItsMark(t *testing.T) {
	f := newTSFixture(t)
	f.members.err = fmt.Errorf("%w: %w", ErrMembershipUnavailable, ErrBotNotInRoom)
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: f.sfu, OpenID: f.openid, Membership: f.members, ServerName: "example.com", URL: "wss://rtc.example.com",
		Record: &failingMarker{}, RecordCatchUp: time.Millisecond, UnknownMembership: UnknownMembershipServeLocal, Log: zerolog.Nop(),
	})
	require.NoError(t, err)
	rr := do(svc, http.MethodPost, PathGetToken, getTokenBody("!old:example.com", "m.call#ROOM", "example.com", "tok-alice", "@alice:example.com", "D", "m"))
	requireMatrixError(t, rr, http.StatusServiceUnavailable, "M_UNKNOWN")
	require.Empty(t, f.sfu.mints)
}
