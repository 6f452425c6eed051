package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// TestLoadSigningKey: Dendrite's PEM and Synapse's line give the same key;
// other files are refused with the reason.
func TestLoadSigningKey(t *testing.T) {
	dir := t.TempDir()
	k := federation.GenerateSigningKey()
	_, version := k.ID.Parse()
	seed := k.Priv.Seed()
	pemFile := filepath.Join(dir, "matrix_key.pem")
	require.NoError(t, os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY",
		Headers: map[string]string{"Key-ID": string(k.ID)}, Bytes: seed}), 0o600))
	synFile := filepath.Join(dir, "signing.key")
	require.NoError(t, os.WriteFile(synFile, []byte(k.SynapseString()+"\n"), 0o600))
	for _, f := range []string{pemFile, synFile} {
		got, err := LoadSigningKey(f)
		require.NoError(t, err, f)
		require.Equal(t, k.ID, got.ID)
		require.Equal(t, k.Pub, got.Pub)
		require.Equal(t, version, strings.TrimPrefix(string(got.ID), "ed25519:"))
	}
	for name, content := range map[string]string{
		"other pem":  "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"short seed": "-----BEGIN MATRIX PRIVATE KEY-----\nKey-ID: ed25519:a\n\nAAAA\n-----END MATRIX PRIVATE KEY-----\n",
		"no key id":  string(pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY", Bytes: seed})),
		"garbage":    "hello",
	} {
		f := filepath.Join(dir, "bad")
		require.NoError(t, os.WriteFile(f, []byte(content), 0o600))
		_, err := LoadSigningKey(f)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	_, err := LoadSigningKey(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, ErrInvalidConfig)
}

// TestFederationSignature: a request signed with signRequest passes
// authenticate against the keys the origin publishes; a changed body,
// method, path, destination, another key of the same name, or an origin
// whose keys are not self-signed do not. (The end-to-end test,
// TestMSC4195FederatedToken, does the same against real Dendrites.)
func TestFederationSignature(t *testing.T) {
	key := federation.GenerateSigningKey()
	var published *federation.ServerKeyResponse
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/_matrix/key/v2/server", r.URL.Path)
		_ = json.NewEncoder(w).Encode(published)
	}))
	defer srv.Close()
	origin := strings.TrimPrefix(srv.URL, "https://")
	published = key.GenerateKeyResponse(origin, nil)
	fed := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true})
	defer fed.CloseIdleConnections()
	kc := &keyCache{fed: fed, m: map[string]serverKeys{}}
	const self = "b.example"
	body := []byte(`{"user_id":"@bob:` + origin + `"}`)
	request := func(method, path, dest string, signed, sent []byte, k *federation.SigningKey) *http.Request {
		auth, err := signRequest(k, signableRequest{Method: method, URI: path, Origin: origin, Destination: dest, Content: signed})
		require.NoError(t, err)
		r := httptest.NewRequest(http.MethodPost, PathFederationLiveKitGetToken, bytes.NewReader(sent))
		r.Header.Set("Authorization", auth)
		return r
	}
	ctx := context.Background()
	got, err := kc.authenticate(ctx, request("POST", PathFederationLiveKitGetToken, self, body, body, key), body, self)
	require.NoError(t, err)
	require.Equal(t, origin, got)
	other := federation.GenerateSigningKey()
	other.ID = key.ID
	changed := bytes.Replace(body, []byte("bob"), []byte("eve"), 1)
	for name, r := range map[string]*http.Request{
		"body changed":     request("POST", PathFederationLiveKitGetToken, self, body, changed, key),
		"method":           request("PUT", PathFederationLiveKitGetToken, self, body, body, key),
		"path":             request("POST", PathFederationLiveKitGetTokenUnstable, self, body, body, key),
		"destination":      request("POST", PathFederationLiveKitGetToken, "c.example", body, body, key),
		"another key":      request("POST", PathFederationLiveKitGetToken, self, body, body, other),
		"unknown key name": request("POST", PathFederationLiveKitGetToken, self, body, body, federation.GenerateSigningKey()),
	} {
		sent, _ := readAll(r)
		_, err := kc.authenticate(ctx, r, sent, self)
		require.ErrorIs(t, err, errNotAuthenticated, name)
	}
	r := httptest.NewRequest(http.MethodPost, PathFederationLiveKitGetToken, bytes.NewReader(body))
	_, err = kc.authenticate(ctx, r, body, self)
	require.ErrorIs(t, err, errNotAuthenticated, "unsigned")

	// Keys whose self-signature does not hold are not believed.
	published.VerifyKeys[id.NewKeyID(id.KeyAlgorithmEd25519, "extra")] = federation.ServerVerifyKey{Key: other.Pub}
	kc.m = map[string]serverKeys{}
	_, err = kc.authenticate(ctx, request("POST", PathFederationLiveKitGetToken, self, body, body, key), body, self)
	require.ErrorIs(t, err, errNotAuthenticated, "keys changed after signing")
	// A failed fetch is remembered for a while (no fetch per request).
	require.True(t, kc.m[origin].expires.Before(time.Now().Add(keyFailCache+time.Second)))
}

// FuzzFederationTokenRequest: the server-server body parser never panics
// and accepts only what the handler relies on.
func FuzzFederationTokenRequest(f *testing.F) {
	f.Add([]byte(`{"user_id":"@bob:b.example","url":"wss://rtc.a.example","room_id":"!r:a.example","slot_id":"m.call#ROOM","member_id":"m1"}`))
	f.Add([]byte(`{"user_id":"@bob","url":"","room_id":"!r","slot_id":"\u0000","member_id":"m"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := parseFederationTokenRequest(body)
		if e != nil {
			if e.Status != http.StatusBadRequest {
				t.Fatalf("unexpected error %v", e)
			}
			return
		}
		if !validUserID(r.UserID) || userIDServer(r.UserID) == "" || !validRoomID(r.RoomID) || r.SlotID == "" || r.MemberID == "" || r.URL == "" || len(r.URL) > maxIDLen {
			t.Fatalf("accepted invalid request %+v", r)
		}
		_ = MSC4195Identity(r.UserID, r.MemberID)
		_ = RoomAlias(r.RoomID, r.SlotID)
	})
}

func readAll(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	r.Body = http.NoBody
	return b.Bytes(), err
}
