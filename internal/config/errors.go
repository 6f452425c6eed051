package config

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalid is matched (errors.Is) by every ValidationError.
	ErrInvalid = errors.New("invalid configuration")
	// ErrUnknownKey is matched (errors.Is) by every UnknownKeyError.
	ErrUnknownKey = errors.New("unknown configuration key")
)

// ValidationError lists every problem Validate found, so that an operator fixes them in one go.
type ValidationError struct {
	// Problems are human-readable, one per problem, each naming the option ("room.empty_timeout
	// must be positive").
	Problems []string
}

// Error joins the problems, one per line after a summary line.
func (e *ValidationError) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// UnknownKeyError is a key present in the TOML document that the node does not know; usually a
// typo, which would otherwise leave the intended option at its default without a word.
type UnknownKeyError struct {
	// File is the name given to Parse (the path for Load).
	File string
	// Key is the dotted TOML key, e.g. "server.listne".
	Key string
	// Line is the 1-based line of the key in File, or 0 when it could not be determined.
	Line int
}

// Error names the file, line and key.
func (e *UnknownKeyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: unknown key %s", e.File, e.Line, e.Key)
	}
	return fmt.Sprintf("%s: unknown key %s", e.File, e.Key)
}

// Unwrap lets errors.Is(err, ErrUnknownKey) match.
func (e *UnknownKeyError) Unwrap() error { return ErrUnknownKey }
