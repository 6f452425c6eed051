package matrix

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

const (
	// maxOpenIDBody bounds a userinfo or well-known answer; both are tiny.
	maxOpenIDBody = 64 << 10
	// maxAccessTokenLen bounds an OpenID access token taken from a request.
	maxAccessTokenLen     = 1024
	defaultOpenIDTimeout  = 10 * time.Second
	resolveCacheTTL       = time.Hour
	resolveCacheMax       = 1024
	defaultFederationPort = 8448
)

// OpenIDVerifier asks a user's homeserver whom an OpenID token belongs to.
// The token service uses it to authenticate the Matrix user behind a token
// request; tests substitute their own.
type OpenIDVerifier interface {
	// UserInfo returns the Matrix user ID that serverName vouches for as the
	// owner of accessToken, or an error wrapping ErrOpenIDRejected,
	// ErrOpenIDUnavailable or ErrInvalidServerName.
	UserInfo(ctx context.Context, serverName, accessToken string) (userID string, err error)
}

// OpenIDOptions configures a FederationOpenID.
type OpenIDOptions struct {
	// InsecureSkipVerify disables TLS certificate checks. Only for test
	// homeservers with self-signed certificates; never in production.
	InsecureSkipVerify bool
	// Timeout bounds each lookup, resolution included. Default 10s.
	Timeout time.Duration
	// Resolver looks up SRV records; nil uses net.DefaultResolver.
	Resolver *net.Resolver
}

// FederationOpenID verifies OpenID tokens over the Matrix federation API:
// GET https://<server>/_matrix/federation/v1/openid/userinfo?access_token=…
// (spec: Server-Server API, "OpenID"). The server is located as the
// specification's "Resolving server names" says (IP literal or explicit port,
// then /.well-known/matrix/server, then SRV, then port 8448). Redirects are
// not followed for userinfo and answers are size-bounded.
type FederationOpenID struct {
	client   *http.Client
	timeout  time.Duration
	resolver *net.Resolver

	mu    sync.Mutex
	cache map[string]resolvedServer
}

// resolvedServer is where to reach a server name: dial addr, send Host (also
// the TLS name checked against the certificate).
type resolvedServer struct {
	addr    string
	host    string
	expires time.Time
}

type dialAddrKey struct{}

// NewFederationOpenID returns a verifier. Call CloseIdleConnections when done.
func NewFederationOpenID(opts OpenIDOptions) *FederationOpenID {
	f := &FederationOpenID{
		timeout:  opts.Timeout,
		resolver: opts.Resolver,
		cache:    make(map[string]resolvedServer),
	}
	if f.timeout <= 0 {
		f.timeout = defaultOpenIDTimeout
	}
	if f.resolver == nil {
		f.resolver = net.DefaultResolver
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // a homeserver is always contacted directly
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// The resolved federation address replaces the URL's host:port;
			// the URL keeps the name the certificate must match.
			if a, ok := ctx.Value(dialAddrKey{}).(string); ok {
				addr = a
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: opts.InsecureSkipVerify, MinVersion: tls.VersionTLS12}, //nolint:gosec // test switch, off by default
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: f.timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	f.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return f
}

// CloseIdleConnections closes the verifier's idle keep-alive connections.
func (f *FederationOpenID) CloseIdleConnections() { f.client.CloseIdleConnections() }

// UserInfo implements OpenIDVerifier.
func (f *FederationOpenID) UserInfo(ctx context.Context, serverName, accessToken string) (string, error) {
	sn, err := ParseServerName(serverName)
	if err != nil {
		return "", err
	}
	if accessToken == "" || len(accessToken) > maxAccessTokenLen {
		return "", fmt.Errorf("%w: bad access token length", ErrOpenIDRejected)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	rs, err := f.resolve(ctx, serverName, sn)
	if err != nil {
		return "", fmt.Errorf("%w: resolve %s: %w", ErrOpenIDUnavailable, serverName, err)
	}
	u := url.URL{
		Scheme:   "https",
		Host:     rs.host,
		Path:     "/_matrix/federation/v1/openid/userinfo",
		RawQuery: url.Values{"access_token": {accessToken}}.Encode(),
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, dialAddrKey{}, rs.addr), http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrOpenIDUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		// The URL holds the access token: report the failure without it.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("%w: %s: %w", ErrOpenIDUnavailable, serverName, err)
	}
	defer resp.Body.Close()
	body, err := readAnswer(resp.Body)
	if err != nil {
		return "", err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
		resp.StatusCode == http.StatusNotFound:
		return "", fmt.Errorf("%w: status %d", ErrOpenIDRejected, resp.StatusCode)
	default:
		return "", fmt.Errorf("%w: status %d", ErrOpenIDUnavailable, resp.StatusCode)
	}
	return parseUserInfo(body, serverName)
}

// readAnswer reads a homeserver's answer, refusing one over maxOpenIDBody:
// a hostile or broken server cannot make the node hold an endless body.
func readAnswer(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxOpenIDBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read answer: %w", ErrOpenIDUnavailable, err)
	}
	if len(body) > maxOpenIDBody {
		return nil, fmt.Errorf("%w: answer too large", ErrOpenIDUnavailable)
	}
	return body, nil
}

