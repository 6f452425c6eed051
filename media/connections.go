package media

import (
	"context"
	"sort"
)

// RemoteAddresser is what a Transport may also do: say which address its
// media goes to (a WebRTC connection's selected ICE candidate pair),
// for the node's connection list.
type RemoteAddresser interface {
	// RemoteAddress is "ip:port" of the far end, or "" when unknown.
	RemoteAddress() string
}

// RemotePather is what a Transport may also do: say how its media
// travels, e.g. "udp host", "tcp host" (ICE over TCP) or "udp relay"
// (through a TURN server): the selected ICE candidate pair's protocol and
// far candidate type.
type RemotePather interface {
	// RemotePath is "<protocol> <candidate type>", or "" when unknown.
	RemotePath() string
}

// Connection is one participant as the node's connection list shows it.
type Connection struct {
	Room     string          `json:"room"`
	Identity string          `json:"identity"`
	Kind     ParticipantKind `json:"kind"`
	Hidden   bool            `json:"hidden,omitempty"`
	// Origin is the node the participant joined at, empty for the node's
	// own participants: a remote participant has no connection here, its
	// media comes on a trunk.
	Origin string `json:"origin,omitempty"`
	// Remote is where the participant's media goes ("ip:port"), when its
	// transport says.
	Remote string `json:"remote,omitempty"`
	// Path is how the media travels ("udp host", "tcp host", "udp relay"…), when its
	// transport says.
	Path string `json:"path,omitempty"`
}

// Connections lists every participant of every room with where its media
// goes: an operator's (and the federation tests') view of who is
// connected to this node.
func (s *SFU) Connections(ctx context.Context) []Connection {
	s.mu.Lock()
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	var out []Connection
	for _, r := range rooms {
		for _, p := range r.members() {
			c := Connection{Room: r.name, Identity: p.identity, Kind: p.kind, Hidden: p.perms.Hidden, Origin: p.origin}
			if a, ok := p.transport.(RemoteAddresser); ok && ctx.Err() == nil {
				c.Remote = a.RemoteAddress()
			}
			if a, ok := p.transport.(RemotePather); ok && ctx.Err() == nil {
				c.Path = a.RemotePath()
			}
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Room != out[j].Room {
			return out[i].Room < out[j].Room
		}
		return out[i].Identity < out[j].Identity
	})
	return out
}
