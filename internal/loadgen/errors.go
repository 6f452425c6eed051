package loadgen

import "errors"

var (
	// ErrNotLoopback is returned for a server URL whose host is not a
	// loopback address: the generator only loads servers on this machine.
	ErrNotLoopback = errors.New("server URL is not on loopback")
	// ErrConfig is returned for an invalid Config; the message names the field.
	ErrConfig = errors.New("invalid load configuration")
	// ErrNoMedia is returned when no subscriber received any media before
	// the setup deadline, so there is nothing to measure.
	ErrNoMedia = errors.New("no media reached any subscriber")
	// ErrProc is returned when /proc cannot be read for a process.
	ErrProc = errors.New("cannot read process statistics")
)
