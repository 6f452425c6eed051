package matrix

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"
)

// MSC4195's server-server token endpoint (proposals/4195-matrixrtc-livekit.md,
// "Acquiring LiveKit access tokens"): a homeserver whose user wants to
// subscribe to media on another homeserver's SFU asks that homeserver, with
// a request signed as itself (X-Matrix, spec: Server-Server API,
// "Request Authentication"), for a token for the user. The agency's
// reverse proxy routes these paths from the homeserver's federation port to
// the node, as it routes the client paths from its client port. The
// unstable path is the one other implementations serve beside the stable
// one.
const (
	PathFederationLiveKitGetToken         = "/_matrix/federation/v1/rtc/livekit/get_token"
	PathFederationLiveKitGetTokenUnstable = "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token"
)

const (
	// maxKeysBody bounds a server's key answer (a few keys and signatures).
	maxKeysBody = 64 << 10
	// Server keys are cached until their valid_until_ts, at least
	// minKeyCache and at most maxKeyCache, for at most maxKeyServers
	// servers; a failed fetch is remembered for keyFailCache, so that a
	// stream of requests naming a dead server does not become a stream of
	// fetches.
	minKeyCache   = time.Minute
	maxKeyCache   = 24 * time.Hour
	maxKeyServers = 1024
	keyFailCache  = 10 * time.Second
	// maxJWTLen bounds a token another homeserver answers with.
	maxJWTLen = 8 << 10
)

// LoadSigningKey reads the homeserver's federation signing key, which the
// node signs MSC4195's server-server requests with (it asks in the
// homeserver's name, and the far side checks the signature against the
// keys the homeserver publishes): Dendrite's matrix_key.pem (a PEM block
// "MATRIX PRIVATE KEY" with a Key-ID header and the 32-byte seed) or
// Synapse's signing key file ("ed25519 <version> <unpadded base64 seed>").
func LoadSigningKey(path string) (*federation.SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: signing key: %w", ErrInvalidConfig, err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "MATRIX PRIVATE KEY" {
			return nil, fmt.Errorf("%w: signing key %s: a PEM block of type %q, not MATRIX PRIVATE KEY", ErrInvalidConfig, path, blk.Type)
		}
		keyID := id.KeyID(blk.Headers["Key-ID"])
		if alg, _ := keyID.Parse(); alg != id.KeyAlgorithmEd25519 || len(blk.Bytes) != ed25519.SeedSize {
			return nil, fmt.Errorf("%w: signing key %s: not an ed25519 key with a Key-ID", ErrInvalidConfig, path)
		}
		priv := ed25519.NewKeyFromSeed(blk.Bytes)
		return &federation.SigningKey{
			ID: keyID, Priv: priv,
			Pub: id.SigningKey(base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))),
		}, nil
	}
	// Synapse's file may hold several lines (old keys): the first signs.
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	k, err := federation.ParseSynapseKey(strings.TrimSpace(line))
	if err != nil {
		return nil, fmt.Errorf("%w: signing key %s: neither Dendrite's PEM nor Synapse's format: %w", ErrInvalidConfig, path, err)
	}
	return k, nil
}

// signableRequest is what an X-Matrix signature covers (spec: Server-Server
// API, "Request Authentication").
type signableRequest struct {
	Method      string          `json:"method"`
	URI         string          `json:"uri"`
	Origin      string          `json:"origin"`
	Destination string          `json:"destination"`
	Content     json.RawMessage `json:"content,omitempty"`
}

// signRequest returns the Authorization header for a request from origin
// to destination.
func signRequest(key *federation.SigningKey, r signableRequest) (string, error) {
	sig, err := key.SignJSON(r)
	if err != nil {
		return "", err
	}
	return federation.XMatrixAuth{Origin: r.Origin, Destination: r.Destination, KeyID: key.ID, Signature: sig}.String(), nil
}

// serverKeys are the verify keys a server published, cached.
type serverKeys struct {
	keys    map[id.KeyID]id.SigningKey
	expires time.Time
	err     error
}

