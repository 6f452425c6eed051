package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/federation"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/dendritetest"
)

// TestMSC4195FederatedToken: MSC4195's newer token flow across two
// agencies, each a real Dendrite with its node behind the web server the
// agency runs (dendritetest's federation proxy routes the server-server
// get_token to the node). Alice of A publishes on A's SFU with a token from
// her own homeserver's endpoint; Bob of B asks his own homeserver's
// endpoint for a token on A's SFU: B's node checks him and asks A's node
// over federation, signed with B's homeserver key; A's node checks the
// signature against the keys B's Dendrite publishes, Bob's membership and
// that the call runs, and answers a token that subscribes only. Bob then
// receives Alice's media on A's SFU and cannot publish there. A's refusals
// (a URL that is not its SFU) reach Bob as they are; forged, unsigned and
// misattributed server-server requests are refused.
func TestMSC4195FederatedToken(t *testing.T) {
	hsA, hsB := dendritetest.New(t), dendritetest.New(t)
	a := startMatrixNode(t, matrixNodeOptions{homeserver: hsA, federationProxy: true,
		extraMatrix: fmt.Sprintf("allow = [%q]\nsigning_key = %q", hsB.ServerName, hsA.SigningKeyFile())})
	b := startMatrixNode(t, matrixNodeOptions{homeserver: hsB, federationProxy: true,
		extraMatrix: fmt.Sprintf("allow = [%q]\nsigning_key = %q", hsA.ServerName, hsB.SigningKeyFile())})
	alice, bob, carol := hsA.Register(t, "alice"), hsB.Register(t, "bob"), hsB.Register(t, "carol")
	roomID := hsA.CreateRoom(t, alice, map[string]any{"preset": "public_chat", "name": "MSC4195 across agencies"})
	hsB.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(hsA.ServerName),
		bob.Token, map[string]any{}, nil)
	const slot = "m.call#ROOM"
	ask := func(m *matrixNode, u dendritetest.User, server, sfu, member string) tokenAnswer {
		return m.liveKitToken(t, u, map[string]any{"server_name": server, "url": sfu, "room_id": roomID, "slot_id": slot, "member_id": member})
	}

	// Alice publishes on her own node.
	at := ask(a, alice, hsA.ServerName, a.WSURL, "alice-member")
	require.Equal(t, http.StatusOK, at.Status, "alice's token: %+v", at)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	pub := connectClientWithToken(t, ctx, a.WSURL, at.JWT, matrix.MSC4195Identity(alice.ID, "alice-member"))
	pub.publish(t, ctx, &wg)

	// Bob's token for A's SFU comes through his own homeserver's node.
	var bt tokenAnswer
	eventually(t, 30*time.Second, "bob's token for A's SFU (A's bot sees him joined)", func() bool {
		bt = ask(b, bob, hsA.ServerName, a.WSURL, "bob-member")
		return bt.Status == http.StatusOK
	})
	claims := jwtClaims(t, bt.JWT)
	require.Equal(t, matrix.MSC4195Identity(bob.ID, "bob-member"), claims.Sub)
	require.Equal(t, matrix.RoomAlias(roomID, slot), claims.Video.Room)
	require.NotNil(t, claims.Video.CanPublish)
	require.False(t, *claims.Video.CanPublish, "another homeserver's user only subscribes")
	require.Equal(t, a.APIKey, claims.Iss, "minted by A's node")
	sub := connectClientWithToken(t, ctx, a.WSURL, bt.JWT, claims.Sub)
	aliceID := matrix.MSC4195Identity(alice.ID, "alice-member")
	eventually(t, 30*time.Second, "bob receives alice on A's SFU", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.got[aliceID+"/audio"] >= 20 && sub.got[aliceID+"/video"] >= 20
	})
	perm := sub.room.LocalParticipant.Permissions()
	require.NotNil(t, perm)
	require.False(t, perm.CanPublish, "A's SFU tells bob he cannot publish")
	require.False(t, perm.CanPublishData, "nor send data")
	sub.mu.Lock()
	t.Logf("bob receives alice: %v", sub.got)
	sub.mu.Unlock()

	// A's refusal of a URL that is not its SFU reaches Bob as it is.
	bad := ask(b, bob, hsA.ServerName, "wss://elsewhere.example", "bob-member")
	require.Equal(t, http.StatusBadRequest, bad.Status, "%+v", bad)
	require.Equal(t, "M_INVALID_PARAM", bad.ErrCode)
	// Carol is not in the room: her own node refuses before asking.
	ct := ask(b, carol, hsA.ServerName, a.WSURL, "carol-member")
	require.Equal(t, http.StatusForbidden, ct.Status, "%+v", ct)

	// Server-server requests to A made by hand.
	keyB, err := matrix.LoadSigningKey(hsB.SigningKeyFile())
	require.NoError(t, err)
	body := func(user string) []byte {
		b, _ := json.Marshal(map[string]string{"user_id": user, "url": a.WSURL, "room_id": roomID, "slot_id": slot, "member_id": "m"})
		return b
	}
	send := func(key *federation.SigningKey, origin string, content []byte) tokenAnswer {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "https://"+hsA.ServerName+matrix.PathFederationLiveKitGetToken, bytes.NewReader(content))
		require.NoError(t, err)
		if key != nil {
			sig, err := key.SignJSON(map[string]any{"method": "POST", "uri": matrix.PathFederationLiveKitGetToken,
				"origin": origin, "destination": hsA.ServerName, "content": json.RawMessage(content)})
			require.NoError(t, err)
			req.Header.Set("Authorization", federation.XMatrixAuth{Origin: origin, Destination: hsA.ServerName, KeyID: key.ID, Signature: sig}.String())
		}
		resp, err := insecureClient().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var ans tokenAnswer
		_ = json.Unmarshal(raw, &ans)
		ans.Status = resp.StatusCode
		return ans
	}
	// Signed by B for Carol, who is not in the room: A checks membership itself.
	require.Equal(t, http.StatusForbidden, send(keyB, hsB.ServerName, body(carol.ID)).Status)
	// Signed by B for a user of A: B cannot speak for A's users.
	require.Equal(t, http.StatusForbidden, send(keyB, hsB.ServerName, body(alice.ID)).Status)
	// Unsigned, and signed by a key B does not publish.
	require.Equal(t, http.StatusUnauthorized, send(nil, hsB.ServerName, body(bob.ID)).Status)
	require.Equal(t, http.StatusUnauthorized, send(federation.GenerateSigningKey(), hsB.ServerName, body(bob.ID)).Status)
	// Signed by B's key with the body changed on the way.
	good := body(bob.ID)
	sig, err := keyB.SignJSON(map[string]any{"method": "POST", "uri": matrix.PathFederationLiveKitGetToken,
		"origin": hsB.ServerName, "destination": hsA.ServerName, "content": json.RawMessage(good)})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, "https://"+hsA.ServerName+matrix.PathFederationLiveKitGetToken,
		bytes.NewReader(bytes.Replace(good, []byte(`"m"`), []byte(`"x"`), 1)))
	require.NoError(t, err)
	req.Header.Set("Authorization", federation.XMatrixAuth{Origin: hsB.ServerName, Destination: hsA.ServerName, KeyID: keyB.ID, Signature: sig}.String())
	resp, err := insecureClient().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a body that is not the one signed")
	// And the genuine request, by hand, works: what B's node sent.
	require.Equal(t, http.StatusOK, send(keyB, hsB.ServerName, good).Status)
}

// liveKitToken asks m's MSC4195 client get_token with u's access token.
func (m *matrixNode) liveKitToken(t *testing.T, u dendritetest.User, body map[string]any) tokenAnswer {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, m.HTTPURL+matrix.PathLiveKitGetToken, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+u.Token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var a tokenAnswer
	require.NoError(t, json.Unmarshal(raw, &a), "answered %d %q", resp.StatusCode, raw)
	a.Status = resp.StatusCode
	return a
}

// lkClaims are the LiveKit token claims the test reads.
type lkClaims struct {
	Iss   string `json:"iss"`
	Sub   string `json:"sub"`
	Video struct {
		Room       string `json:"room"`
		CanPublish *bool  `json:"canPublish"`
	} `json:"video"`
}

// jwtClaims decodes a token's claims (its signature is the SFU's business).
func jwtClaims(t *testing.T, jwt string) lkClaims {
	t.Helper()
	parts := strings.Split(jwt, ".")
	require.Len(t, parts, 3)
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var c lkClaims
	require.NoError(t, json.Unmarshal(raw, &c))
	return c
}

// insecureClient talks to the test homeservers' self-signed federation port.
func insecureClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test's own homeserver
	}}
}
