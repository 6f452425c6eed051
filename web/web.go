// Package web owns the browser side of an Entente node that is not media: the
// embedded join page (built from web/src into web/dist by `make web`), the
// guest join API that mints LiveKit tokens for it, and the health check.
//
// It must not import media/..., the store or the Matrix bridge: token minting
// comes in through the Minter interface, and the command decides what is
// mounted next to it (the LiveKit signalling endpoints under /rtc).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/internal/names"
)

// dist holds the built page. It always has dist/.gitkeep, so the package
// compiles in a fresh clone; index.html is there only after `make web`.
//
//go:embed all:dist
var dist embed.FS

// Minter mints LiveKit access tokens for guests of the join page.
type Minter interface {
	// MintJoinToken returns a token that lets identity, shown as name, join
	// room with the rights of an ordinary participant.
	MintJoinToken(room, identity, name string) (token string, err error)
}

// GuestLimiter limits how often a client may obtain a guest token;
// *ratelimit.Limiter implements it.
type GuestLimiter interface {
	// Allow reports whether the client r comes from may have one more
	// token now and, when not, how long it should wait.
	Allow(r *http.Request) (ok bool, retryAfter time.Duration)
}

// Options configures Handler.
type Options struct {
	// Minter mints the tokens handed out by POST /api/join.
	Minter Minter
	// Guests allows anyone who can reach the node to join a room through
	// the page. When false, /api/join answers 403 M_FORBIDDEN.
	Guests bool
	// Limiter, when set, limits the guest tokens one client obtains;
	// beyond the limit /api/join answers 429 M_LIMIT_EXCEEDED.
	Limiter GuestLimiter
	// ConnectOrigins are origins besides the node's own that the page may
	// fetch from: the Matrix homeserver that "!meet" links sign people in
	// at (scheme://host[:port]; anything else in the URL is ignored).
	// Entries that are not http(s) URLs are dropped.
	ConnectOrigins []string
	// Log receives request errors; request code prefers a logger found in
	// the request context (zerolog.Ctx) when there is one.
	Log zerolog.Logger
}

// Handler serves the join page and its API:
//
//	GET  /           index.html (also for LiveKit clients, which probe "/" and need 200)
//	GET  /<asset>    the other built assets
//	POST /api/join   {"room","name"} -> {"url","token","identity"}; 403 M_FORBIDDEN
//	                 without Guests, 429 M_LIMIT_EXCEEDED beyond the Limiter
//	GET  /healthz    200 "ok"
//
// The "url" of a join answer is ws://<Host> or, when the request came over
// TLS or carries X-Forwarded-Proto: https (a TLS-terminating proxy), wss://.
// Without built assets, "/" is a short page saying how to build them.
//
// Handler panics if Guests is set without a Minter: that is a wiring bug.
func Handler(opts Options) http.Handler {
	if opts.Guests && opts.Minter == nil {
		panic("web: Options.Minter is required when Guests is set")
	}
	return newHandler(opts, dist)
}