// keyCache fetches and keeps other servers' federation verify keys
// (spec: Server-Server API, "Retrieving server keys", directly from the
// server, GET /_matrix/key/v2/server).
type keyCache struct {
	fed *FederationOpenID
	mu  sync.Mutex
	m   map[string]serverKeys
}

// key returns server's verify key keyID.
func (c *keyCache) key(ctx context.Context, server string, keyID id.KeyID) (id.SigningKey, error) {
	c.mu.Lock()
	sk, ok := c.m[server]
	c.mu.Unlock()
	now := time.Now()
	if !ok || now.After(sk.expires) || (sk.err == nil && sk.keys[keyID] == "" && now.After(sk.expires.Add(-maxKeyCache).Add(minKeyCache))) {
		// Unknown, expired, or a key ID we have not seen from a fetch older
		// than a minute (the server may have a new key).
		sk = c.fetch(ctx, server)
		c.mu.Lock()
		if len(c.m) >= maxKeyServers {
			clear(c.m)
		}
		c.m[server] = sk
		c.mu.Unlock()
	}
	if sk.err != nil {
		return "", sk.err
	}
	k, ok := sk.keys[keyID]
	if !ok {
		return "", fmt.Errorf("server %s has no key %s", server, keyID)
	}
	return k, nil
}

// fetch asks server for its keys and checks that they are its own: the
// answer names it, and is signed by each key it lists.
func (c *keyCache) fetch(ctx context.Context, server string) serverKeys {
	fail := func(err error) serverKeys { return serverKeys{err: err, expires: time.Now().Add(keyFailCache)} }
	status, body, err := c.fed.call(ctx, server, http.MethodGet, "/_matrix/key/v2/server", nil, "", maxKeysBody)
	if err != nil {
		return fail(fmt.Errorf("keys of %s: %w", server, err))
	}
	if status != http.StatusOK {
		return fail(fmt.Errorf("keys of %s: status %d", server, status))
	}
	var resp federation.ServerKeyResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return fail(fmt.Errorf("keys of %s: %w", server, err))
	}
	if resp.ServerName != server {
		return fail(fmt.Errorf("keys of %s: answer names %q", server, resp.ServerName))
	}
	if err := resp.VerifySelfSignature(); err != nil {
		return fail(fmt.Errorf("keys of %s: %w", server, err))
	}
	keys := make(map[id.KeyID]id.SigningKey, len(resp.VerifyKeys))
	for kid, k := range resp.VerifyKeys {
		keys[kid] = k.Key
	}
	ttl := time.Until(resp.ValidUntilTS.Time)
	ttl = min(max(ttl, minKeyCache), maxKeyCache)
	return serverKeys{keys: keys, expires: time.Now().Add(ttl)}
}

// errNotAuthenticated is a federation request whose signature does not hold.
var errNotAuthenticated = errors.New("federation request not authenticated")

// authenticate checks r's X-Matrix signature over body, for this server
// as destination, and returns the origin server.
func (c *keyCache) authenticate(ctx context.Context, r *http.Request, body []byte, self string) (string, error) {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "X-Matrix ") {
		return "", fmt.Errorf("%w: no X-Matrix authorization", errNotAuthenticated)
	}
	xm := federation.ParseXMatrixAuth(auth)
	if xm.Origin == "" || xm.KeyID == "" || xm.Signature == "" {
		return "", fmt.Errorf("%w: incomplete X-Matrix authorization", errNotAuthenticated)
	}
	if xm.Destination != "" && xm.Destination != self {
		return "", fmt.Errorf("%w: for destination %q", errNotAuthenticated, xm.Destination)
	}
	if _, err := ParseServerName(xm.Origin); err != nil {
		return "", fmt.Errorf("%w: origin: %w", errNotAuthenticated, err)
	}
	key, err := c.key(ctx, xm.Origin, xm.KeyID)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNotAuthenticated, err)
	}
	var content json.RawMessage
	if len(body) > 0 {
		content = body
	}
	msg, err := canonicaljson.Marshal(signableRequest{
		Method: r.Method, URI: r.URL.RequestURI(), Origin: xm.Origin, Destination: self, Content: content,
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNotAuthenticated, err)
	}
	if err := signutil.VerifyJSONCanonical(key, xm.Signature, msg); err != nil {
		return "", fmt.Errorf("%w: signature: %w", errNotAuthenticated, err)
	}
	return xm.Origin, nil
}

