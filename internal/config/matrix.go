package config

import (
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Matrix configures the Matrix bridge (bridge/matrix): the application service registered with
// the agency's homeserver and the MatrixRTC token service Element clients call. Absent ([matrix]
// missing) means no Matrix at all. Options left out of the section take the defaults set by
// MatrixDefaults.
type Matrix struct {
	// HomeserverURL is the homeserver's client-server API as the node reaches it, e.g.
	// "http://127.0.0.1:8008". Required.
	HomeserverURL string `toml:"homeserver_url"`
	// ServerName is the homeserver's server name, the part after ':' in its user IDs
	// ("agency.example"). Its users may start calls on this node. Required.
	ServerName string `toml:"server_name"`
	// Registration is the path of the appservice registration file that `entente register`
	// writes and the homeserver loads; as_token and hs_token are read from it when not set here.
	Registration string `toml:"registration"`
	// ASToken authenticates the node to the homeserver; empty means read from Registration.
	ASToken string `toml:"as_token"`
	// HSToken authenticates the homeserver to the node; empty means read from Registration.
	HSToken string `toml:"hs_token"`
	// ID is the application service's ID in the registration.
	ID string `toml:"id"`
	// BotLocalpart is the localpart of the node's bot user (@<bot_localpart>:<server_name>).
	BotLocalpart string `toml:"bot_localpart"`
	// GhostPrefix starts the localpart of every user the node puts into Matrix on behalf of
	// others (XMPP users, remote participants); the registration claims it exclusively.
	GhostPrefix string `toml:"ghost_prefix"`
	// Allow lists other homeservers whose users may join calls already running on this node;
	// "*" allows all. Users of server_name are always allowed and may also start calls.
	Allow []string `toml:"allow"`
	// TokenServiceURL is the public base URL of the token service, advertised to clients as
	// livekit_service_url. Empty means server.public_url.
	TokenServiceURL string `toml:"token_service_url"`
	// AppserviceListen is host:port where the homeserver's transactions are received.
	AppserviceListen string `toml:"appservice_listen"`
	// AppserviceURL is the URL the homeserver uses to reach AppserviceListen (written into the
	// registration). Empty means http://<appservice_listen>.
	AppserviceURL string `toml:"appservice_url"`
	// InsecureSkipVerify disables TLS certificate checks towards homeservers (OpenID checks).
	// Only for test homeservers with self-signed certificates.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
	// SigningKey is the path of the homeserver's federation signing key (Dendrite's
	// matrix_key.pem or Synapse's signing key file). With it the node asks other homeservers,
	// in its homeserver's name, for tokens on their SFUs (MSC4195's server-server get_token).
	// Empty: such requests get 502; the node still answers other homeservers' requests.
	SigningKey string `toml:"signing_key"`
	// HomeserverPublicURL is the homeserver's client-server API as browsers reach it: the join
	// page signs people in there. Empty means HomeserverURL (when that is already public).
	HomeserverPublicURL string `toml:"homeserver_public_url"`
	// MeetingGuests lets people without a Matrix account join a room's call from a "!meet"
	// link, as guests, once someone of the agency has started it. Default false: only members
	// of the Matrix room, signed in with their account, join from the link.
	MeetingGuests bool `toml:"meeting_guests"`
	// RoomEvents decides which rooms' events the registration asks the homeserver for:
	// RoomEventsAll (default) claims every room ID non-exclusively, so that the node sees the
	// memberships of rooms its bot is not in from their creation on; RoomEventsBot only rooms
	// the bot is in (the homeserver's own rule for application services).
	RoomEvents string `toml:"room_events"`
	// UnknownMembership decides what the token service does when it cannot know whether a user
	// is joined to a room (the bot is not in it and may not join, and the node did not see the
	// room being created): UnknownMembershipRefuse (default) or UnknownMembershipServeLocal.
	UnknownMembership string `toml:"unknown_membership"`
}

// Values of Matrix.RoomEvents.
const (
	RoomEventsAll = "all"
	RoomEventsBot = "bot_rooms"
)

// Values of Matrix.UnknownMembership.
const (
	// UnknownMembershipRefuse refuses a token when membership cannot be known.
	UnknownMembershipRefuse = "refuse"
	// UnknownMembershipServeLocal serves users of server_name verified by OpenID, as
	// lk-jwt-service does, and marks their tokens.
	UnknownMembershipServeLocal = "serve_local"
)

// PublicHomeserverURL is the homeserver URL browsers use: HomeserverPublicURL, or
// HomeserverURL when that is empty.
func (m *Matrix) PublicHomeserverURL() string {
	if m.HomeserverPublicURL != "" {
		return m.HomeserverPublicURL
	}
	return m.HomeserverURL
}

// MatrixDefaults returns the [matrix] values used for options the section leaves out.
func MatrixDefaults() Matrix {
	return Matrix{
		ID:                "entente",
		BotLocalpart:      "entente",
		GhostPrefix:       "entente_",
		Allow:             []string{},
		AppserviceListen:  "127.0.0.1:29335",
		RoomEvents:        RoomEventsAll,
		UnknownMembership: UnknownMembershipRefuse,
	}
}

// applyDefaults fills the options a present [matrix] section left empty.
func (m *Matrix) applyDefaults() {
	d := MatrixDefaults()
	for _, f := range []struct{ v, d *string }{
		{&m.ID, &d.ID}, {&m.BotLocalpart, &d.BotLocalpart}, {&m.GhostPrefix, &d.GhostPrefix},
		{&m.AppserviceListen, &d.AppserviceListen}, {&m.RoomEvents, &d.RoomEvents},
		{&m.UnknownMembership, &d.UnknownMembership},
	} {
		if *f.v == "" {
			*f.v = *f.d
		}
	}
	if m.Allow == nil {
		m.Allow = d.Allow
	}
}

// localpartRE is the Matrix user-ID localpart grammar (spec: appendices, "User Identifiers").
var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

func (v *validator) matrix(m *Matrix) {
	if m.HomeserverURL == "" {
		v.add("matrix.homeserver_url is required")
	} else {
		v.httpURL("matrix.homeserver_url", m.HomeserverURL)
	}
	if m.ServerName == "" {
		v.add("matrix.server_name is required")
	} else if !validServerName(m.ServerName) {
		v.add("matrix.server_name %q is not a Matrix server name (host or host:port)", m.ServerName)
	}
	if m.Registration == "" && (m.ASToken == "" || m.HSToken == "") {
		v.add("matrix.registration is required unless matrix.as_token and matrix.hs_token are both set")
	}
	v.matrixToken("matrix.as_token", m.ASToken)
	v.matrixToken("matrix.hs_token", m.HSToken)
	if m.ASToken != "" && m.ASToken == m.HSToken {
		v.add("matrix.as_token and matrix.hs_token must differ")
	}
	if m.ID == "" {
		v.add("matrix.id must not be empty")
	}
	if !localpartRE.MatchString(m.BotLocalpart) {
		v.add("matrix.bot_localpart %q: want lower-case letters, digits and ._=/+-", m.BotLocalpart)
	}
	if !localpartRE.MatchString(m.GhostPrefix) {
		v.add("matrix.ghost_prefix %q: want lower-case letters, digits and ._=/+-", m.GhostPrefix)
	} else if strings.HasPrefix(m.BotLocalpart, m.GhostPrefix) {
		v.add("matrix.bot_localpart %q must not start with matrix.ghost_prefix %q", m.BotLocalpart, m.GhostPrefix)
	}
	for i, a := range m.Allow {
		if a != "*" && !validServerName(a) {
			v.add("matrix.allow[%d] %q is not a Matrix server name (or \"*\")", i, a)
		}
	}
	if m.RoomEvents != RoomEventsAll && m.RoomEvents != RoomEventsBot {
		v.add("matrix.room_events %q: want %q or %q", m.RoomEvents, RoomEventsAll, RoomEventsBot)
	}
	if m.UnknownMembership != UnknownMembershipRefuse && m.UnknownMembership != UnknownMembershipServeLocal {
		v.add("matrix.unknown_membership %q: want %q or %q", m.UnknownMembership, UnknownMembershipRefuse, UnknownMembershipServeLocal)
	}
	if m.TokenServiceURL != "" {
		v.httpURL("matrix.token_service_url", m.TokenServiceURL)
	}
	v.listen("matrix.appservice_listen", m.AppserviceListen)
	if m.AppserviceURL != "" {
		v.httpURL("matrix.appservice_url", m.AppserviceURL)
	}
	if m.HomeserverPublicURL != "" {
		v.httpURL("matrix.homeserver_public_url", m.HomeserverPublicURL)
	}
}

// matrixMeetings checks the options that involve the join page.
func (v *validator) matrixMeetings(c *Config) {
	if c.Matrix.MeetingGuests && !c.Web.Enabled {
		v.add("matrix.meeting_guests needs web.enabled: guests join from the join page")
	}
}

func (v *validator) matrixToken(name, tok string) {
	switch {
	case tok == "":
	case isPlaceholder(tok):
		v.add("%s is a placeholder; run `entente register` to generate tokens", name)
	case utf8.RuneCountInString(tok) < MinSecretLength:
		v.add("%s has %d characters, want at least %d", name, utf8.RuneCountInString(tok), MinSecretLength)
	}
}

// validServerName checks host[:port] as the Matrix server-name grammar allows: a DNS name, an
// IPv4 literal or a bracketed IPv6 literal; no scheme, path or userinfo.
func validServerName(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[1:end], s[end+1:]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		if port == "" {
			return true
		}
		if port[0] != ':' {
			return false
		}
		return validPort(port[1:])
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		if !validPort(port) {
			return false
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Is4()
	}
	if host == "" || len(host) > 255 {
		return false
	}
	for _, l := range strings.Split(host, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && strings.TrimLeft(p, "0123456789") == ""
}
