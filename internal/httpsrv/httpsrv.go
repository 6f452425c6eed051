// Package httpsrv builds the node's HTTP servers with time limits, so that
// a client that sends its request slowly (slowloris) or keeps an idle
// connection open cannot hold a connection and its goroutine for ever. It
// imports only the standard library.
package httpsrv

import (
	"net/http"
	"time"
)

// Timeouts are an http.Server's time limits (see the fields of the same
// names on http.Server).
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, headers and body.
	Read time.Duration
	// Write bounds the time from the end of the request headers to the end
	// of the response: the handler's work included. It does not apply
	// after a handler hijacks the connection: net/http clears the
	// connection's deadlines on Hijack (server.go, hijackLocked), so a
	// LiveKit signal websocket (/rtc) lives on, kept in check by its own
	// pings (media/livekit).
	Write time.Duration
	// Idle bounds the wait for the next request on a keep-alive
	// connection.
	Idle time.Duration
}

// Node returns the limits of the node's main port: the join page, /rtc and
// the Matrix token service. Requests are small; the slowest handler is
// /get_token, which asks the user's homeserver twice, each call bounded to
// 10 s; /rtc's admission check is bounded to 10 s before the upgrade.
func Node() Timeouts {
	return Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: time.Minute, Idle: 2 * time.Minute}
}

// Appservice returns the limits of the port the homeserver pushes
// transactions to: bodies of up to 32 MiB, each stored within 30 s before
// the answer.
func Appservice() Timeouts {
	return Timeouts{ReadHeader: 10 * time.Second, Read: time.Minute, Write: 2 * time.Minute, Idle: 2 * time.Minute}
}

// New returns a server for h with the time limits t.
func New(h http.Handler, t Timeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
	}
}
