package media

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNothingReachesAParticipantBeforeStart: between Room.Join and Start
// (while the front end sends the join answer) a newcomer gets no offer and
// no update, even when others publish meanwhile; Start then sends the
// room's current state before the first offer, which carries the track.
// Clients drop offers that precede their JoinResponse and then wait forever
// for a subscriber connection (seen as the Go SDK's connect timeout).
func TestNothingReachesAParticipantBeforeStart(t *testing.T) {
	s := newTestSFU(t)
	r, err := s.Room("start", true)
	require.NoError(t, err)
	sa, sb := newRecordingSignaller(), newRecordingSignaller()
	a, _, err := r.Join(context.Background(), JoinParams{Identity: "a", Permissions: allowAll(), AutoSubscribe: true, Signaller: sa, Transport: newFakeTransport(sa)})
	require.NoError(t, err)
	a.Start(context.Background())
	b, info, err := r.Join(context.Background(), JoinParams{Identity: "b", Permissions: allowAll(), AutoSubscribe: true, Signaller: sb, Transport: newFakeTransport(sb)})
	require.NoError(t, err)
	require.Len(t, info.Others, 1)
	require.Empty(t, info.Others[0].Tracks, "a published nothing yet when b joined")

	// a publishes a video track while b's join answer is on its way.
	require.NoError(t, a.AddTrack(context.Background(), &AddTrackRequest{Cid: "cam", Kind: KindVideo, Source: SourceCamera}))
	a.Receive(IncomingStream{TrackID: "cam", Codec: Codec{MimeType: "video/VP8", ClockRate: 90000}, SSRC: 1})
	// Applied after the track is published: the room applies in order.
	require.NoError(t, a.UpdateMetadata(context.Background(), "", "changed", nil))
	published := sa.of("published")
	require.Len(t, published, 1)
	up := published[0].track
	require.Empty(t, sb.of("offer"), "no offer before the join answer")
	require.Empty(t, sb.of("participants"), "no update before the join answer")

	b.Start(context.Background())
	var firstUpdate, firstOffer = -1, -1
	sb.mu.Lock()
	events := append([]sigEvent(nil), sb.events...)
	sb.mu.Unlock()
	for i, e := range events {
		if e.kind == "participants" && firstUpdate < 0 {
			for _, p := range e.infos {
				if p.Identity == "a" && len(p.Tracks) == 1 && p.Tracks[0].Sid == up.Sid {
					firstUpdate = i
				}
			}
		}
		if e.kind == "offer" && firstOffer < 0 {
			firstOffer = i
			require.Contains(t, mapValues(e.mids), up.Sid, "the first offer carries a's track")
		}
	}
	require.GreaterOrEqual(t, firstUpdate, 0, "b learns of a's track")
	require.GreaterOrEqual(t, firstOffer, 0, "b gets an offer")
	require.Less(t, firstUpdate, firstOffer, "the owner and its track are known before the offer")
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
