package matrix

import (
	"fmt"
	"net/url"
	"regexp"

	"maunium.net/go/mautrix/appservice"
)

// RegistrationParams is what an appservice registration is generated from;
// cmd/ fills it from the [matrix] config section.
type RegistrationParams struct {
	// ID is the appservice's unique ID on the homeserver.
	ID string
	// URL is where the homeserver sends transactions (http(s)://host:port).
	URL string
	// ServerName is the homeserver's server name.
	ServerName string
	// BotLocalpart is the localpart of the node's bot (sender_localpart).
	BotLocalpart string
	// GhostPrefix starts the localpart of every user the node puts into
	// Matrix for others.
	GhostPrefix string
	// AllRooms adds a non-exclusive namespace for every room ID, so that
	// the homeserver sends the node every room's events (spec: Application
	// Service API, "Registration": rooms namespaces; Dendrite
	// appservice/consumers/roomserver.go appserviceIsInterestedInEvent
	// and Synapse synapse/appservice/__init__.py _matches_room_id both
	// deliver a matching room's events whoever is in it).
	AllRooms bool
}

// NewRegistration returns an application service registration (spec:
// Application Service API, "Registration") with fresh random as_token and
// hs_token: the bot and every "<ghost_prefix>…" user, and "#<ghost_prefix>…"
// aliases, are claimed exclusively; with AllRooms, every room ID
// non-exclusively; the node is not rate-limited. Write it
// with its YAML method for the homeserver admin (`entente register`).
func NewRegistration(p RegistrationParams) (*appservice.Registration, error) {
	if p.ID == "" || p.BotLocalpart == "" || p.GhostPrefix == "" {
		return nil, fmt.Errorf("%w: registration needs id, bot localpart and ghost prefix", ErrInvalidConfig)
	}
	if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: appservice url %q", ErrInvalidConfig, p.URL)
	}
	if _, err := ParseServerName(p.ServerName); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	reg := appservice.CreateRegistration() // 64 random characters each
	reg.ID = p.ID
	reg.URL = p.URL
	reg.SenderLocalpart = p.BotLocalpart
	rateLimited := false
	reg.RateLimited = &rateLimited
	// Homeservers match these as (unanchored, in Dendrite) regular
	// expressions: anchor and quote every literal part.
	server := regexp.QuoteMeta(p.ServerName)
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(
		"^@"+regexp.QuoteMeta(p.BotLocalpart)+":"+server+"$"), true)
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(
		"^@"+regexp.QuoteMeta(p.GhostPrefix)+".+:"+server+"$"), true)
	reg.Namespaces.RoomAliases.Register(regexp.MustCompile(
		"^#"+regexp.QuoteMeta(p.GhostPrefix)+".+:"+server+"$"), true)
	if p.AllRooms {
		// Not exclusive: other application services and users keep every
		// room; the node only hears of them.
		reg.Namespaces.RoomIDs.Register(regexp.MustCompile("^!.*$"), false)
	}
	return reg, nil
}

// BotUserID returns the bot's user ID, "@<localpart>:<server name>".
func BotUserID(botLocalpart, serverName string) string {
	return "@" + botLocalpart + ":" + serverName
}
