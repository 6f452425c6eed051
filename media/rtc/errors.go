package rtc

import "errors"

// Errors of federation trunks (trunk.go). Bad descriptions and candidates
// wrap media.ErrInvalidSDP and media.ErrInvalidCandidate, as a client's do.
var (
	// ErrTrunkClosed is returned for an operation on a closed trunk.
	ErrTrunkClosed = errors.New("trunk is closed")
	// ErrTrunkNotOpen is returned by Trunk.Send before the control channel
	// is open.
	ErrTrunkNotOpen = errors.New("trunk control channel is not open")
	// ErrTrunkMessageTooLarge is returned by Trunk.Send for a message over
	// MaxTrunkMessage.
	ErrTrunkMessageTooLarge = errors.New("trunk message too large")
	// ErrTrunkBackedUp is returned by Trunk.Send while more than
	// maxTrunkBuffered bytes wait to be sent.
	ErrTrunkBackedUp = errors.New("trunk control channel backed up")
	// ErrTrunkFull is returned when a trunk would need more than
	// maxTrunkTransceivers media sections.
	ErrTrunkFull = errors.New("trunk has no room for another track")
	// ErrTrunkState is returned for a description or a call that does not
	// fit the trunk's role or its negotiation so far (an offer to the
	// offerer, a second first description, Start on the answerer).
	ErrTrunkState = errors.New("trunk negotiation out of order")
	// ErrTrunkFailed is what Down reports when the connection failed (ICE
	// or DTLS) or a renegotiation could not be applied.
	ErrTrunkFailed = errors.New("trunk connection failed")
	// ErrTrunkPeerClosed is what Down reports when the far node closed the
	// trunk.
	ErrTrunkPeerClosed = errors.New("trunk closed by the far node")
)
