package media

import (
	"net"
	"time"
)

// Config is what the SFU needs to run. cmd/ fills it from the node's configuration.
type Config struct {
	// UDPPort is the one UDP port all peers' media uses (ICE UDP mux).
	UDPPort int
	// BindAddress is the IP the UDP port listens on.
	BindAddress net.IP
	// AnnounceAddresses are the IPs put into ICE candidates; empty means BindAddress.
	AnnounceAddresses []net.IP
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
	// IncludeLoopback makes loopback addresses usable as candidates (tests, local nodes).
	IncludeLoopback bool
}

func (c *Config) announce() []net.IP {
	if len(c.AnnounceAddresses) > 0 {
		return c.AnnounceAddresses
	}
	return []net.IP{c.BindAddress}
}
