package matrix

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeHomeserver answers the federation userinfo endpoint over TLS with a
// self-signed certificate, as a test Dendrite does.
func fakeHomeserver(t *testing.T, handler http.HandlerFunc) (srv *httptest.Server, serverName string) {
	t.Helper()
	srv = httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "https://")
}

func TestFederationOpenID(t *testing.T) {
	var serverName string
	var sawToken string
	_, serverName = fakeHomeserver(t, func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/_matrix/federation/v1/openid/userinfo", r.URL.Path)
		sawToken = r.URL.Query().Get("access_token")
		switch sawToken {
		case "good&token=x":
			_, _ = w.Write([]byte(`{"sub":"@alice:` + serverName + `"}`))
		case "other-server":
			_, _ = w.Write([]byte(`{"sub":"@admin:example.com"}`))
		case "redirect":
			http.Redirect(w, r, "https://example.com/", http.StatusFound)
		case "huge":
			_, _ = w.Write([]byte(`{"sub":"` + strings.Repeat("a", maxOpenIDBody) + `"}`))
		case "broken":
			w.WriteHeader(http.StatusBadGateway)
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Access Token unknown"}`))
		}
	})
	ctx := context.Background()
	v := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true, Timeout: 10 * time.Second})
	defer v.CloseIdleConnections()
	short := NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: true, Timeout: 300 * time.Millisecond})
	defer short.CloseIdleConnections()

	user, err := v.UserInfo(ctx, serverName, "good&token=x")
	require.NoError(t, err)
	require.Equal(t, "@alice:"+serverName, user)
	require.Equal(t, "good&token=x", sawToken, "the token is query-escaped")

	for tok, want := range map[string]error{
		"forged":       ErrOpenIDRejected,
		"other-server": ErrOpenIDRejected, // a homeserver vouching for another's user
		"redirect":     ErrOpenIDUnavailable,
		"huge":         ErrOpenIDUnavailable,
		"broken":       ErrOpenIDUnavailable,
	} {
		_, err := v.UserInfo(ctx, serverName, tok)
		require.ErrorIs(t, err, want, tok)
		require.NotContains(t, err.Error(), tok+"\"", "errors do not echo the token")
	}
	_, err = short.UserInfo(ctx, serverName, "slow")
	require.ErrorIs(t, err, ErrOpenIDUnavailable)
	_, err = v.UserInfo(ctx, serverName+"/x", "good&token=x")
	require.ErrorIs(t, err, ErrInvalidServerName)
	_, err = v.UserInfo(ctx, serverName, strings.Repeat("t", maxAccessTokenLen+1))
	require.ErrorIs(t, err, ErrOpenIDRejected)
}

func TestFederationOpenIDVerifiesTLSByDefault(t *testing.T) {
	_, serverName := fakeHomeserver(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"sub":"@alice:x"}`))
	})
	v := NewFederationOpenID(OpenIDOptions{Timeout: 10 * time.Second})
	defer v.CloseIdleConnections()
	_, err := v.UserInfo(context.Background(), serverName, "tok")
	require.ErrorIs(t, err, ErrOpenIDUnavailable)
	require.Contains(t, err.Error(), "certificate")
	require.NotContains(t, err.Error(), "tok")
}

// endlessReader is a body that never ends, counting what was read of it.
type endlessReader struct{ n int }

func (r *endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	r.n += len(p)
	return len(p), nil
}

func TestReadAnswerStopsAnEndlessBody(t *testing.T) {
	r := &endlessReader{}
	_, err := readAnswer(r)
	require.ErrorIs(t, err, ErrOpenIDUnavailable)
	require.LessOrEqual(t, r.n, maxOpenIDBody+1)
	body, err := readAnswer(strings.NewReader(`{"sub":"@a:b"}`))
	require.NoError(t, err)
	require.Equal(t, `{"sub":"@a:b"}`, string(body))
}