// call sends one federation request to server (resolved as the
// specification says) and returns its status and body, at most limit
// bytes.
func (f *FederationOpenID) call(ctx context.Context, server, method, path string, body []byte, auth string, limit int64) (int, []byte, error) {
	sn, err := ParseServerName(server)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	rs, err := f.resolve(ctx, server, sn)
	if err != nil {
		return 0, nil, fmt.Errorf("resolve %s: %w", server, err)
	}
	u := url.URL{Scheme: "https", Host: rs.host, Path: path}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, dialAddrKey{}, rs.addr), method, u.String(), rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if int64(len(answer)) > limit {
		return resp.StatusCode, nil, errors.New("answer too large")
	}
	return resp.StatusCode, answer, nil
}

// federationTokenRequest is the body of MSC4195's server-server get_token.
type federationTokenRequest struct {
	UserID   string `json:"user_id"`
	URL      string `json:"url"`
	RoomID   string `json:"room_id"`
	SlotID   string `json:"slot_id"`
	MemberID string `json:"member_id"`
}

// parseFederationTokenRequest parses and validates a server-server
// get_token body.
func parseFederationTokenRequest(body []byte) (federationTokenRequest, *apiError) {
	var r federationTokenRequest
	if e := decodeBody(body, &r); e != nil {
		return r, e
	}
	if r.UserID == "" || r.URL == "" || r.RoomID == "" || r.SlotID == "" || r.MemberID == "" {
		return r, badJSON("The request body is missing `user_id`, `url`, `room_id`, `slot_id` or `member_id`")
	}
	if !validUserID(r.UserID) || !validRoomID(r.RoomID) || !validText(r.SlotID) || !validText(r.MemberID) || len(r.URL) > maxIDLen {
		return r, badJSON("Invalid `user_id`, `url`, `room_id`, `slot_id` or `member_id`")
	}
	return r, nil
}

