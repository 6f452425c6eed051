package livekit

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

const (
	testKey    = "APItestkey"
	testSecret = "a-test-secret-that-is-long-enough-0123456789"
)

const otherSecret = "another-secret-of-sufficient-length-0123456789"

func testKeys() Keys { return Keys{testKey: testSecret, "APIother": otherSecret} }

// mint returns a token built by livekit/protocol itself, the way SDKs and
// `entente token` mint them.
func mint(t *testing.T, identity string, g *auth.VideoGrant, edit func(*auth.AccessToken)) string {
	t.Helper()
	at := auth.NewAccessToken(testKey, testSecret).SetVideoGrant(g).SetIdentity(identity).SetValidFor(time.Hour)
	if edit != nil {
		edit(at)
	}
	tok, err := at.ToJWT()
	require.NoError(t, err)
	return tok
}

// claims returns LiveKit-shaped JWT claims for hand-signed tokens.
func claims(identity string, exp time.Time) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss":   testKey,
		"nbf":   time.Now().Add(-time.Minute).Unix(),
		"video": map[string]any{"roomJoin": true, "room": "lobby"},
	}
	if identity != "" {
		c["sub"] = identity
	}
	if !exp.IsZero() {
		c["exp"] = exp.Unix()
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, c jwt.Claims, key any) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(m, c).SignedString(key)
	require.NoError(t, err)
	return tok
}

// handBuilt joins a header and claims into a JWT with the given signature
// segment, bypassing any library's idea of what a valid token is.
func handBuilt(t *testing.T, header map[string]any, c jwt.MapClaims, sig func(signingInput string) string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	in := enc(header) + "." + enc(c)
	return in + "." + sig(in)
}

func hs256(secret string) func(string) string {
	return func(in string) string {
		s, err := jwt.SigningMethodHS256.Sign(in, []byte(secret))
		if err != nil {
			panic(err)
		}
		return base64.RawURLEncoding.EncodeToString(s)
	}
}

func TestVerifyGrants(t *testing.T) {
	no := false
	yes := true
	tests := []struct {
		name  string
		token func(t *testing.T) string
		want  Grant
	}{
		{
			name: "defaults: publish, subscribe and data allowed when unset",
			token: func(t *testing.T) string {
				return mint(t, "alice", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, nil)
			},
			want: Grant{Identity: "alice", Room: "lobby", CanPublish: true, CanSubscribe: true, CanPublishData: true},
		},
		{
			name: "canPublishData follows canPublish=false",
			token: func(t *testing.T) string {
				g := &auth.VideoGrant{RoomJoin: true, Room: "lobby"}
				g.SetCanPublish(false)
				return mint(t, "viewer", g, nil)
			},
			want: Grant{Identity: "viewer", Room: "lobby", CanSubscribe: true},
		},
		{
			name: "explicit data grant without publish",
			token: func(t *testing.T) string {
				g := &auth.VideoGrant{RoomJoin: true, Room: "lobby"}
				g.SetCanPublish(false)
				g.SetCanSubscribe(false)
				g.SetCanPublishData(true)
				return mint(t, "bot", g, nil)
			},
			want: Grant{Identity: "bot", Room: "lobby", CanPublishData: true},
		},
		{
			name: "hidden, sources, room create, own metadata, profile",
			token: func(t *testing.T) string {
				g := &auth.VideoGrant{
					RoomJoin: true, Room: "board-meeting", RoomCreate: true, Hidden: true,
					CanPublishSources:    []string{"camera", "microphone", "screen_share", "screen_share_audio", "hologram"},
					CanUpdateOwnMetadata: &yes,
				}
				return mint(t, "carol", g, func(at *auth.AccessToken) {
					at.SetName("Carol").SetMetadata(`{"role":"chair"}`).SetAttributes(map[string]string{"team": "blue"}).SetKind(livekit.ParticipantInfo_AGENT)
				})
			},
			want: Grant{
				Identity: "carol", Name: "Carol", Metadata: `{"role":"chair"}`, Attributes: map[string]string{"team": "blue"},
				Room: "board-meeting", Kind: livekit.ParticipantInfo_AGENT, RoomCreate: true,
				CanPublish: true, CanSubscribe: true, CanPublishData: true, Hidden: true, CanUpdateOwn: true,
				Sources: []livekit.TrackSource{
					livekit.TrackSource_CAMERA, livekit.TrackSource_MICROPHONE, livekit.TrackSource_SCREEN_SHARE,
					livekit.TrackSource_SCREEN_SHARE_AUDIO, livekit.TrackSource_UNKNOWN,
				},
			},
		},
		{
			name: "canUpdateOwnMetadata=false",
			token: func(t *testing.T) string {
				return mint(t, "dave", &auth.VideoGrant{RoomJoin: true, Room: "lobby", CanUpdateOwnMetadata: &no}, nil)
			},
			want: Grant{Identity: "dave", Room: "lobby", CanPublish: true, CanSubscribe: true, CanPublishData: true},
		},
		{
			// The room is whatever the token names; the node has no other
			// notion of "the right room", so a token for another room is
			// simply a grant for that room.
			name: "room comes from the token",
			token: func(t *testing.T) string {
				return mint(t, "erin", &auth.VideoGrant{RoomJoin: true, Room: "other-room"}, nil)
			},
			want: Grant{Identity: "erin", Room: "other-room", CanPublish: true, CanSubscribe: true, CanPublishData: true},
		},
		{
			name: "expired less than the one minute leeway ago",
			token: func(t *testing.T) string {
				return sign(t, jwt.SigningMethodHS256, claims("frank", time.Now().Add(-20*time.Second)), []byte(testSecret))
			},
			want: Grant{Identity: "frank", Room: "lobby", CanPublish: true, CanSubscribe: true, CanPublishData: true},
		},
		{
			name: "second key",
			token: func(t *testing.T) string {
				c := claims("gina", time.Now().Add(time.Hour))
				c["iss"] = "APIother"
				return sign(t, jwt.SigningMethodHS256, c, []byte(otherSecret))
			},
			want: Grant{Identity: "gina", Room: "lobby", CanPublish: true, CanSubscribe: true, CanPublishData: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Verify(testKeys(), tc.token(t))
			require.NoError(t, err)
			require.False(t, g.ExpiresAt.IsZero(), "expiry must be reported")
			require.WithinDuration(t, time.Now(), g.ExpiresAt, 2*time.Hour)
			g.ExpiresAt = time.Time{}
			require.Contains(t, testKeys(), g.APIKey, "the signing key is reported")
			g.APIKey = ""
			if len(tc.want.Attributes) == 0 && len(g.Attributes) == 0 {
				g.Attributes = nil
			}
			require.Equal(t, tc.want, *g)
		})
	}
}

