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
	// DynacastPauseDelay is how long the layers a publisher is asked to
	// send wait before going down (dynacast.go): a subscriber that flips
	// between layers, or hides a tile for a moment, does not make the
	// publisher stop and restart its encoders. 0: LiveKit's 5 s.
	DynacastPauseDelay time.Duration
	// DynacastInitialWait is how long after a video track is published
	// its publisher is first told which layers to send when nobody has
	// subscribed to it by then (all off). 0: LiveKit's 10 s.
	DynacastInitialWait time.Duration
}

// LiveKit's dynacast timings (livekit/livekit pkg/config/config.go
// DynacastPauseDelay; pkg/rtc/dynacast/dynacastqualityvideo.go
// initialQualityUpdateWait).
const (
	defaultDynacastPauseDelay  = 5 * time.Second
	defaultDynacastInitialWait = 10 * time.Second
)

func (c Config) dynacastPauseDelay() time.Duration {
	if c.DynacastPauseDelay > 0 {
		return c.DynacastPauseDelay
	}
	return defaultDynacastPauseDelay
}

func (c Config) dynacastInitialWait() time.Duration {
	if c.DynacastInitialWait > 0 {
		return c.DynacastInitialWait
	}
	return defaultDynacastInitialWait
}
