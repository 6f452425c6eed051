package federation

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DefaultBotDevice is the device the peers' bots receive to-device
// messages on (bridge/matrix.BotDeviceID).
const DefaultBotDevice = "ENTENTE_NODE"

// Peer is another agency's node this node may link with.
type Peer struct {
	// Bot is the peer node's bot user, whose server part is the peer's
	// server name.
	Bot string
	// Device is the bot's device that receives the trunk signalling.
	Device string
	// URL is the peer's token service (its livekit_service_url), empty
	// when it shares this node's (the shared transport).
	URL string
}

// Config is what a node's federation needs.
type Config struct {
	// ServerName is this node's homeserver's server name.
	ServerName string
	// Bot is this node's bot user; Device its device.
	Bot, Device string
	// ServiceURL is this node's own token service URL (its
	// livekit_service_url). A peer whose URL is empty or this one shares
	// the transport.
	ServiceURL string
	// Peers are the nodes this node may link with, by server name: the
	// allow-list.
	Peers map[string]Peer
}

// ErrInvalidConfig wraps every configuration error.
var ErrInvalidConfig = errors.New("federation: invalid configuration")

// Validate checks the configuration and fills the default devices.
func (c *Config) Validate() error {
	if c.ServerName == "" || serverOf(c.Bot) != c.ServerName {
		return fmt.Errorf("%w: bot %q is not a user of %q", ErrInvalidConfig, c.Bot, c.ServerName)
	}
	if c.Device == "" {
		c.Device = DefaultBotDevice
	}
	for name, p := range c.Peers {
		if name == c.ServerName {
			return fmt.Errorf("%w: peer %q is this node's own server", ErrInvalidConfig, name)
		}
		if serverOf(p.Bot) != name {
			return fmt.Errorf("%w: peer %q: bot %q is not a user of that server", ErrInvalidConfig, name, p.Bot)
		}
		if p.Bot == c.Bot {
			return fmt.Errorf("%w: peer %q has this node's bot", ErrInvalidConfig, name)
		}
		if p.URL != "" {
			if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%w: peer %q: url %q is not an http(s) URL", ErrInvalidConfig, name, p.URL)
			}
		}
		if p.Device == "" {
			p.Device = DefaultBotDevice
			c.Peers[name] = p
		}
	}
	return nil
}

// serverOf returns the server part of a Matrix user ID, "" when it is not one.
func serverOf(userID string) string {
	if !strings.HasPrefix(userID, "@") {
		return ""
	}
	_, server, ok := strings.Cut(userID, ":")
	if !ok || len(userID) > 255 {
		return ""
	}
	return server
}

// Redirects reports whether peer is on the peer list with a token service
// URL of its own: its users get their tokens from their own node, through
// this node's token service when they ask it (the redirect), and calls with
// it pair each transport's room with a mirror room.
func (c *Config) Redirects(peer string) bool {
	p, ok := c.Peers[peer]
	return ok && p.URL != "" && strings.TrimSuffix(p.URL, "/") != strings.TrimSuffix(c.ServiceURL, "/")
}

// MirrorRoom names M(here<-transport): the room on this node standing for
// another node's transport (its service URL) in the call whose media room
// is mediaRoom (R, the same name on every node). It never equals a media
// room's name: unpadded standard base64 of SHA-256 of the JSON array
// ["org.entente.mirror", mediaRoom, serviceURL], the style of
// bridge/matrix.RoomAlias.
func MirrorRoom(mediaRoom, serviceURL string) string {
	b, _ := json.Marshal([]string{"org.entente.mirror", mediaRoom, serviceURL}) // strings: cannot fail
	sum := sha256.Sum256(b)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}
