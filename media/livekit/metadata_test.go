package livekit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
)

// TestUpdateMetadataAnswers: every update_metadata is answered with a
// RequestResponse carrying its request id, as LiveKit answers them
// (livekit-client waits for it): NOT_ALLOWED without the
// canUpdateOwnMetadata grant or for the token's own attributes,
// LIMIT_EXCEEDED over a size limit or past the update rate, OK otherwise.
// Another participant sees only what was accepted.
func TestUpdateMetadataAnswers(t *testing.T) {
	srv, _ := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	yes, no := true, false
	token := func(identity string, canUpdate *bool) string {
		return mint(t, identity, &auth.VideoGrant{RoomJoin: true, Room: "meta", CanUpdateOwnMetadata: canUpdate}, func(at *auth.AccessToken) {
			at.SetAttributes(map[string]string{"matrix_user_id": "@" + identity + ":example.com"})
		})
	}
	owner := dialRaw(t, ctx, srv, token("ann", &yes))
	locked := dialRaw(t, ctx, srv, token("bob", &no))
	watcher := dialRaw(t, ctx, srv, token("cid", &no))

	var id uint32
	update := func(c *rawClient, u *livekit.UpdateParticipantMetadata) *livekit.RequestResponse {
		id++
		u.RequestId = id
		require.NoError(t, c.send(ctx, &livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateMetadata{UpdateMetadata: u}}))
		m := c.readUntil(ctx, func(m *livekit.SignalResponse) bool { return m.GetRequestResponse() != nil })
		require.Equal(t, id, m.GetRequestResponse().GetRequestId())
		return m.GetRequestResponse()
	}

	tests := []struct {
		name   string
		client *rawClient
		update *livekit.UpdateParticipantMetadata
		want   livekit.RequestResponse_Reason
	}{
		{"no grant", locked, &livekit.UpdateParticipantMetadata{Metadata: "mine"}, livekit.RequestResponse_NOT_ALLOWED},
		{"metadata too large", owner, &livekit.UpdateParticipantMetadata{Metadata: strings.Repeat("m", 64001)}, livekit.RequestResponse_LIMIT_EXCEEDED},
		{"name too long", owner, &livekit.UpdateParticipantMetadata{Name: strings.Repeat("n", 257)}, livekit.RequestResponse_INVALID_REQUEST},
		{"overwrite the token's attribute", owner, &livekit.UpdateParticipantMetadata{Attributes: map[string]string{"matrix_user_id": "@mallory:evil.example"}}, livekit.RequestResponse_NOT_ALLOWED},
		{"delete the token's attribute", owner, &livekit.UpdateParticipantMetadata{Attributes: map[string]string{"matrix_user_id": ""}}, livekit.RequestResponse_NOT_ALLOWED},
		{"allowed", owner, &livekit.UpdateParticipantMetadata{Name: "Ann", Metadata: "ok", Attributes: map[string]string{"mood": "happy"}}, livekit.RequestResponse_OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, update(tc.client, tc.update).GetReason())
		})
	}

	// The watcher's last view of ann is the accepted update's.
	m := watcher.readUntil(ctx, func(m *livekit.SignalResponse) bool {
		for _, p := range m.GetUpdate().GetParticipants() {
			if p.Identity == "ann" && p.Metadata == "ok" {
				return true
			}
		}
		return false
	})
	for _, p := range m.GetUpdate().GetParticipants() {
		if p.Identity == "ann" {
			require.Equal(t, map[string]string{"matrix_user_id": "@ann:example.com", "mood": "happy"}, p.Attributes)
			require.Equal(t, "Ann", p.Name)
		}
	}

	// A burst: the first updates pass, the rest are refused.
	var limited int
	for i := range 30 {
		r := update(owner, &livekit.UpdateParticipantMetadata{Metadata: "burst" + strings.Repeat("!", i)})
		if r.GetReason() == livekit.RequestResponse_LIMIT_EXCEEDED {
			limited++
		} else {
			require.Equal(t, livekit.RequestResponse_OK, r.GetReason())
		}
	}
	require.Positive(t, limited, "a burst of 30 updates is rate limited")
}
