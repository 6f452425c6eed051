package matrix

import "time"

// SFU is what the token service needs from the node's media side. cmd/
// implements it over media and media/livekit; this package never imports
// them.
type SFU interface {
	// MintToken returns a LiveKit access token (HS256 JWT) that lets identity
	// join room with the given grant. The JWT must carry video.room and
	// video.roomJoin, and name only when non-empty.
	MintToken(room, identity, name string, grant Grant) (string, error)
	// RoomExists reports whether the SFU has a live room called name.
	RoomExists(name string) bool
	// EnsureRoom creates room name unless it exists.
	EnsureRoom(name string) error
	// RemoveParticipant disconnects identity from room; nil when it was not
	// there.
	RemoveParticipant(room, identity string) error
}

// ParticipantChecker is what an SFU may also do: tell whether a participant
// is connected. The call guard uses it to forget the tokens it tracks once
// they expired and their participant left; without it, it forgets expired
// tokens only when it holds maxIssued of them.
type ParticipantChecker interface {
	HasParticipant(room, identity string) bool
}

// Grant is what a token allows beyond joining its room.
type Grant struct {
	CanPublish           bool
	CanSubscribe         bool
	CanPublishData       bool
	CanUpdateOwnMetadata bool
	// TTL is the token's lifetime (its exp claim). An SFU keeps a connected
	// participant beyond it; it only bounds when the token can be used.
	TTL time.Duration
	// Attributes are the participant attributes the token carries. The
	// token service sets AttrMatrixRoomID and AttrMatrixUserID, which
	// Bridge.Admit reads back when the token is used.
	Attributes map[string]string
}
