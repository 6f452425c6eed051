package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string ("30s", "5m", "6h"), or a
// whole number of days ("90d"), the unit retention periods are thought in.
type Duration struct{ time.Duration }

// maxDays keeps a number of days within time.Duration (about 106 751 days).
const maxDays = 100_000

// UnmarshalText parses a Go duration string or a whole number of days.
func (d *Duration) UnmarshalText(text []byte) error {
	if days, ok := strings.CutSuffix(string(text), "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > maxDays {
			return fmt.Errorf("duration %q: want a whole number of days up to %d, e.g. \"90d\"", text, maxDays)
		}
		d.Duration = time.Duration(n) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, e.g. \"30s\", \"5m\" or \"90d\"", text)
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
	TURN    TURN    `toml:"turn"`
	Room    Room    `toml:"room"`
	LiveKit LiveKit `toml:"livekit"`
	Web     Web     `toml:"web"`
	Debug   Debug   `toml:"debug"`
	Metrics Metrics `toml:"metrics"`
	Audit   Audit   `toml:"audit"`
	// Matrix is nil when the [matrix] section is absent: the node runs without the Matrix bridge.
	Matrix *Matrix `toml:"matrix"`
	// Federation is nil when the [federation] section is absent: no links with other nodes.
	Federation *Federation `toml:"federation"`
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
	// TrustedProxies are the addresses (IPs or CIDR prefixes) of reverse proxies in front of
	// the node. A request from one of them is attributed to the address its X-Forwarded-For
	// names (the rightmost entry not itself a trusted proxy); without any, X-Forwarded-For is
	// ignored and a request is attributed to the address it came from, since anyone can write
	// that header.
	TrustedProxies []string `toml:"trusted_proxies"`
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
	// TCPPort is the TCP port for clients whose UDP is blocked (ICE-TCP, passive candidates on
	// the same address); 0 disables it. The default is the UDP port's default number, so that
	// one port number, TCP and UDP, is opened in the firewall.
	TCPPort int `toml:"tcp_port"`
	// BindAddress is the IP address the UDP port is bound to.
	BindAddress string `toml:"bind_address"`
	// AnnounceAddresses are the IPs offered to clients as ICE candidates (NAT 1:1 mapping).
	// Empty means the bind address.
	AnnounceAddresses []string `toml:"announce_addresses"`
}

// TURN is the embedded TURN server: the way in for clients whose network blocks UDP and TCP to
// the media ports (docs/operations.md). It relays only to the node's own media port.
type TURN struct {
	// Enabled starts the TURN server and hands its address and short-lived credentials to every
	// joining client.
	Enabled bool `toml:"enabled"`
	// UDPPort is the TURN port over UDP; 0 for none.
	UDPPort int `toml:"udp_port"`
	// TLSPort is the TURN port over TLS (TCP); 0 for none. 443 passes the strictest firewalls.
	TLSPort int `toml:"tls_port"`
	// CertFile and KeyFile are the TLS port's certificate chain and key (PEM), valid for Host.
	// Both empty: a self-signed certificate is generated at start, which browsers refuse (tests).
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Host is the name (or address) clients reach the TURN ports at, as put in the URLs. Empty:
	// the host of server.public_url, else the first of rtc.announce_addresses, else
	// rtc.bind_address.
	Host string `toml:"host"`
	// Realm is the TURN realm.
	Realm string `toml:"realm"`
	// CredentialLifetime is how long a client's credentials can create relays after it joined;
	// relays made in time last as long as the call.
	CredentialLifetime Duration `toml:"credential_lifetime"`
}

// maxCredentialLifetime bounds [turn] credential_lifetime: credentials are meant to be
// short-lived.
const maxCredentialLifetime = 7 * 24 * time.Hour