func TestVerifyRefusals(t *testing.T) {
	future := time.Now().Add(time.Hour)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)

	tests := []struct {
		name  string
		token func(t *testing.T) string
		want  error
	}{
		{"empty", func(*testing.T) string { return "" }, ErrNoToken},
		{"garbage", func(*testing.T) string { return "not a token" }, ErrInvalidToken},
		{"three garbage segments", func(*testing.T) string { return "a.b.c" }, ErrInvalidToken},
		{"two segments", func(t *testing.T) string {
			tok := mint(t, "alice", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, nil)
			return tok[:strings.LastIndexByte(tok, '.')]
		}, ErrInvalidToken},
		{"expired", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("alice", time.Now().Add(-2*time.Minute)), []byte(testSecret))
		}, ErrTokenExpired},
		{"expired long ago, minted by livekit", func(t *testing.T) string {
			c := claims("alice", time.Now().Add(-24*time.Hour))
			c["nbf"] = time.Now().Add(-25 * time.Hour).Unix()
			return sign(t, jwt.SigningMethodHS256, c, []byte(testSecret))
		}, ErrTokenExpired},
		{"not yet valid", func(t *testing.T) string {
			c := claims("alice", time.Now().Add(2*time.Hour))
			c["nbf"] = time.Now().Add(10 * time.Minute).Unix()
			return sign(t, jwt.SigningMethodHS256, c, []byte(testSecret))
		}, ErrTokenExpired},
		{"roomJoin false", func(t *testing.T) string {
			return mint(t, "alice", &auth.VideoGrant{RoomJoin: false, Room: "lobby"}, nil)
		}, ErrNotAllowed},
		{"no room", func(t *testing.T) string {
			return mint(t, "alice", &auth.VideoGrant{RoomJoin: true}, nil)
		}, ErrNotAllowed},
		{"no video grant", func(t *testing.T) string {
			c := claims("alice", future)
			delete(c, "video")
			return sign(t, jwt.SigningMethodHS256, c, []byte(testSecret))
		}, ErrNotAllowed},
		{"unknown API key", func(t *testing.T) string {
			c := claims("alice", future)
			c["iss"] = "APIunknown"
			return sign(t, jwt.SigningMethodHS256, c, []byte(testSecret))
		}, ErrInvalidToken},
		{"no issuer", func(t *testing.T) string {
			c := claims("alice", future)
			delete(c, "iss")
			return sign(t, jwt.SigningMethodHS256, c, []byte(testSecret))
		}, ErrInvalidToken},
		{"wrong secret", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("alice", future), []byte("a-different-secret-that-is-long-enough-000"))
		}, ErrInvalidToken},
		{"secret of the other key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("alice", future), []byte(otherSecret))
		}, ErrInvalidToken},
		{"tampered claims", func(t *testing.T) string {
			tok := sign(t, jwt.SigningMethodHS256, claims("alice", future), []byte(testSecret))
			parts := strings.Split(tok, ".")
			c := claims("mallory", future)
			b, err := json.Marshal(c)
			require.NoError(t, err)
			parts[1] = base64.RawURLEncoding.EncodeToString(b)
			return strings.Join(parts, ".")
		}, ErrInvalidToken},
		{"alg none, empty signature", func(t *testing.T) string {
			return handBuilt(t, map[string]any{"alg": "none", "typ": "JWT"}, claims("alice", future), func(string) string { return "" })
		}, ErrInvalidToken},
		{"alg none, bare header", func(t *testing.T) string {
			return handBuilt(t, map[string]any{"alg": "none"}, claims("alice", future), func(string) string { return "" })
		}, ErrInvalidToken},
		{"alg None with HS256 signature", func(t *testing.T) string {
			return handBuilt(t, map[string]any{"alg": "None"}, claims("alice", future), hs256(testSecret))
		}, ErrInvalidToken},
		{"HS384 with the right secret", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS384, claims("alice", future), []byte(testSecret))
		}, ErrInvalidToken},
		{"HS512 with the right secret", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS512, claims("alice", future), []byte(testSecret))
		}, ErrInvalidToken},
		{"RS256 signed with an RSA key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS256, claims("alice", future), rsaKey)
		}, ErrInvalidToken},
		{"RS256 header over an HS256 signature", func(t *testing.T) string {
			return handBuilt(t, map[string]any{"alg": "RS256", "typ": "JWT"}, claims("alice", future), hs256(testSecret))
		}, ErrInvalidToken},
		{"no exp", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("alice", time.Time{}), []byte(testSecret))
		}, ErrInvalidToken},
		{"no identity", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("", future), []byte(testSecret))
		}, ErrNoIdentity},
		{"no identity, minted by livekit", func(t *testing.T) string {
			return mint(t, "", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, nil)
		}, ErrNoIdentity},
		{"oversized", func(t *testing.T) string {
			return mint(t, "alice", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, func(at *auth.AccessToken) {
				at.SetMetadata(strings.Repeat("x", maxTokenLength))
			})
		}, ErrInvalidToken},
	}
	sentinels := []error{ErrNoToken, ErrInvalidToken, ErrTokenExpired, ErrNotAllowed, ErrNoIdentity}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			g, err := Verify(testKeys(), tok)
			require.Nil(t, g)
			require.ErrorIs(t, err, tc.want)
			for _, s := range sentinels {
				if s != tc.want {
					require.NotErrorIs(t, err, s)
				}
			}
			// What reaches the client is a readable reason that echoes
			// neither the token nor the secret.
			require.NotContains(t, err.Error(), "<nil>")
			require.NotContains(t, err.Error(), testSecret)
			if len(tok) > 20 {
				require.NotContains(t, err.Error(), tok)
			}
		})
	}
}