// serveFederationToken answers MSC4195's server-server get_token: the
// request must be signed by a homeserver this node's policy allows, for
// one of that homeserver's own users who is joined to the room, for this
// node's SFU, for a call that is running here (another homeserver's users
// never start calls on this node). The token only subscribes: people
// publish on their own homeserver's SFU (the proposal's "canPublish only
// for local users").
func (s *TokenService) serveFederationToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED", Message: "Method not allowed"})
		return
	}
	log := s.log.With().Str("endpoint", r.URL.Path).Str("remote_addr", r.RemoteAddr).Logger()
	ctx := log.WithContext(r.Context())
	if s.keys == nil {
		writeError(w, &apiError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED", Message: "Unrecognized request"})
		return
	}
	body, berr := readBody(w, r, maxRequestBody)
	if berr != nil {
		writeError(w, berr)
		return
	}
	// Only servers the policy allows are contacted for their keys.
	if xm := federation.ParseXMatrixAuth(r.Header.Get("Authorization")); xm.Origin != "" && !s.allowed(xm.Origin) {
		log.Info().Str("origin", xm.Origin).Msg("federation token request from a server outside the policy")
		writeError(w, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "This node does not serve that homeserver"})
		return
	}
	origin, err := s.keys.authenticate(ctx, r, body, s.serverName)
	if err != nil {
		log.Info().Err(err).Msg("federation token request refused")
		writeError(w, &apiError{Status: http.StatusUnauthorized, ErrCode: "M_UNAUTHORIZED", Message: "The request is not signed by its origin"})
		return
	}
	log = log.With().Str("origin", origin).Logger()
	ctx = log.WithContext(ctx)
	req, aerr := parseFederationTokenRequest(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if userIDServer(req.UserID) != origin || origin == s.serverName {
		log.Info().Str("user_id", req.UserID).Msg("federation token request for a user of another server")
		writeError(w, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "The user does not belong to the requesting server"})
		return
	}
	if strings.TrimSuffix(req.URL, "/") != strings.TrimSuffix(s.url, "/") {
		writeError(w, &apiError{Status: http.StatusBadRequest, ErrCode: "M_INVALID_PARAM", Message: "`url` is not this server's SFU"})
		return
	}
	resp, aerr := s.issue(ctx, req.RoomID, RoomAlias(req.RoomID, req.SlotID), req.UserID, "", MSC4195Identity(req.UserID, req.MemberID), origin, false)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	b, _ := json.Marshal(tokenResponse{JWT: resp.JWT})
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// remoteToken asks server, over federation and signed as this
// homeserver, for a token on its SFU for the local user userID: MSC4195's
// client get_token with another server_name. The far side's 400 and 403
// reach the client as they are; anything else is a 502.
func (s *TokenService) remoteToken(ctx context.Context, server, userID string, req liveKitTokenRequest) (*tokenResponse, *apiError) {
	log := zerolog.Ctx(ctx).With().Str("server_name", server).Logger()
	unavailable := &apiError{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN", Message: "The other homeserver did not give a token"}
	if s.signer == nil {
		log.Info().Msg("token for another homeserver's SFU asked, but the node has no signing key ([matrix] signing_key)")
		return nil, &apiError{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN",
			Message: "This node cannot ask other homeservers for tokens (no signing key configured)"}
	}
	if !s.allowed(server) {
		log.Info().Msg("token for the SFU of a homeserver outside the policy asked")
		return nil, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "This node does not federate with that homeserver"}
	}
	body, err := json.Marshal(federationTokenRequest{UserID: userID, URL: req.URL, RoomID: req.RoomID, SlotID: req.SlotID, MemberID: req.MemberID})
	if err != nil {
		return nil, internalError("Internal Server Error")
	}
	var status int
	var answer []byte
	for _, path := range []string{PathFederationLiveKitGetToken, PathFederationLiveKitGetTokenUnstable} {
		auth, err := signRequest(s.signer, signableRequest{Method: http.MethodPost, URI: path, Origin: s.serverName, Destination: server, Content: body})
		if err != nil {
			log.Error().Err(err).Msg("sign federation request")
			return nil, internalError("Internal Server Error")
		}
		status, answer, err = s.fed.call(ctx, server, http.MethodPost, path, body, auth, maxOpenIDBody)
		if err != nil {
			log.Warn().Err(err).Msg("federation token request failed")
			return nil, unavailable
		}
		if status != http.StatusNotFound {
			break // the unstable path only where the stable one is unknown
		}
	}
	var out struct {
		JWT     string `json:"jwt"`
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(answer, &out)
	switch {
	case status == http.StatusOK && out.JWT != "" && len(out.JWT) <= maxJWTLen:
		log.Info().Str("user_id", userID).Msg("token from another homeserver relayed")
		return &tokenResponse{JWT: out.JWT}, nil
	case (status == http.StatusForbidden && out.ErrCode == "M_FORBIDDEN") || (status == http.StatusBadRequest && out.ErrCode == "M_INVALID_PARAM"):
		log.Info().Int("status", status).Str("errcode", out.ErrCode).Msg("other homeserver refused the token")
		msg := out.Error
		if len(msg) > 512 || !validText(msg) {
			msg = "Refused by " + server
		}
		return nil, &apiError{Status: status, ErrCode: out.ErrCode, Message: msg}
	}
	log.Warn().Int("status", status).Msg("other homeserver's token answer unusable")
	return nil, unavailable
}
