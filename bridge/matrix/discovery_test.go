package matrix

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDiscovery(t *testing.T) {
	d, err := NewDiscovery(DiscoveryOptions{ServiceURL: "https://rtc.agency.example/", HomeserverBaseURL: "https://matrix.agency.example"})
	require.NoError(t, err)
	requireMatrixError(t, do(d, "GET", PathRTCTransportsV1, ""), http.StatusNotFound, "M_UNRECOGNIZED")
	v1, err := NewDiscovery(DiscoveryOptions{ServiceURL: "https://rtc.agency.example/", HomeserverBaseURL: "https://matrix.agency.example",
		SFUURL: "wss://rtc.agency.example"})
	require.NoError(t, err)
	rr := do(v1, "GET", PathRTCTransportsV1, "")
	require.Equal(t, http.StatusOK, rr.Code)
	require.JSONEq(t, `{"transports":[{"type":"m.livekit","url":"wss://rtc.agency.example"}]}`, rr.Body.String())

	rr = do(d, "GET", PathRTCTransports, "")
	require.Equal(t, http.StatusOK, rr.Code)
	require.Equal(t, "*", rr.Header().Get("Access-Control-Allow-Origin"))
	require.JSONEq(t, `{"rtc_transports":[{"type":"livekit","livekit_service_url":"https://rtc.agency.example/"}]}`, rr.Body.String())

	rr = do(d, "GET", PathWellKnownClient, "")
	require.Equal(t, http.StatusOK, rr.Code)
	var wk map[string]any
	require.NoError(t, json.Unmarshal(rr.Body.Bytes(), &wk))
	require.Equal(t, map[string]any{"base_url": "https://matrix.agency.example"}, wk["m.homeserver"])
	require.Equal(t, []any{map[string]any{"type": "livekit", "livekit_service_url": "https://rtc.agency.example/"}}, wk["org.matrix.msc4143.rtc_foci"])

	require.Equal(t, http.StatusOK, do(d, "OPTIONS", PathRTCTransports, "").Code)
	require.Empty(t, do(d, "HEAD", PathWellKnownClient, "").Body.String())
	requireMatrixError(t, do(d, "POST", PathRTCTransports, ""), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	requireMatrixError(t, do(d, "GET", "/x", ""), http.StatusNotFound, "M_UNRECOGNIZED")

	_, err = NewDiscovery(DiscoveryOptions{ServiceURL: "rtc.example", HomeserverBaseURL: "https://m"})
	require.ErrorIs(t, err, ErrInvalidConfig)
}
