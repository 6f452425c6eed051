package livekit

import (
	"net"
	"sync"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
	"entente.dev/entente/media/rtc"
)

// recordingSignaller is a media.Signaller that keeps what it is told, for
// tests that drive a participant without a websocket client.
type recordingSignaller struct {
	mu         sync.Mutex
	offers     int
	answers    []webrtc.SessionDescription
	candidates int
	updates    int
	published  []*livekit.TrackInfo
	speakers   int
	leaves     []livekit.DisconnectReason
}

var (
	_ media.Signaller = (*recordingSignaller)(nil)
	_ rtc.Signaller   = (*recordingSignaller)(nil)
)

// testNode is an SFU and a WebRTC engine on loopback, closed when the test
// ends (the SFU first: its rooms close their transports).
func testNode(tb testing.TB, cfg media.Config) (*media.SFU, *rtc.Engine) {
	tb.Helper()
	eng, err := rtc.NewEngine(rtc.Config{BindAddress: net.IPv4(127, 0, 0, 1)}, zerolog.Nop())
	require.NoError(tb, err)
	sfu := media.New(cfg, zerolog.Nop(), nil)
	tb.Cleanup(func() {
		sfu.Close()
		_ = eng.Close()
	})
	return sfu, eng
}

func (r *recordingSignaller) SendOffer(webrtc.SessionDescription, uint32, map[string]string) {
	r.mu.Lock()
	r.offers++
	r.mu.Unlock()
}

func (r *recordingSignaller) SendAnswer(sd webrtc.SessionDescription, _ uint32) {
	r.mu.Lock()
	r.answers = append(r.answers, sd)
	r.mu.Unlock()
}

func (r *recordingSignaller) SendCandidate(*webrtc.ICECandidateInit, rtc.Target) {
	r.mu.Lock()
	r.candidates++
	r.mu.Unlock()
}

func (r *recordingSignaller) SendParticipants([]*media.ParticipantInfo) {
	r.mu.Lock()
	r.updates++
	r.mu.Unlock()
}

// SendTrackPublished records the TrackInfo as a LiveKit client would get it.
func (r *recordingSignaller) SendTrackPublished(_ string, info *media.TrackInfo) {
	r.mu.Lock()
	r.published = append(r.published, trackInfo(info))
	r.mu.Unlock()
}

func (r *recordingSignaller) SendSpeakers([]media.SpeakerInfo) {
	r.mu.Lock()
	r.speakers++
	r.mu.Unlock()
}

func (r *recordingSignaller) SendLeave(reason media.DisconnectReason, _ media.LeaveAction) {
	r.mu.Lock()
	r.leaves = append(r.leaves, livekit.DisconnectReason(reason))
	r.mu.Unlock()
}
