package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"entente.dev/entente/internal/names"
)

const (
	// maxJoinBody bounds a join request; {room, name} fits in far less.
	maxJoinBody = 4 << 10
	maxRoomLen  = 128 // runes
	maxNameLen  = 64  // runes
)

// joinRequest is the body of POST /api/join.
type joinRequest struct {
	Room string `json:"room"`
	Name string `json:"name"`
}

// joinResponse is what the page needs to connect with livekit-client.
type joinResponse struct {
	URL      string `json:"url"`
	Token    string `json:"token"`
	Identity string `json:"identity"`
}

// decodeJoin parses and validates a join request body. Surrounding white
// space of room and name is dropped; what remains must be 1-128 (room) or
// 1-64 (name) printable characters of valid UTF-8.
func decodeJoin(r io.Reader) (joinRequest, error) {
	var req joinRequest
	dec := json.NewDecoder(r)
	if err := dec.Decode(&req); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return req, ErrTooLarge
		}
		return req, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	// Exactly one JSON value: trailing garbage is a client bug worth reporting.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return req, ErrTooLarge
		}
		return req, fmt.Errorf("%w: trailing data after the object", ErrNotJSON)
	}
	req.Room = strings.TrimSpace(req.Room)
	req.Name = strings.TrimSpace(req.Name)
	if !names.Printable(req.Room, maxRoomLen) {
		return req, ErrBadRoom
	}
	if !names.Printable(req.Name, maxNameLen) {
		return req, ErrBadName
	}
	return req, nil
}

// signalURL is the WebSocket base URL a browser that reached us at r uses for
// LiveKit signalling: the same host, ws or wss by the scheme it came in on.
// X-Forwarded-Proto "https" is honoured because a TLS-terminating proxy in
// front of the node is the usual deployment; a client forging it only
// misleads itself.
func signalURL(r *http.Request) string {
	scheme := "ws"
	if r.TLS != nil || strings.EqualFold(strings.TrimSpace(firstToken(r.Header.Get("X-Forwarded-Proto"))), "https") {
		scheme = "wss"
	}
	return scheme + "://" + r.Host
}

// firstToken returns the part of a comma-separated header value before the
// first comma (proxies append their own value after the client's).
func firstToken(v string) string {
	if i := strings.IndexByte(v, ','); i >= 0 {
		return v[:i]
	}
	return v
}

// apiError is the JSON error body, in the Matrix style used across Entente.
type apiError struct {
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // our own types: cannot fail
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// limitError is the Matrix M_LIMIT_EXCEEDED error (spec: Client-Server
// API, "Rate limiting"), with the wait in retry_after_ms.
type limitError struct {
	ErrCode      string `json:"errcode"`
	Error        string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms"`
}

// writeLimitExceeded answers 429 M_LIMIT_EXCEEDED, with the wait also in
// Retry-After (whole seconds, rounded up; RFC 9110 section 10.2.3).
func writeLimitExceeded(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
	writeJSON(w, http.StatusTooManyRequests, limitError{
		ErrCode: "M_LIMIT_EXCEEDED", Error: "too many guest joins from your address; try again later",
		RetryAfterMS: retry.Milliseconds(),
	})
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{ErrCode: code, Error: msg})
}
