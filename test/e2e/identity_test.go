package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/stretchr/testify/require"
)

// TestSDKSameIdentityReplaces: a second join with an identity already in
// the room replaces the first session (LiveKit's DUPLICATE_IDENTITY), and
// nothing the first session does afterwards, its socket closing included,
// removes the second. A third participant sees the second session's sid
// and keeps receiving its media; the second keeps receiving the third's.
func TestSDKSameIdentityReplaces(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var gens sync.WaitGroup
	t.Cleanup(func() { cancel(); gens.Wait() })
	const room = "same-identity"

	bob := connectClient(t, ctx, n, room, "bob")
	bob.publish(t, ctx, &gens)
	first := connectClient(t, ctx, n, room, "alice")
	first.publish(t, ctx, &gens)
	eventually(t, 20*time.Second, "bob receives the first alice's audio", func() bool {
		return bob.count("alice/audio") >= 20
	})

	second := connectClient(t, ctx, n, room, "alice")
	second.publish(t, ctx, &gens)
	secondSID := second.room.LocalParticipant.SID()
	require.NotEqual(t, first.room.LocalParticipant.SID(), secondSID, "a new session has a new sid")
	first.room.Disconnect()

	aliceIsSecond := func() bool {
		p := bob.room.GetParticipantByIdentity("alice")
		return p != nil && p.SID() == secondSID
	}
	eventually(t, 10*time.Second, "bob sees alice's second session", aliceIsSecond)
	fromAlice, fromBob := bob.count("alice/audio"), second.count("bob/audio")
	eventually(t, 20*time.Second, "bob keeps receiving alice's audio", func() bool {
		return bob.count("alice/audio") >= fromAlice+100
	})
	eventually(t, 20*time.Second, "the second alice keeps receiving bob's audio", func() bool {
		return second.count("bob/audio") >= fromBob+100
	})
	require.True(t, aliceIsSecond(), "alice's second session is still in bob's view of the room")
	require.Equal(t, lksdk.ConnectionStateConnected, second.room.ConnectionState())
}
