package media

import "errors"

var (
	// ErrRoomNotFound is returned when a room does not exist and may not be created.
	ErrRoomNotFound = errors.New("requested room does not exist")
	// ErrRoomClosed is returned when joining a room that is shutting down.
	ErrRoomClosed = errors.New("room is closed")
	// ErrRoomFull is returned when a room has reached its participant limit.
	ErrRoomFull = errors.New("room is full")
	// ErrParticipantClosed is returned for operations on a participant that has left.
	ErrParticipantClosed = errors.New("participant has left")
	// ErrTrackNotFound is returned when a track sid names no track of the room.
	ErrTrackNotFound = errors.New("track not found")
	// ErrPermissionDenied is returned when a participant's grants forbid the operation.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInvalidSDP is returned when an offer or answer cannot be applied.
	ErrInvalidSDP = errors.New("invalid session description")
	// ErrCodecNotNegotiated is returned by DownTrack.Bind when the subscriber
	// did not accept the track's codec.
	ErrCodecNotNegotiated = errors.New("subscriber did not negotiate the track's codec")
	// ErrRateLimited is returned when a participant updates itself faster
	// than the room allows.
	ErrRateLimited = errors.New("too many updates, try again later")
	// ErrLimitExceeded is returned when a participant's update would take
	// its name, metadata or attributes over a size limit.
	ErrLimitExceeded = errors.New("size limit exceeded")
	// ErrInvalidName is returned for a participant name that is too long
	// or not printable.
	ErrInvalidName = errors.New("invalid participant name")
	// ErrAttributeProtected is returned when a participant tries to change
	// or delete an attribute its token asserted.
	ErrAttributeProtected = errors.New("attribute is set by the token issuer and cannot be changed")
	// ErrInvalidCandidate is returned when a trickled ICE candidate cannot
	// be decoded or added.
	ErrInvalidCandidate = errors.New("invalid ICE candidate")
	// ErrInvalidDataPacket is what a transport returns for a participant's
	// data message that the room may not relay (media/rtc: not a LiveKit
	// DataPacket it can read and stamp).
	ErrInvalidDataPacket = errors.New("invalid data packet")
	// ErrClosed is returned when the SFU has been closed.
	ErrClosed = errors.New("sfu is closed")
)