// TURNHost is the host clients reach the TURN server at: turn.host, else the host of
// server.public_url, else the first announced address, else the bind address ("" when none of
// them names a reachable host).
func (c *Config) TURNHost() string {
	if c.TURN.Host != "" {
		return c.TURN.Host
	}
	if c.Server.PublicURL != "" {
		if u, err := url.Parse(c.Server.PublicURL); err == nil && u.Hostname() != "" {
			return u.Hostname()
		}
	}
	if len(c.RTC.AnnounceAddresses) > 0 {
		return c.RTC.AnnounceAddresses[0]
	}
	if ip, err := netip.ParseAddr(c.RTC.BindAddress); err == nil && !ip.IsUnspecified() {
		return c.RTC.BindAddress
	}
	return ""
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
	// HistoryRetention is how long the call history (who was in which room when) is kept
	// after a presence ended; 0 keeps it forever.
	HistoryRetention Duration `toml:"history_retention"`
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
	// Guests lets anyone who can reach the page join a room by name. nil (not set) means on
	// while server.listen is a loopback address and off otherwise: see GuestsAllowed.
	Guests *bool `toml:"guests"`
	// GuestRate is how many guest tokens one client address may obtain per minute, from the
	// join page and from "!meet" links together; 0 means no limit.
	GuestRate float64 `toml:"guest_rate"`
	// GuestBurst is how many guest tokens one client address may obtain at once before
	// GuestRate applies.
	GuestBurst int `toml:"guest_burst"`
}

// GuestsAllowed reports whether the join page lets guests join a room by name: web.guests when
// set, otherwise whether server.listen is a loopback address. A node only its own machine can
// reach (the newcomer's `make run`) is open to guests out of the box; a node others can reach
// admits only people with a token unless its operator opens it.
func (c *Config) GuestsAllowed() bool {
	if c.Web.Guests != nil {
		return *c.Web.Guests
	}
	host, _, err := net.SplitHostPort(c.Server.Listen)
	return err == nil && isLoopback(host)
}

// Metrics serves the node's metrics for Prometheus.
type Metrics struct {
	// Listen, when set, serves GET /metrics (Prometheus text format) on this host:port, for
	// the agency's monitoring. The counts are not secret but say who is busy: keep it off the
	// public network. Empty: off.
	Listen string `toml:"listen"`
}

// Debug holds options for developers; all are off by default.
type Debug struct {
	// PprofListen, when set, serves Go's profiler (net/http/pprof) on this host:port. It
	// exposes internals: bind it to loopback only.
	PprofListen string `toml:"pprof_listen"`
}

// Audit is the federation audit log: every trunk and every forwarded token request, kept in the
// node's database and printed by `entente audit` (docs/federation.md, "Audit log").
type Audit struct {
	// Retention is how long a record is kept after it ended; 0 keeps every record forever.
	// Records still open are never deleted.
	Retention Duration `toml:"retention"`
}

// Default returns the configuration used when no file is given; every call returns a fresh
// value, so callers may modify it.
func Default() *Config {
	return &Config{
		DataDir: "entente-data",
		Server:  Server{Listen: "127.0.0.1:7880", AdaptiveProcessors: true, TrustedProxies: []string{}},
		Log:     Log{Level: "info", Format: "console"},
		RTC: RTC{
			UDPPort:           7882,
			TCPPort:           7882,
			BindAddress:       "127.0.0.1",
			AnnounceAddresses: []string{},
		},
		TURN: TURN{
			UDPPort: 3478, TLSPort: 443, Realm: "entente",
			CredentialLifetime: Duration{time.Hour},
		},
		Room: Room{
			AutoCreate:       true,
			EmptyTimeout:     Duration{5 * time.Minute},
			DepartureTimeout: Duration{20 * time.Second},
			MaxParticipants:  100,
			HistoryRetention: Duration{90 * 24 * time.Hour},
		},
		LiveKit: LiveKit{
			Keys:     map[string]string{},
			TokenTTL: Duration{6 * time.Hour},
		},
		Web:   Web{Enabled: true, GuestRate: 10, GuestBurst: 10},
		Audit: Audit{Retention: Duration{365 * 24 * time.Hour}},
	}
}
