package config

import (
	"fmt"
	"slices"
	"strings"
)

// Federation links this node with other agencies' nodes (package federation): one call in a
// Matrix room shared by agencies spans their nodes, each person connected only to their own.
// It needs [matrix]: the links are signalled between the nodes' bots. Absent: no links.
type Federation struct {
	// Peers are the nodes this node may link with, by their homeserver's server name. Nothing
	// is linked with a server off this list.
	Peers map[string]FederationPeer `toml:"peers"`
}

// FederationPeer is another agency's node.
type FederationPeer struct {
	// Bot is the peer node's bot user, a user of the peer's server ("@entente:b.example").
	Bot string `toml:"bot"`
	// Device is the bot's device that receives call signalling; default "ENTENTE_NODE", the
	// device every node's bot logs in with.
	Device string `toml:"device"`
	// URL is the peer's token service URL (its livekit_service_url, what its users' clients
	// advertise) when it keeps its own: its users then get their tokens from their own node,
	// also when they ask this one (the redirect, docs/federation-redirect.md). Empty, or this
	// node's own token service URL: the agencies share one transport.
	URL string `toml:"url"`
}

func (v *validator) federation(c *Config) {
	f := c.Federation
	if c.Matrix == nil {
		v.add("[federation] needs [matrix]: links are signalled between the nodes' bots")
		return
	}
	names := make([]string, 0, len(f.Peers))
	for name := range f.Peers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := f.Peers[name]
		switch {
		case !validServerName(name):
			v.add("federation.peers %q is not a Matrix server name", name)
		case name == c.Matrix.ServerName:
			v.add("federation.peers %q is this node's own server", name)
		case !strings.HasPrefix(p.Bot, "@") || !strings.HasSuffix(p.Bot, ":"+name) ||
			!localpartRE.MatchString(strings.TrimSuffix(strings.TrimPrefix(p.Bot, "@"), ":"+name)):
			v.add("federation.peers.%q.bot %q: want a user of that server, e.g. \"@entente:%s\"", name, p.Bot, name)
		case len(p.Device) > 255 || strings.ContainsAny(p.Device, "/ \t\n"):
			v.add("federation.peers.%q.device %q is not a device ID", name, p.Device)
		}
		if p.URL != "" {
			v.httpURL(fmt.Sprintf("federation.peers.%q.url", name), p.URL)
		}
	}
}
