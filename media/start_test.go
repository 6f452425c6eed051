package media

import (
	"testing"

	"github.com/livekit/protocol/livekit"
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
	a, _, err := r.Join(JoinParams{Identity: "a", Permissions: allowAll(), AutoSubscribe: true, Signaller: sa, Transport: newFakeTransport(sa)})
	require.NoError(t, err)
	a.Start()
	b, info, err := r.Join(JoinParams{Identity: "b", Permissions: allowAll(), AutoSubscribe: true, Signaller: sb, Transport: newFakeTransport(sb)})
	require.NoError(t, err)
	require.Len(t, info.Others, 1)
	require.Empty(t, info.Others[0].Tracks, "a published nothing yet when b joined")

	// a publishes a video track while b's join answer is on its way.
	codec := Codec{MimeType: "video/VP8", ClockRate: 90000}
	up := newUpTrack("TR_VTEST", "cam", a, codec, 0)
	a.mu.Lock()
	a.pending["cam"] = &pendingTrack{cid: "cam", info: &livekit.TrackInfo{Sid: up.sid, Type: livekit.TrackType_VIDEO, MimeType: codec.MimeType}, up: up}
	a.published[up.sid] = up
	a.version++
	a.mu.Unlock()
	r.trackPublished(a, up)
	require.NoError(t, a.UpdateMetadata("", "changed", nil))
	require.Empty(t, sb.of("offer"), "no offer before the join answer")
	require.Empty(t, sb.of("participants"), "no update before the join answer")

	b.Start()
	var firstUpdate, firstOffer = -1, -1
	sb.mu.Lock()
	events := append([]sigEvent(nil), sb.events...)
	sb.mu.Unlock()
	for i, e := range events {
		if e.kind == "participants" && firstUpdate < 0 {
			for _, p := range e.infos {
				if p.Identity == "a" && len(p.Tracks) == 1 && p.Tracks[0].Sid == up.sid {
					firstUpdate = i
				}
			}
		}
		if e.kind == "offer" && firstOffer < 0 {
			firstOffer = i
			require.Contains(t, mapValues(e.mids), up.sid, "the first offer carries a's track")
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
