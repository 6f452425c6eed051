package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// fakeForwarder stands for the federation node: remote.org runs a node
// that keeps its own token service URL.
type fakeForwarder struct {
	mu     sync.Mutex
	status int
	answer []byte
	err    error
	calls  []forwardCall
}

type forwardCall struct{ server, endpoint, body, roomID, mediaRoom string }

func (f *fakeForwarder) Forwards(server string) bool { return server == "remote.org" }

func (f *fakeForwarder) Forward(_ context.Context, server, endpoint string, body []byte, roomID, mediaRoom string) (int, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, forwardCall{server, endpoint, string(body), roomID, mediaRoom})
	return f.status, f.answer, f.err
}

func forwardingService(t *testing.T, f *tsFixture, fw TokenForwarder, log zerolog.Logger) *TokenService {
	t.Helper()
	svc, err := NewTokenService(TokenServiceOptions{
		SFU: f.sfu, OpenID: f.openid, Membership: f.members, ServerName: "example.com",
		Allow: []string{"remote.org", "other.net"}, URL: "wss://rtc.example.com", Forwarder: fw, Log: log,
	})
	require.NoError(t, err)
	return svc
}

// TestTokenForwardedToTheUsersNode: a user of a peer node that keeps its
// own URL gets that node's answer, unchanged and with CORS, and this node
// neither spends the OpenID token nor mints anything.
func TestTokenForwardedToTheUsersNode(t *testing.T) {
	f := newTSFixture(t)
	answer := []byte(`{"url":"wss://rtc.remote.org","jwt":"remote.jwt"}`)
	fw := &fakeForwarder{status: http.StatusOK, answer: answer}
	svc := forwardingService(t, f, fw, zerolog.Nop())
	for _, c := range []struct{ path, body, slot string }{
		{PathSFUGet, sfuGetBody("!roomid:example.com", "remote.org", "tok-bob", "BOBDEV"), LegacySlotID},
		{PathGetToken, getTokenBody("!roomid:example.com", "slot1", "remote.org", "tok-bob", "@bob:remote.org", "BOBDEV", "m1"), "slot1"},
	} {
		rr := do(svc, http.MethodPost, c.path, c.body)
		require.Equal(t, http.StatusOK, rr.Code)
		require.Equal(t, string(answer), rr.Body.String())
		require.Equal(t, "*", rr.Header().Get("Access-Control-Allow-Origin"))
		last := fw.calls[len(fw.calls)-1]
		require.Equal(t, forwardCall{"remote.org", c.path, c.body, "!roomid:example.com", RoomAlias("!roomid:example.com", c.slot)}, last)
	}
	require.Zero(t, f.openid.calls, "the OpenID token is left for the user's own node")
	require.Empty(t, f.sfu.mints)

	// A refusal of the user's node is passed on as it is.
	fw.status, fw.answer = http.StatusUnauthorized, []byte(`{"errcode":"M_UNAUTHORIZED","error":"no"}`)
	rr := do(svc, http.MethodPost, PathSFUGet, sfuGetBody("!roomid:example.com", "remote.org", "tok-bob", "BOBDEV"))
	requireMatrixError(t, rr, http.StatusUnauthorized, "M_UNAUTHORIZED")

	// Users of this node's server and of servers without a node are not forwarded.
	n := len(fw.calls)
	require.Equal(t, http.StatusOK, do(svc, http.MethodPost, PathSFUGet, sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "D")).Code)
	f.sfu.rooms[RoomAlias("!roomid:example.com", LegacySlotID)] = true
	require.Equal(t, http.StatusOK, do(svc, http.MethodPost, PathSFUGet, sfuGetBody("!roomid:example.com", "other.net", "tok-eve", "D")).Code)
	require.Len(t, fw.calls, n)
}

// TestTokenServedWhenTheUsersNodeIsSilent: no answer from the user's own
// node, and this node serves the user as it would without the redirect,
// and says so with the peer, the room and the user.
func TestTokenServedWhenTheUsersNodeIsSilent(t *testing.T) {
	var buf syncBuffer
	f := newTSFixture(t)
	f.sfu.rooms[RoomAlias("!roomid:example.com", LegacySlotID)] = true
	fw := &fakeForwarder{err: errors.New("no answer")}
	svc := forwardingService(t, f, fw, zerolog.New(&buf))
	rr := do(svc, http.MethodPost, PathSFUGet, sfuGetBody("!roomid:example.com", "remote.org", "tok-bob", "BOBDEV"))
	require.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
	var resp map[string]string
	require.NoError(t, json.Unmarshal(rr.Body.Bytes(), &resp))
	require.Equal(t, "wss://rtc.example.com", resp["url"])
	require.Equal(t, "@bob:remote.org:BOBDEV", f.sfu.mints[0].identity)
	require.Len(t, fw.calls, 1)
	var warned bool
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &line))
		if line["level"] == "warn" && line["peer"] == "remote.org" && line["user_id"] == "@bob:remote.org" &&
			line["matrix_room"] == "!roomid:example.com" && line["served"] == true {
			warned = true
		}
	}
	require.True(t, warned, buf.String())
}

// TestIssueForwarded: the user's own node verifies the OpenID token with
// its homeserver, checks membership, creates the mirror room and answers
// with its own SFU url and a token for that room, under the identity of
// the endpoint. Users of other servers are refused.
func TestIssueForwarded(t *testing.T) {
	f := newTSFixture(t)
	mirror := func(r string) string { return "mirror-of-" + r }
	status, body := f.svc.IssueForwarded(context.Background(), PathSFUGet,
		[]byte(sfuGetBody("!roomid:example.com", "example.com", "tok-alice", "DEV")), mirror)
	require.Equal(t, http.StatusOK, status, string(body))
	room := "mirror-of-" + RoomAlias("!roomid:example.com", LegacySlotID)
	require.JSONEq(t, `{"url":"wss://rtc.example.com","jwt":"jwt.`+room+`"}`, string(body))
	require.Equal(t, []string{room}, f.sfu.ensured)
	require.Equal(t, "@alice:example.com:DEV", f.sfu.mints[0].identity)
	require.True(t, f.sfu.mints[0].grant.CanPublish && f.sfu.mints[0].grant.CanSubscribe)

	status, body = f.svc.IssueForwarded(context.Background(), PathGetToken,
		[]byte(getTokenBody("!roomid:example.com", "s1", "example.com", "tok-alice", "@alice:example.com", "DEV", "m1")), mirror)
	require.Equal(t, http.StatusOK, status, string(body))
	require.Equal(t, "mirror-of-"+RoomAlias("!roomid:example.com", "s1"), f.sfu.mints[1].room)
	require.Equal(t, Identity("@alice:example.com", "DEV", "m1"), f.sfu.mints[1].identity)

	// get_token: the claimed user must be the OpenID subject.
	status, _ = f.svc.IssueForwarded(context.Background(), PathGetToken,
		[]byte(getTokenBody("!roomid:example.com", "s1", "example.com", "tok-alice", "@mallory:example.com", "DEV", "m1")), mirror)
	require.Equal(t, http.StatusUnauthorized, status)
	// Another server's user: never this node's to serve.
	calls := f.openid.calls
	status, _ = f.svc.IssueForwarded(context.Background(), PathSFUGet,
		[]byte(sfuGetBody("!roomid:example.com", "remote.org", "tok-bob", "DEV")), mirror)
	require.Equal(t, http.StatusForbidden, status)
	require.Equal(t, calls, f.openid.calls)
	require.Len(t, f.sfu.mints, 2)
}
