package web

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/ratelimit"
)

// fakeMinter records what it was asked to mint.
type fakeMinter struct {
	err                  error
	room, identity, name string
}

func (m *fakeMinter) MintJoinToken(room, identity, name string) (string, error) {
	m.room, m.identity, m.name = room, identity, name
	if m.err != nil {
		return "", m.err
	}
	return "tok." + room + "." + identity, nil
}

func do(t *testing.T, h http.Handler, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, body
}

func TestJoin(t *testing.T) {
	guestRe := regexp.MustCompile(`^guest-[a-z2-7]{10}$`)
	tests := []struct {
		name        string
		guests      bool
		mintErr     error
		contentType string
		body        string
		status      int
		errcode     string
		wantRoom    string
		wantName    string
	}{
		{name: "ok", guests: true, body: `{"room":"standup","name":"Ada"}`, status: 200, wantRoom: "standup", wantName: "Ada"},
		{name: "ok trims and ignores unknown fields", guests: true, body: ` {"room":"  a b ","name":"Ünïcødé 名前","x":1} `, status: 200, wantRoom: "a b", wantName: "Ünïcødé 名前"},
		{name: "ok without content type", guests: true, contentType: "-", body: `{"room":"r","name":"n"}`, status: 200, wantRoom: "r", wantName: "n"},
		{name: "ok json with charset", guests: true, contentType: "application/json; charset=utf-8", body: `{"room":"r","name":"n"}`, status: 200, wantRoom: "r", wantName: "n"},
		{name: "room of 128 runes", guests: true, body: `{"room":"` + strings.Repeat("é", 128) + `","name":"n"}`, status: 200, wantRoom: strings.Repeat("é", 128), wantName: "n"},
		{name: "guests off", guests: false, body: `{"room":"r","name":"n"}`, status: 403, errcode: "M_FORBIDDEN"},
		{name: "bad json", guests: true, body: `{"room":`, status: 400, errcode: "M_NOT_JSON"},
		{name: "not an object", guests: true, body: `["r","n"]`, status: 400, errcode: "M_NOT_JSON"},
		{name: "wrong types", guests: true, body: `{"room":1,"name":2}`, status: 400, errcode: "M_NOT_JSON"},
		{name: "trailing data", guests: true, body: `{"room":"r","name":"n"}{}`, status: 400, errcode: "M_NOT_JSON"},
		{name: "empty body", guests: true, body: ``, status: 400, errcode: "M_NOT_JSON"},
		{name: "form content type", guests: true, contentType: "application/x-www-form-urlencoded", body: `room=r&name=n`, status: 415, errcode: "M_NOT_JSON"},
		{name: "oversize body", guests: true, body: `{"room":"r","name":"` + strings.Repeat("a", 5000) + `"}`, status: 413, errcode: "M_TOO_LARGE"},
		{name: "oversize trailing whitespace", guests: true, body: `{"room":"r","name":"n"}` + strings.Repeat(" ", 5000), status: 413, errcode: "M_TOO_LARGE"},
		{name: "missing room", guests: true, body: `{"name":"n"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "blank room", guests: true, body: `{"room":"   ","name":"n"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "room too long", guests: true, body: `{"room":"` + strings.Repeat("a", 129) + `","name":"n"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "room control char", guests: true, body: `{"room":"a\u0007b","name":"n"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "room newline", guests: true, body: `{"room":"a\nb","name":"n"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "missing name", guests: true, body: `{"room":"r"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "name too long", guests: true, body: `{"room":"r","name":"` + strings.Repeat("b", 65) + `"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "name bidi override", guests: true, body: `{"room":"r","name":"a\u202eb"}`, status: 400, errcode: "M_INVALID_PARAM"},
		// encoding/json replaces invalid UTF-8 with U+FFFD, which is printable.
		{name: "name invalid utf8 replaced", guests: true, body: "{\"room\":\"r\",\"name\":\"\xff\"}", status: 200, wantRoom: "r", wantName: "\uFFFD"},
		{name: "minter fails", guests: true, mintErr: errors.New("secret internals"), body: `{"room":"r","name":"n"}`, status: 500, errcode: "M_UNKNOWN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &fakeMinter{err: tc.mintErr}
			h := Handler(Options{Minter: m, Guests: tc.guests, Log: zerolog.Nop()})
			req := httptest.NewRequest(http.MethodPost, "http://node.example:7880/api/join", strings.NewReader(tc.body))
			switch tc.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tc.contentType)
			}
			res, body := do(t, h, req)
			require.Equal(t, tc.status, res.StatusCode, "body: %s", body)
			require.Equal(t, "application/json", res.Header.Get("Content-Type"))
			require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
			if tc.errcode != "" {
				var e apiError
				require.NoError(t, json.Unmarshal(body, &e))
				require.Equal(t, tc.errcode, e.ErrCode)
				require.NotEmpty(t, e.Error)
				require.NotContains(t, e.Error, "secret internals")
				return
			}
			var got joinResponse
			require.NoError(t, json.Unmarshal(body, &got))
			require.Equal(t, "ws://node.example:7880", got.URL)
			require.Regexp(t, guestRe, got.Identity)
			require.Equal(t, "tok."+tc.wantRoom+"."+got.Identity, got.Token)
			require.Equal(t, tc.wantRoom, m.room)
			require.Equal(t, tc.wantName, m.name)
			require.Equal(t, got.Identity, m.identity)
		})
	}
}

func TestJoinIdentitiesDiffer(t *testing.T) {
	h := Handler(Options{Minter: &fakeMinter{}, Guests: true, Log: zerolog.Nop()})
	seen := map[string]bool{}
	for range 50 {
		req := httptest.NewRequest(http.MethodPost, "/api/join", strings.NewReader(`{"room":"r","name":"n"}`))
		res, body := do(t, h, req)
		require.Equal(t, 200, res.StatusCode)
		var got joinResponse
		require.NoError(t, json.Unmarshal(body, &got))
		require.False(t, seen[got.Identity], "identity %s issued twice", got.Identity)
		seen[got.Identity] = true
	}
}

func TestJoinSignalURLScheme(t *testing.T) {
	h := Handler(Options{Minter: &fakeMinter{}, Guests: true, Log: zerolog.Nop()})
	tests := []struct {
		name  string
		tls   bool
		proto string
		want  string
	}{
		{name: "plain", want: "ws://meet.example"},
		{name: "tls", tls: true, want: "wss://meet.example"},
		{name: "proxy https", proto: "https", want: "wss://meet.example"},
		{name: "proxy chain", proto: "HTTPS, http", want: "wss://meet.example"},
		{name: "proxy http", proto: "http", want: "ws://meet.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "http://meet.example/api/join", strings.NewReader(`{"room":"r","name":"n"}`))
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			if tc.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			res, body := do(t, h, req)
			require.Equal(t, 200, res.StatusCode)
			var got joinResponse
			require.NoError(t, json.Unmarshal(body, &got))
			require.Equal(t, tc.want, got.URL)
		})
	}
}

func TestRoutes(t *testing.T) {
	h := Handler(Options{Minter: &fakeMinter{}, Guests: true, Log: zerolog.Nop()})
	tests := []struct {
		method, path string
		status       int
		ctype        string
		contains     string
	}{
		{method: "GET", path: "/healthz", status: 200, ctype: "text/plain; charset=utf-8", contains: "ok"},
		{method: "GET", path: "/", status: 200, ctype: "text/html; charset=utf-8", contains: "Entente"},
		{method: "HEAD", path: "/", status: 200, ctype: "text/html; charset=utf-8"},
		{method: "GET", path: "/?room=abc", status: 200, ctype: "text/html; charset=utf-8"},
		{method: "GET", path: "/api/join", status: 405, ctype: "application/json", contains: "M_UNRECOGNIZED"},
		{method: "GET", path: "/api/nope", status: 404, ctype: "application/json", contains: "M_UNRECOGNIZED"},
		{method: "GET", path: "/.gitkeep", status: 404},
		{method: "GET", path: "/no-such-file.js", status: 404},
		{method: "POST", path: "/", status: 405},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			res, body := do(t, h, httptest.NewRequest(tc.method, tc.path, nil))
			require.Equal(t, tc.status, res.StatusCode, "body: %s", body)
			if tc.ctype != "" {
				require.Equal(t, tc.ctype, res.Header.Get("Content-Type"))
			}
			require.Contains(t, string(body), tc.contains)
		})
	}
}

func TestIndexRevalidates(t *testing.T) {
	h := Handler(Options{Log: zerolog.Nop()})
	res, _ := do(t, h, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, 200, res.StatusCode)
	etag := res.Header.Get("ETag")
	require.NotEmpty(t, etag)
	require.NotEmpty(t, res.Header.Get("Content-Security-Policy"))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("If-None-Match", etag)
	res, body := do(t, h, req)
	require.Equal(t, http.StatusNotModified, res.StatusCode)
	require.Empty(t, body)
}

// TestAssets checks the page that `make web` builds, when it is built: every
// asset index.html references must be served with a fitting type.
func TestAssets(t *testing.T) {
	assets := loadAssets(dist)
	index, ok := assets["/"]
	if !ok {
		if os.Getenv("CI") == "true" {
			t.Fatal("web/dist has no index.html: CI must build the page (`make web`)")
		}
		t.Skip("web/dist has no index.html: run `make web` to test the built page")
	}
	h := Handler(Options{Log: zerolog.Nop()})
	res, body := do(t, h, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, index.body, body)
	for _, ref := range regexp.MustCompile(`(?:src|href)="(/?[^"]+\.(?:js|css))"`).FindAllSubmatch(body, -1) {
		p := "/" + strings.TrimPrefix(string(ref[1]), "/")
		res, b := do(t, h, httptest.NewRequest("GET", p, nil))
		require.Equal(t, 200, res.StatusCode, p)
		require.NotEmpty(t, b, p)
		want := "text/javascript"
		if strings.HasSuffix(p, ".css") {
			want = "text/css"
		}
		require.True(t, strings.HasPrefix(res.Header.Get("Content-Type"), want), "%s: %s", p, res.Header.Get("Content-Type"))
	}
	for _, id := range []string{"room", "name", "join", "leave", "camera", "mic", "screen"} {
		require.True(t, bytes.Contains(body, []byte(`id="`+id+`"`)), "index.html lacks #%s", id)
	}
}

// TestNotBuilt is what a binary built without `make web` serves at "/".
func TestNotBuilt(t *testing.T) {
	h := newHandler(Options{Log: zerolog.Nop()}, fstest.MapFS{"dist/.gitkeep": {}})
	res, body := do(t, h, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"))
	require.Contains(t, string(body), "not built")
	require.Contains(t, string(body), "make web")
	res, _ = do(t, h, httptest.NewRequest("GET", "/app.js", nil))
	require.Equal(t, 404, res.StatusCode)
}

// TestServesBuiltFiles serves a built dist: index.html at "/" (and a redirect
// from /index.html), other files by name with their MIME type.
func TestServesBuiltFiles(t *testing.T) {
	h := newHandler(Options{Log: zerolog.Nop()}, fstest.MapFS{
		"dist/.gitkeep":   {},
		"dist/index.html": {Data: []byte("<!doctype html><title>page</title>")},
		"dist/app.js":     {Data: []byte("console.log(1)")},
		"dist/style.css":  {Data: []byte("body{}")},
	})
	for _, tc := range []struct{ path, ctype, body string }{
		{"/", "text/html; charset=utf-8", "<!doctype html><title>page</title>"},
		{"/app.js", "text/javascript; charset=utf-8", "console.log(1)"},
		{"/style.css", "text/css; charset=utf-8", "body{}"},
	} {
		res, body := do(t, h, httptest.NewRequest("GET", tc.path, nil))
		require.Equal(t, 200, res.StatusCode, tc.path)
		require.Equal(t, tc.ctype, res.Header.Get("Content-Type"), tc.path)
		require.Equal(t, tc.body, string(body), tc.path)
		require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	}
	res, _ := do(t, h, httptest.NewRequest("GET", "/index.html", nil))
	require.Equal(t, http.StatusMovedPermanently, res.StatusCode)
	require.Equal(t, "/", res.Header.Get("Location"))
}

func TestHandlerNeedsMinterForGuests(t *testing.T) {
	require.Panics(t, func() { Handler(Options{Guests: true}) })
}

func TestContentSecurityPolicyConnectOrigins(t *testing.T) {
	for _, tc := range []struct {
		name    string
		origins []string
		want    string
	}{
		{"none", nil, "connect-src 'self' ws: wss:;"},
		{"homeserver", []string{"https://matrix.agency.example/_matrix/"}, "connect-src 'self' ws: wss: https://matrix.agency.example;"},
		{"with port", []string{"http://127.0.0.1:8008"}, "connect-src 'self' ws: wss: http://127.0.0.1:8008;"},
		{"junk dropped", []string{"matrix.example", "javascript:alert(1)", "https://a.example; script-src *", ""}, "connect-src 'self' ws: wss:;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler(Options{Log: zerolog.Nop(), ConnectOrigins: tc.origins}, fstest.MapFS{"dist/.gitkeep": {}})
			res, _ := do(t, h, httptest.NewRequest("GET", "/", nil))
			csp := res.Header.Get("Content-Security-Policy")
			require.Contains(t, csp, tc.want)
			require.Contains(t, csp, "script-src 'self';", "scripts stay the page's own")
		})
	}
}

// limitedReq is one request of TestJoinRateLimited: its peer address, its
// X-Forwarded-For and the status it should get.
type limitedReq struct {
	remote, xff string
	status      int
}

// Guest joins beyond the limit get 429 M_LIMIT_EXCEEDED with the wait, per client address; with
// trusted proxies, per address the proxy forwarded for.
func TestJoinRateLimited(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
	for _, tc := range []struct {
		name     string
		resolver ratelimit.Resolver
		reqs     []limitedReq
	}{
		{"by remote address", ratelimit.Resolver{}, []limitedReq{
			{"192.0.2.1:1000", "", 200},
			{"192.0.2.1:1001", "", 200},
			{"192.0.2.1:1002", "", 429},
			{"192.0.2.1:1003", "198.51.100.7", 429}, // a forged header changes nothing
			{"192.0.2.2:1000", "", 200},
		}},
		{"behind a trusted proxy", ratelimit.NewResolver(proxies), []limitedReq{
			{"10.0.0.1:1000", "198.51.100.7", 200},
			{"10.0.0.1:1001", "198.51.100.7", 200},
			{"10.0.0.1:1002", "198.51.100.7", 429},
			{"10.0.0.1:1003", "198.51.100.8", 200},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := ratelimit.New(1, 2, 0, tc.resolver) // two at once, then one a minute
			h := Handler(Options{Minter: &fakeMinter{}, Guests: true, Limiter: lim, Log: zerolog.Nop()})
			for i, rq := range tc.reqs {
				req := httptest.NewRequest(http.MethodPost, "/api/join", strings.NewReader(`{"room":"r","name":"n"}`))
				req.RemoteAddr = rq.remote
				if rq.xff != "" {
					req.Header.Set("X-Forwarded-For", rq.xff)
				}
				res, body := do(t, h, req)
				require.Equal(t, rq.status, res.StatusCode, "request %d: %s", i, body)
				if rq.status != http.StatusTooManyRequests {
					continue
				}
				var e struct {
					ErrCode      string `json:"errcode"`
					Error        string `json:"error"`
					RetryAfterMS int64  `json:"retry_after_ms"`
				}
				require.NoError(t, json.Unmarshal(body, &e))
				require.Equal(t, "M_LIMIT_EXCEEDED", e.ErrCode)
				require.NotEmpty(t, e.Error)
				require.Positive(t, e.RetryAfterMS)
				require.LessOrEqual(t, e.RetryAfterMS, int64(60_000))
				require.NotEmpty(t, res.Header.Get("Retry-After"))
			}
		})
	}
}
