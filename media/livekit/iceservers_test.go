package livekit

import (
	"context"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/stretchr/testify/require"
)

// fixedICEServers hands every identity one TURN entry naming it.
type fixedICEServers struct{}

func (fixedICEServers) ICEServers(identity string) []ICEServer {
	return []ICEServer{{URLs: []string{"turns:turn.example.org:443?transport=tcp"}, Username: "1800000000:" + identity, Credential: "pw-" + identity}}
}

// The join response carries the ICE servers minted for the joining
// participant, and none without a source.
func TestJoinResponseICEServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	token := func(id string) string { return mint(t, id, &auth.VideoGrant{RoomJoin: true, Room: "ice"}, nil) }
	srv, _ := startServer(t, WithICEServers(fixedICEServers{}))
	c := dialRaw(t, ctx, srv, token("alice"))
	require.Len(t, c.join.IceServers, 1)
	ice := c.join.IceServers[0]
	require.Equal(t, []string{"turns:turn.example.org:443?transport=tcp"}, ice.Urls)
	require.Equal(t, "1800000000:alice", ice.Username)
	require.Equal(t, "pw-alice", ice.Credential)

	plain, _ := startServer(t)
	require.Empty(t, dialRaw(t, ctx, plain, token("bob")).join.IceServers)
}
