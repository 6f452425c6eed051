package logging

import "errors"

var (
	// ErrLevel is returned for a log level that is not one of zerolog's level names.
	ErrLevel = errors.New("unknown log level")
	// ErrFormat is returned for a log format other than "console" or "json".
	ErrFormat = errors.New("unknown log format")
)
