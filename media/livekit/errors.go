package livekit

import "errors"

var (
	// ErrNoToken means the request carried no access token.
	ErrNoToken = errors.New("no access token")
	// ErrInvalidToken means the token is malformed, signed with an unknown
	// key or the wrong algorithm, or has a bad signature.
	ErrInvalidToken = errors.New("invalid access token")
	// ErrTokenExpired means the token is expired or not yet valid.
	ErrTokenExpired = errors.New("access token expired or not yet valid")
	// ErrNotAllowed means the token's grants do not allow joining that room.
	ErrNotAllowed = errors.New("token does not allow joining this room")
	// ErrNoIdentity means the token names no participant identity.
	ErrNoIdentity = errors.New("token has no identity")
	// ErrInvalidIdentity means the token's identity is too long or has
	// characters that are not printable.
	ErrInvalidIdentity = errors.New("invalid participant identity")
	// ErrInvalidName means the token's participant name is too long or
	// has characters that are not printable.
	ErrInvalidName = errors.New("invalid participant name")
	// ErrInvalidRoom means the token's room name is too long or has
	// characters that are not printable.
	ErrInvalidRoom = errors.New("invalid room name")
	// ErrNotAdmitted means the server's Admitter refused a valid token.
	ErrNotAdmitted = errors.New("participant not admitted")
)
