package web

import "errors"

// Errors returned while decoding a join request. Each maps to a Matrix-style
// errcode in the HTTP answer; the Go message never reaches the client.
var (
	// ErrNotJSON means the request body is not a JSON object.
	ErrNotJSON = errors.New("web: body is not a JSON object")
	// ErrTooLarge means the request body exceeds maxJoinBody.
	ErrTooLarge = errors.New("web: request body too large")
	// ErrBadRoom means the room name is empty, too long or has control characters.
	ErrBadRoom = errors.New("web: invalid room name")
	// ErrBadName means the display name is empty, too long or has control characters.
	ErrBadName = errors.New("web: invalid display name")
)