// TestVerifySizeLimit checks that the size limit, not the content, refuses
// the oversized token: the same grant just under the limit verifies.
func TestVerifySizeLimit(t *testing.T) {
	base := mint(t, "alice", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, nil)
	pad := (maxTokenLength - len(base) - 64) * 3 / 4
	under := mint(t, "alice", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, func(at *auth.AccessToken) {
		at.SetMetadata(strings.Repeat("x", pad))
	})
	require.LessOrEqual(t, len(under), maxTokenLength)
	g, err := Verify(testKeys(), under)
	require.NoError(t, err)
	require.Len(t, g.Metadata, pad)
}

// newTestServer runs a signal server for a fresh in-process SFU.
func newTestServer(t *testing.T, autoCreate bool) (*httptest.Server, *media.SFU) {
	t.Helper()
	sfu, eng := testNode(t, media.Config{
		AutoCreate:   autoCreate,
		EmptyTimeout: time.Minute, DepartureTimeout: time.Minute,
	})
	mux := http.NewServeMux()
	NewServer(sfu, eng, testKeys(), zerolog.Nop()).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		sfu.Close()
	})
	return srv, sfu
}

func TestServeValidateAndConnectChecks(t *testing.T) {
	open, _ := newTestServer(t, true)
	closed, closedSFU := newTestServer(t, false)
	_, err := closedSFU.CreateRoom("existing")
	require.NoError(t, err)

	join := func(room string, create bool) func(t *testing.T) string {
		return func(t *testing.T) string {
			return mint(t, "alice", &auth.VideoGrant{RoomJoin: true, Room: room, RoomCreate: create}, nil)
		}
	}
	tokenFn := func(s string) func(*testing.T) string { return func(*testing.T) string { return s } }

	tests := []struct {
		name     string
		srv      *httptest.Server
		path     string
		token    func(t *testing.T) string
		bearer   bool   // send the token as Authorization: Bearer
		query    string // extra query parameters
		status   int
		body     string // substring of the body
		notBody  string
		noHeader bool // no CORS header expected
	}{
		{name: "valid token", srv: open, path: "/rtc/validate", token: join("lobby", false), status: 200, body: "success"},
		{name: "valid token as bearer", srv: open, path: "/rtc/validate", token: join("lobby", false), bearer: true, status: 200, body: "success"},
		{name: "no token", srv: open, path: "/rtc/validate", token: tokenFn(""), status: 401, body: ErrNoToken.Error()},
		{name: "garbage token", srv: open, path: "/rtc/validate", token: tokenFn("garbage"), status: 401, body: ErrInvalidToken.Error()},
		{name: "wrong secret", srv: open, path: "/rtc/validate", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("alice", time.Now().Add(time.Hour)), []byte("a-different-secret-that-is-long-enough-000"))
		}, status: 401, body: ErrInvalidToken.Error()},
		{name: "expired", srv: open, path: "/rtc/validate", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, claims("alice", time.Now().Add(-time.Hour)), []byte(testSecret))
		}, status: 401, body: ErrTokenExpired.Error()},
		{name: "roomJoin false", srv: open, path: "/rtc/validate", token: func(t *testing.T) string {
			return mint(t, "alice", &auth.VideoGrant{Room: "lobby"}, nil)
		}, status: 401, body: ErrNotAllowed.Error()},
		{name: "alg none", srv: open, path: "/rtc/validate", token: func(t *testing.T) string {
			return handBuilt(t, map[string]any{"alg": "none"}, claims("alice", time.Now().Add(time.Hour)), func(string) string { return "" })
		}, status: 401, body: ErrInvalidToken.Error()},
		{name: "missing identity", srv: open, path: "/rtc/validate", token: func(t *testing.T) string {
			return mint(t, "", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, nil)
		}, status: 400, body: "identity cannot be empty"},
		{name: "join_request", srv: open, path: "/rtc/validate", token: join("lobby", false), query: "join_request=CgQIARAB", status: 400, body: "single peer connection"},
		{name: "room absent, auto-create off", srv: closed, path: "/rtc/validate", token: join("absent", false), status: 404, body: media.ErrRoomNotFound.Error()},
		{name: "room absent, auto-create off, roomCreate grant", srv: closed, path: "/rtc/validate", token: join("absent", true), status: 200, body: "success"},
		{name: "room present, auto-create off", srv: closed, path: "/rtc/validate", token: join("existing", false), status: 200, body: "success"},
		{name: "v1 validate", srv: open, path: "/rtc/v1/validate", token: join("lobby", false), status: 404, notBody: "requested room does not exist"},
		{name: "v1 validate, room absent", srv: closed, path: "/rtc/v1/validate", token: join("absent", false), status: 404, notBody: "requested room does not exist"},
		{name: "v1", srv: open, path: "/rtc/v1", token: join("lobby", false), status: 404, notBody: "requested room does not exist"},
		{name: "rtc no token", srv: open, path: "/rtc", token: tokenFn(""), status: 401, noHeader: true},
		{name: "rtc bad token", srv: open, path: "/rtc", token: tokenFn("a.b.c"), status: 401, noHeader: true},
		{name: "rtc roomJoin false", srv: open, path: "/rtc", token: func(t *testing.T) string {
			return mint(t, "alice", &auth.VideoGrant{Room: "lobby"}, nil)
		}, status: 401, body: ErrNotAllowed.Error(), noHeader: true},
		{name: "rtc missing identity", srv: open, path: "/rtc", token: func(t *testing.T) string {
			return mint(t, "", &auth.VideoGrant{RoomJoin: true, Room: "lobby"}, nil)
		}, status: 400, noHeader: true},
		{name: "rtc join_request", srv: open, path: "/rtc", token: join("lobby", false), query: "join_request=CgQIARAB", status: 400, noHeader: true},
		{name: "rtc room absent", srv: closed, path: "/rtc", token: join("absent", false), status: 404, body: "requested room does not exist", noHeader: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			u := tc.srv.URL + tc.path + "?"
			if tok != "" && !tc.bearer {
				u += "access_token=" + tok + "&"
			}
			u += tc.query
			req, err := http.NewRequest(http.MethodGet, u, nil)
			require.NoError(t, err)
			if tc.bearer {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := tc.srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tc.status, resp.StatusCode, "body: %s", body)
			if tc.body != "" {
				require.Contains(t, string(body), tc.body)
			}
			if tc.notBody != "" {
				require.NotContains(t, string(body), tc.notBody)
			}
			if !tc.noHeader {
				require.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))
			}
			if tok != "" && len(tok) > 20 {
				require.NotContains(t, string(body), tok)
			}
		})
	}
	// Validation never creates a room.
	require.False(t, closedSFU.RoomExists("absent"))
}