// newHandler is Handler over the files under "dist" in fsys.
func newHandler(opts Options, fsys fs.FS) http.Handler {
	h := &handler{opts: opts, assets: loadAssets(fsys), csp: contentSecurityPolicy(opts.ConnectOrigins)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("POST /api/join", h.join)
	mux.HandleFunc("/api/join", h.methodNotAllowed)
	mux.HandleFunc("/api/", h.apiNotFound)
	mux.HandleFunc("/", h.static)
	return mux
}

type handler struct {
	opts   Options
	assets map[string]asset // by URL path, "/" for index.html
	csp    string
}

// asset is one built file, read once at start-up so that each answer carries
// a strong ETag (embedded files have no modification time).
type asset struct {
	body  []byte
	ctype string
	etag  string
}

func loadAssets(fsys fs.FS) map[string]asset {
	out := make(map[string]asset)
	_ = fs.WalkDir(fsys, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil //nolint:nilerr // a missing or unreadable dist is "not built"
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil //nolint:nilerr // see above
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = http.DetectContentType(body)
		}
		urlPath := strings.TrimPrefix(p, "dist")
		if urlPath == "/index.html" {
			urlPath = "/"
		}
		out[urlPath] = asset{
			body:  body,
			ctype: ctype,
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	return out
}

func (h *handler) log(r *http.Request) *zerolog.Logger {
	if l := zerolog.Ctx(r.Context()); l.GetLevel() != zerolog.Disabled {
		return l
	}
	return &h.opts.Log
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok"))
}

// contentSecurityPolicy keeps the page to its own scripts and styles; media
// and signalling go to this node (ws:/wss: because the page may be served
// behind a proxy whose scheme differs from ours), Matrix sign-in to the
// origins given.
func contentSecurityPolicy(origins []string) string {
	connect := "'self' ws: wss:"
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			strings.ContainsAny(u.Host, " ;,'\"") {
			continue
		}
		connect += " " + u.Scheme + "://" + u.Host
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; " +
		"img-src 'self' data: blob:; media-src 'self' blob:; connect-src " + connect + "; " +
		"worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
}

func (h *handler) static(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/index.html" {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
		return
	}
	a, ok := h.assets[p]
	if !ok {
		if p != "/" {
			http.NotFound(w, r)
			return
		}
		a = notBuilt
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("ETag", a.etag)
	// Asset names carry no hash: revalidate every time (a 304 is cheap).
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if strings.HasPrefix(a.ctype, "text/html") {
		hdr.Set("Content-Security-Policy", h.csp)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// notBuilt stands in for index.html in a binary built without `make web`, so
// "/" still answers 200 (LiveKit clients probe it) and a person learns why
// there is no page.
var notBuilt = func() asset {
	body := []byte(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Entente: join page not built</title></head>
<body>
<h1>Entente</h1>
<p>This node is running, but its join page assets are not built into this binary.</p>
<p>Build them and the binary with <code>make web</code> and <code>make build</code>
(or <code>make run</code>) in the source tree; <code>make web</code> runs
<code>npm ci</code> and <code>npm run build</code> in <code>web/</code>.</p>
</body></html>
`)
	sum := sha256.Sum256(body)
	return asset{body: body, ctype: "text/html; charset=utf-8", etag: `"nb-` + base64.RawURLEncoding.EncodeToString(sum[:9]) + `"`}
}()

func (h *handler) methodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeError(w, http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "use POST")
}

func (h *handler) apiNotFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "unknown API endpoint")
}

func (h *handler) join(w http.ResponseWriter, r *http.Request) {
	if !h.opts.Guests {
		writeError(w, http.StatusForbidden, "M_FORBIDDEN", "guest access is disabled on this node")
		return
	}
	if h.opts.Limiter != nil {
		if ok, retry := h.opts.Limiter.Allow(r); !ok {
			h.log(r).Info().Str("remote_addr", r.RemoteAddr).Msg("guest join rate limited")
			writeLimitExceeded(w, retry)
			return
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "M_NOT_JSON", "content type must be application/json")
			return
		}
	}
	req, err := decodeJoin(http.MaxBytesReader(w, r.Body, maxJoinBody))
	switch {
	case err == nil:
	case errors.Is(err, ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body is larger than 4 KiB")
		return
	case errors.Is(err, ErrNotJSON):
		writeError(w, http.StatusBadRequest, "M_NOT_JSON", `body must be a JSON object {"room": "...", "name": "..."}`)
		return
	case errors.Is(err, ErrBadRoom):
		writeError(w, http.StatusBadRequest, "M_INVALID_PARAM", "room must be 1 to 128 printable characters")
		return
	case errors.Is(err, ErrBadName):
		writeError(w, http.StatusBadRequest, "M_INVALID_PARAM", "name must be 1 to 64 printable characters")
		return
	default:
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "invalid join request")
		return
	}
	identity := names.GuestIdentity()
	log := h.log(r).With().Str("room", req.Room).Str("identity", identity).Logger()
	token, err := h.opts.Minter.MintJoinToken(req.Room, identity, req.Name)
	if err != nil {
		log.Error().Err(err).Msg("mint guest token")
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "could not issue a token, try again later")
		return
	}
	log.Info().Msg("guest join token issued")
	writeJSON(w, http.StatusOK, joinResponse{URL: signalURL(r), Token: token, Identity: identity})
}
