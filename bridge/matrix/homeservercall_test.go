package matrix

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCallHomeserverBoundsTheAnswer: an answer of the allowed size is read
// whole, with the bearer token sent; one byte more is refused with
// errAnswerTooLong, whatever its status.
func TestCallHomeserverBoundsTheAnswer(t *testing.T) {
	const max = 1024
	size := max
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(strings.Repeat("x", size)))
	}))
	defer srv.Close()
	call := func() (int, []byte, error) {
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		return callHomeserver(srv.Client(), req, "secret-token", max)
	}
	status, body, err := call()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	require.Len(t, body, max)

	size = max + 1
	status, body, err = call()
	require.ErrorIs(t, err, errAnswerTooLong)
	require.Equal(t, http.StatusOK, status)
	require.Nil(t, body)
}
