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
	// ErrClosed is returned when the SFU has been closed.
	ErrClosed = errors.New("sfu is closed")
)
