package config

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string ("30s", "5m", "6h").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, e.g. \"30s\" or \"5m\"", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration the way UnmarshalText reads it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Config is the whole node configuration. Zero values are not defaults: start from Default (Load
// and Parse do).
type Config struct {
	// DataDir holds the node's database and generated keys. Relative paths are relative to the
	// working directory.
	DataDir string  `toml:"data_dir"`
	Server  Server  `toml:"server"`
	Log     Log     `toml:"log"`
	RTC     RTC     `toml:"rtc"`
	Room    Room    `toml:"room"`
	LiveKit LiveKit `toml:"livekit"`
	Web     Web     `toml:"web"`
	Debug   Debug   `toml:"debug"`
	// Matrix is nil when the [matrix] section is absent: the node runs without the Matrix bridge.
	Matrix *Matrix `toml:"matrix"`
}

// Server is the HTTP listener that serves the LiveKit signal websocket (/rtc) and the join page.
type Server struct {
	// Listen is host:port for HTTP. Port 0 picks a free port (tests).
	Listen string `toml:"listen"`
	// PublicURL is the http(s) URL clients reach the node at, when it differs from Listen (a
	// reverse proxy). Empty means http://<listen>.
	PublicURL string `toml:"public_url"`
	// AdaptiveProcessors lets the node use only as many processors (GOMAXPROCS) as its load
	// needs, up to all of them (internal/procs). Ignored when the GOMAXPROCS environment
	// variable is set.
	AdaptiveProcessors bool `toml:"adaptive_processors"`
}

// Log selects the log level and format.
type Log struct {
	// Level is one of trace, debug, info, warn, error, fatal, panic, disabled.
	Level string `toml:"level"`
	// Format is "console" (human-readable) or "json".
	Format string `toml:"format"`
}

// RTC is the WebRTC media transport.
type RTC struct {
	// UDPPort is the one UDP port all media uses (ICE UDP mux).
	UDPPort int `toml:"udp_port"`
	// BindAddress is the IP address the UDP port is bound to.
	BindAddress string `toml:"bind_address"`
	// AnnounceAddresses are the IPs offered to clients as ICE candidates (NAT 1:1 mapping).
	// Empty means the bind address.
	AnnounceAddresses []string `toml:"announce_addresses"`
}

// Room holds the room lifecycle settings.
type Room struct {
	// AutoCreate lets a valid token for an unknown room create it on join.
	AutoCreate bool `toml:"auto_create"`
	// EmptyTimeout closes a room nobody ever joined after this long.
	EmptyTimeout Duration `toml:"empty_timeout"`
	// DepartureTimeout closes a room this long after its last participant left.
	DepartureTimeout Duration `toml:"departure_timeout"`
	// MaxParticipants caps participants per room; 0 means no limit.
	MaxParticipants int `toml:"max_participants"`
}

// LiveKit holds the LiveKit API credentials and token settings.
type LiveKit struct {
	// Keys maps API key names to their secrets (at least 32 characters). Empty means the node
	// generates a development key on first start and keeps it in its database.
	Keys map[string]string `toml:"keys"`
	// TokenTTL is the lifetime of tokens the node mints itself (join page, `entente token`).
	TokenTTL Duration `toml:"token_ttl"`
}

// Web is the browser join page.
type Web struct {
	// Enabled serves the join page at "/".
	Enabled bool `toml:"enabled"`
	// Guests lets anyone who can reach the page join a room by name.
	Guests bool `toml:"guests"`
}

// Debug holds options for developers; all are off by default.
type Debug struct {
	// PprofListen, when set, serves Go's profiler (net/http/pprof) on this host:port. It
	// exposes internals: bind it to loopback only.
	PprofListen string `toml:"pprof_listen"`
}

// Default returns the configuration used when no file is given; every call returns a fresh
// value, so callers may modify it.
func Default() *Config {
	return &Config{
		DataDir: "entente-data",
		Server:  Server{Listen: "127.0.0.1:7880", AdaptiveProcessors: true},
		Log:     Log{Level: "info", Format: "console"},
		RTC: RTC{
			UDPPort:           7882,
			BindAddress:       "127.0.0.1",
			AnnounceAddresses: []string{},
		},
		Room: Room{
			AutoCreate:       true,
			EmptyTimeout:     Duration{5 * time.Minute},
			DepartureTimeout: Duration{20 * time.Second},
		},
		LiveKit: LiveKit{
			Keys:     map[string]string{},
			TokenTTL: Duration{6 * time.Hour},
		},
		Web: Web{Enabled: true, Guests: true},
	}
}
