package media

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRemoteParticipant covers what the core keeps for federation: a
// participant that joined at another node carries its origin in every
// snapshot, speaks as its node reports (and only as it reports), and its
// track's demand follows what this node's subscribers ask for.
func TestRemoteParticipant(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("fed", true)
	require.NoError(t, err)
	ctx := context.Background()

	remote, _, err := r.Join(ctx, JoinParams{Identity: "@bob:b.example:DEV", Origin: "b.example",
		Permissions: Permissions{CanPublish: true}, Signaller: newRecordingSignaller(), Transport: newFakeTransport(nil)})
	require.NoError(t, err)
	require.NoError(t, remote.Start(ctx))
	require.Equal(t, "b.example", remote.Origin())
	require.NoError(t, remote.AddTrack(ctx, &AddTrackRequest{Cid: "TR_cam", Kind: KindVideo,
		Layers: []VideoLayer{{Quality: QualityLow}, {Quality: QualityMedium}, {Quality: QualityHigh}}}))
	layers := make(chan *Layer, 1)
	remote.Receive(IncomingStream{TrackID: "TR_cam", Codec: Codec{MimeType: "video/VP8", ClockRate: 90000}, SSRC: 9,
		Start: func(l *Layer) { layers <- l }})
	var up *UpTrack
	select {
	case l := <-layers:
		up = l.Track()
	case <-time.After(5 * time.Second):
		t.Fatal("the remote stream never started")
	}
	require.Equal(t, QualityOff, up.Demand(), "nobody here subscribes")

	sig := newRecordingSignaller()
	local, join, err := r.Join(ctx, JoinParams{Identity: "alice", Permissions: allowAll(), Signaller: sig, Transport: newFakeTransport(sig)})
	require.NoError(t, err)
	require.Len(t, join.Others, 1)
	require.Equal(t, "b.example", join.Others[0].Origin, "the snapshot says where the participant joined")
	require.Empty(t, join.Participant.Origin, "a local participant has no origin")
	require.NoError(t, local.Start(ctx))
	require.Equal(t, []Connection{{Room: "fed", Identity: "@bob:b.example:DEV", Origin: "b.example"}, {Room: "fed", Identity: "alice"}},
		s.Connections(ctx), "the connection list says who joined elsewhere")
	require.NoError(t, local.UpdateSubscription(ctx, []string{up.SID()}, true))
	require.Eventually(t, func() bool { return up.Demand() == QualityHigh }, 5*time.Second, 10*time.Millisecond,
		"a new subscription wants the best layer")
	require.NoError(t, local.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{up.SID()}, Quality: QualityLow}))
	require.Eventually(t, func() bool { return up.Demand() == QualityLow }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, local.UpdateTrackSettings(ctx, &TrackSettings{TrackSids: []string{up.SID()}, Disabled: true}))
	require.Eventually(t, func() bool { return up.Demand() == QualityOff }, 5*time.Second, 10*time.Millisecond,
		"a hidden tile wants nothing")

	// Speaking: the remote node's report, merged at the room's tick.
	local.ReportSpeaking(0.9) // ignored: the room measures its own participants
	remote.ReportSpeaking(0.5)
	speaker := func(active bool) bool {
		for _, e := range sig.of("speakers") {
			for _, sp := range e.speakers {
				if sp.Sid == local.SID() {
					t.Errorf("a local participant's report counted")
				}
				if sp.Sid == remote.SID() && sp.Active == active {
					return true
				}
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return speaker(true) }, 5*time.Second, 20*time.Millisecond)
	remote.ReportSpeaking(0)
	require.Eventually(t, func() bool { return speaker(false) }, 5*time.Second, 20*time.Millisecond)
}
