package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMatrixFederatedInvitation: Alice of agency A invites agency B's bot
// into her private room. Dendrite B stores the invitation but never pushes
// it to node B; node B's bot sees it in its own /sync and joins, because A
// is on B's allow list.
func TestMatrixFederatedInvitation(t *testing.T) {
	a := startMatrixNode(t, matrixNodeOptions{})
	b := startMatrixNode(t, matrixNodeOptions{extraMatrix: `allow = ["*"]`})
	alice := a.hs.Register(t, "alice")
	room := a.hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	a.hs.Invite(t, alice, room, b.bot)
	start := time.Now()
	require.Eventually(t, func() bool { return a.hs.IsJoined(t, alice, room, b.bot) }, 60*time.Second, 200*time.Millisecond,
		"node B's bot accepts an invitation it only sees in its own /sync")
	t.Logf("B's bot joined %v after the invitation", time.Since(start).Round(10*time.Millisecond))
}
