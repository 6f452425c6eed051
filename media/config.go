package media

import "time"

// Config is what the SFU needs to run its rooms. cmd/ fills it from the
// node's configuration; the WebRTC transport has its own (media/rtc).
type Config struct {
	// AutoCreate lets a valid token create the room it names.
	AutoCreate bool
	// EmptyTimeout closes a room nobody joined this long after its creation.
	EmptyTimeout time.Duration
	// DepartureTimeout closes a room this long after its last participant left.
	DepartureTimeout time.Duration
	// MaxParticipants limits a room's size; 0 means unlimited.
	MaxParticipants int
	// HistoryRetention is how long the call history of a presence is kept
	// after it ended, when the History is also a HistoryPruner; 0 keeps it
	// forever.
	HistoryRetention time.Duration
}
