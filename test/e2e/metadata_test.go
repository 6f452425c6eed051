package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/stretchr/testify/require"
)

// TestSDKAssertedAttributesStay: a participant whose token carries
// matrix_user_id (as the Matrix token service's do) and that may update
// its own metadata tries to overwrite it, then to delete it, with the Go
// SDK's SetAttributes; another participant still sees the token's value,
// and sees the participant's own attribute, set after both attempts.
func TestSDKAssertedAttributesStay(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const room = "asserted-attributes"
	const userID = "@alice:example.com"
	asserted := func(at *auth.AccessToken, g *auth.VideoGrant) {
		yes := true
		g.CanUpdateOwnMetadata = &yes
		at.SetAttributes(map[string]string{"matrix_user_id": userID})
	}

	bob := connectClient(t, ctx, n, room, "bob")
	alice := connectClient(t, ctx, n, room, "alice", asserted)
	attrs := func() map[string]string {
		if p := bob.room.GetParticipantByIdentity("alice"); p != nil {
			return p.Attributes()
		}
		return nil
	}
	eventually(t, 10*time.Second, "bob sees alice's matrix_user_id", func() bool { return attrs()["matrix_user_id"] == userID })

	alice.room.LocalParticipant.SetAttributes(map[string]string{"matrix_user_id": "@mallory:evil.example"})
	alice.room.LocalParticipant.SetAttributes(map[string]string{"matrix_user_id": ""})
	// Signal requests are handled in order: once this one shows, the
	// two before it have been handled.
	alice.room.LocalParticipant.SetAttributes(map[string]string{"mood": "happy"})
	eventually(t, 10*time.Second, "bob sees alice's own attribute", func() bool { return attrs()["mood"] == "happy" })
	require.Equal(t, userID, attrs()["matrix_user_id"], "the token's attribute is unchanged")
}
