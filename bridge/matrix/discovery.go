package matrix

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Discovery paths: clients look for the node on their homeserver's domain,
// so the reverse proxy in front of the homeserver routes these to the node.
const (
	// PathRTCTransports is MSC4143's transport discovery endpoint (the
	// homeserver would serve it; Dendrite does not).
	PathRTCTransports = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"
	// PathWellKnownClient is the client well-known document (spec:
	// Client-Server API, "Server Discovery"), which older Element Call
	// versions read org.matrix.msc4143.rtc_foci from.
	PathWellKnownClient = "/.well-known/matrix/client"
	// PathRTCTransportsV1 is MSC4143's stable transport discovery, which
	// lists MSC4195's "m.livekit" transport by its SFU WebSocket URL (for
	// clients of the homeserver get_token flow, PathLiveKitGetToken).
	PathRTCTransportsV1 = "/_matrix/client/v1/rtc/transports"
)

// DiscoveryOptions configures a Discovery handler.
type DiscoveryOptions struct {
	// ServiceURL is the token service's public base URL
	// (livekit_service_url), e.g. "https://rtc.agency.example/".
	ServiceURL string
	// HomeserverBaseURL is the homeserver's public client-server API URL,
	// announced as m.homeserver in the well-known document.
	HomeserverBaseURL string
	// SFUURL is the SFU's ws(s) URL, announced as the "m.livekit"
	// transport on PathRTCTransportsV1; empty leaves that path unserved.
	SFUURL string
}

// Discovery serves PathRTCTransports and PathWellKnownClient, both
// announcing this node as the LiveKit transport for the homeserver's users.
type Discovery struct {
	transports   []byte
	transportsV1 []byte
	wellKnown    []byte
}

// NewDiscovery checks opts and prepares the answers.
func NewDiscovery(opts DiscoveryOptions) (*Discovery, error) {
	for name, v := range map[string]string{"service URL": opts.ServiceURL, "homeserver base URL": opts.HomeserverBaseURL} {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: discovery %s %q", ErrInvalidConfig, name, v)
		}
	}
	transport := map[string]string{"type": "livekit", "livekit_service_url": opts.ServiceURL}
	d := &Discovery{}
	if opts.SFUURL != "" {
		if err := checkLiveKitURL(opts.SFUURL); err != nil {
			return nil, fmt.Errorf("%w: discovery: %w", ErrInvalidConfig, err)
		}
		// proposals/4195-matrixrtc-livekit.md, "Discovering and announcing
		// transports".
		d.transportsV1, _ = json.Marshal(map[string]any{"transports": []any{map[string]string{"type": "m.livekit", "url": opts.SFUURL}}})
	}
	d.transports, _ = json.Marshal(map[string]any{"rtc_transports": []any{transport}})
	d.wellKnown, _ = json.Marshal(map[string]any{
		"m.homeserver":                map[string]string{"base_url": opts.HomeserverBaseURL},
		"org.matrix.msc4143.rtc_foci": []any{transport},
	})
	return d, nil
}

// ServeHTTP answers GET (and the CORS preflight) on the two paths; any other
// path is 404 M_UNRECOGNIZED.
func (d *Discovery) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	switch r.URL.Path {
	case PathRTCTransports:
		body = d.transports
	case PathWellKnownClient:
		body = d.wellKnown
	case PathRTCTransportsV1:
		body = d.transportsV1
	}
	if body == nil {
		writeError(w, &apiError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED", Message: "Unrecognized request"})
		return
	}
	h := w.Header()
	// Browsers fetch both cross-origin (spec: "Web Browser Clients").
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusOK)
	case http.MethodGet, http.MethodHead:
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	default:
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED", Message: "Method not allowed"})
	}
}