// parseUserInfo reads the answer to GET /_matrix/federation/v1/openid/userinfo
// (spec: Server-Server API, "OpenID"), {"sub": "@user:server"}, from
// serverName. A body that is not that object wraps ErrOpenIDUnavailable; a
// sub that is not a valid user ID of serverName wraps ErrOpenIDRejected.
func parseUserInfo(body []byte, serverName string) (string, error) {
	var info struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("%w: bad answer: %w", ErrOpenIDUnavailable, err)
	}
	// A homeserver may only vouch for its own users, and only for user IDs
	// the specification allows: the ID goes into LiveKit identities,
	// tokens and logs.
	if !validUserID(info.Sub) || userIDServer(info.Sub) != serverName {
		return "", fmt.Errorf("%w: %s answered for user %q", ErrOpenIDRejected, serverName, info.Sub)
	}
	return info.Sub, nil
}

// parseWellKnownServer reads the answer to GET /.well-known/matrix/server
// (spec: Server-Server API, "Resolving server names", step 3),
// {"m.server": "<delegated server name>[:<port>]"}.
func parseWellKnownServer(body []byte) (ServerName, error) {
	var wk struct {
		Server string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &wk); err != nil {
		return ServerName{}, fmt.Errorf("%w: bad well-known answer: %w", ErrInvalidServerName, err)
	}
	return ParseServerName(wk.Server)
}

// resolve finds where to send federation requests for a server name (spec:
// Server-Server API, "Resolving server names").
func (f *FederationOpenID) resolve(ctx context.Context, name string, sn ServerName) (resolvedServer, error) {
	if sn.IP || sn.Port != 0 {
		return resolvedServer{addr: sn.hostPort(defaultFederationPort), host: sn.String()}, nil
	}
	f.mu.Lock()
	rs, ok := f.cache[name]
	f.mu.Unlock()
	if ok && time.Now().Before(rs.expires) {
		return rs, nil
	}
	rs, err := f.resolveUncached(ctx, sn)
	if err != nil {
		return rs, err
	}
	rs.expires = time.Now().Add(resolveCacheTTL)
	f.mu.Lock()
	if len(f.cache) >= resolveCacheMax {
		clear(f.cache)
	}
	f.cache[name] = rs
	f.mu.Unlock()
	return rs, nil
}

func (f *FederationOpenID) resolveUncached(ctx context.Context, sn ServerName) (resolvedServer, error) {
	// Delegation through /.well-known/matrix/server: the delegated name is
	// then both the Host and the certificate name.
	if d, ok := f.wellKnown(ctx, sn.Host); ok {
		if d.IP || d.Port != 0 {
			return resolvedServer{addr: d.hostPort(defaultFederationPort), host: d.String()}, nil
		}
		if addr, ok := f.srv(ctx, d.Host); ok {
			return resolvedServer{addr: addr, host: d.Host}, nil
		}
		return resolvedServer{addr: d.hostPort(defaultFederationPort), host: d.Host}, nil
	}
	// SRV: dial the target but keep the server name for Host and TLS.
	if addr, ok := f.srv(ctx, sn.Host); ok {
		return resolvedServer{addr: addr, host: sn.Host}, nil
	}
	return resolvedServer{addr: sn.hostPort(defaultFederationPort), host: sn.Host}, nil
}

func (f *FederationOpenID) wellKnown(ctx context.Context, host string) (ServerName, bool) {
	u := "https://" + host + "/.well-known/matrix/server"
	for range 3 { // the spec lets well-known redirect; bound it
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return ServerName{}, false
		}
		resp, err := f.client.Do(req)
		if err != nil {
			return ServerName{}, false
		}
		body, err := readAnswer(resp.Body)
		resp.Body.Close()
		if err != nil {
			return ServerName{}, false
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			loc, err := resp.Location()
			if err != nil || loc.Scheme != "https" {
				return ServerName{}, false
			}
			u = loc.String()
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return ServerName{}, false
		}
		d, err := parseWellKnownServer(body)
		return d, err == nil
	}
	return ServerName{}, false
}

// srv looks up _matrix-fed._tcp then the deprecated _matrix._tcp.
func (f *FederationOpenID) srv(ctx context.Context, host string) (string, bool) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := f.resolver.LookupSRV(ctx, service, "tcp", host)
		if err != nil || len(addrs) == 0 || addrs[0].Target == "." {
			continue
		}
		target := addrs[0].Target
		if len(target) > 0 && target[len(target)-1] == '.' {
			target = target[:len(target)-1]
		}
		return net.JoinHostPort(target, strconv.Itoa(int(addrs[0].Port))), true
	}
	return "", false
}
