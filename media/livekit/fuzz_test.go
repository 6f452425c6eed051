package livekit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
	"entente.dev/entente/media/rtc"
)

// signalEnv is an in-process SFU with one room and a session whose
// websocket is real: the server end is the session's, the client end is
// drained by a goroutine the env owns, which hands it decoded responses.
type signalEnv struct {
	sfu   *media.SFU
	eng   *rtc.Engine
	room  *media.Room
	sess  *session
	ctx   context.Context
	grant *Grant
	resps chan *livekit.SignalResponse
}

func newSignalEnv(tb testing.TB) *signalEnv {
	tb.Helper()
	sfu, eng := testNode(tb, media.Config{AutoCreate: true, EmptyTimeout: time.Minute, DepartureTimeout: time.Minute})
	room, err := sfu.CreateRoom("fuzz")
	require.NoError(tb, err)

	accepted := make(chan *websocket.Conn, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted <- c
		<-release
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(tb, err)
	client.SetReadLimit(maxSignalMessage)
	sess := newSession(<-accepted, zerolog.Nop())

	env := &signalEnv{
		sfu: sfu, eng: eng, room: room, sess: sess, ctx: zerolog.Nop().WithContext(context.Background()),
		grant: &Grant{Identity: "fuzzer", Room: "fuzz", CanPublish: true, CanSubscribe: true, CanPublishData: true, CanUpdateOwn: true},
		resps: make(chan *livekit.SignalResponse, 64),
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, b, err := client.Read(context.Background())
			if err != nil {
				return
			}
			var m livekit.SignalResponse
			if proto.Unmarshal(b, &m) == nil {
				select {
				case env.resps <- &m:
				default: // nobody is looking; keep memory bounded
				}
			}
		}
	}()
	tb.Cleanup(func() {
		sess.wait()
		_ = client.CloseNow()
		wg.Wait()
		close(release)
		srv.Close()
		sfu.Close()
	})
	return env
}

// member is a joined participant and its transport, as /rtc holds them.
type member struct {
	p *media.Participant
	t *rtc.Transport
}

// join adds a fresh participant, started as /rtc starts it.
func (e *signalEnv) join(tb testing.TB) (*member, *recordingSignaller) {
	tb.Helper()
	rec := &recordingSignaller{}
	t := e.eng.NewTransport(rec, zerolog.Nop())
	p, _, err := e.room.Join(context.Background(), media.JoinParams{
		Identity: e.grant.Identity, Permissions: media.Permissions{CanPublish: true, CanSubscribe: true, CanPublishData: true},
		AutoSubscribe: true, Signaller: rec, Transport: t,
	})
	require.NoError(tb, err)
	p.Start(context.Background())
	return &member{p, t}, rec
}

// dispatch runs one frame through the websocket's decode and dispatch path
// and fails when it does not return: a stuck handler would stall the
// client's whole session.
func (e *signalEnv) dispatch(tb testing.TB, m *member, data []byte) bool {
	tb.Helper()
	done := make(chan bool, 1)
	go func() { done <- e.sess.dispatch(e.ctx, m.p, m.t, e.grant, data) }()
	select {
	case ok := <-done:
		return ok
	case <-time.After(10 * time.Second):
		tb.Fatalf("dispatch of %x did not return", data)
		return false
	}
}

func frame(tb testing.TB, m *livekit.SignalRequest) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	require.NoError(tb, err)
	return b
}

// pionOffer is a publisher offer from a real pion peer connection: Opus,
// VP8 with three simulcast RIDs, and a data channel, as livekit-client
// publishes them.
func pionOffer(tb testing.TB) string {
	tb.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	require.NoError(tb, err)
	defer func() { _ = pc.Close() }()
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "TR_mic", "stream")
	require.NoError(tb, err)
	_, err = pc.AddTrack(audio)
	require.NoError(tb, err)
	// Simulcast the way pion sends it: one track per RID on one sender.
	var sender *webrtc.RTPSender
	for _, rid := range []string{"q", "h", "f"} {
		video, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "TR_cam", "stream", webrtc.WithRTPStreamID(rid))
		require.NoError(tb, err)
		if sender == nil {
			sender, err = pc.AddTrack(video)
		} else {
			err = sender.AddEncoding(video)
		}
		require.NoError(tb, err)
	}
	_, err = pc.CreateDataChannel("_reliable", nil)
	require.NoError(tb, err)
	offer, err := pc.CreateOffer(nil)
	require.NoError(tb, err)
	return offer.SDP
}

// answerToDataOnly answers a subscriber offer that carries only the data
// channels (what a participant gets before anyone publishes).
const answerToDataOnly = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0\r\n" +
	"a=msid-semantic: WMS\r\n" +
	"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:EsAw\r\n" +
	"a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n" +
	"a=ice-options:trickle\r\n" +
	"a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n" +
	"a=setup:active\r\n" +
	"a=mid:0\r\n" +
	"a=sctp-port:5000\r\n" +
	"a=max-message-size:262144\r\n"

func signalSeeds(tb testing.TB) [][]byte {
	offer := pionOffer(tb)
	req := func(m *livekit.SignalRequest) []byte { return frame(tb, m) }
	layers := []*livekit.VideoLayer{
		{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180},
		{Quality: livekit.VideoQuality_MEDIUM, Width: 640, Height: 360},
		{Quality: livekit.VideoQuality_HIGH, Width: 1280, Height: 720},
	}
	return [][]byte{
		nil,
		{0xff, 0xff, 0xff},
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: offer, Id: 1}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "offer", Sdp: offer[:len(offer)/2], Id: 2}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{Type: "answer", Sdp: offer}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{Type: "answer", Sdp: answerToDataOnly, Id: 1}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Answer{Answer: &livekit.SessionDescription{Type: "answer", Sdp: answerToDataOnly, Id: 7}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{
			CandidateInit: `{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}`,
			Target:        livekit.SignalTarget_PUBLISHER,
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{
			CandidateInit: `{"candidate":"candidate:2 1 udp 1 ::1 9 typ host","sdpMid":"0"}`,
			Target:        livekit.SignalTarget_SUBSCRIBER,
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Trickle{Trickle: &livekit.TrickleRequest{CandidateInit: `{`}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{
			Cid: "TR_mic", Name: "microphone", Type: livekit.TrackType_AUDIO, Source: livekit.TrackSource_MICROPHONE,
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{
			Cid: "TR_cam", Name: "camera", Type: livekit.TrackType_VIDEO, Source: livekit.TrackSource_CAMERA,
			Width: 1280, Height: 720, Layers: layers,
			SimulcastCodecs: []*livekit.SimulcastCodec{{Codec: "vp8", Cid: "TR_cam"}, {Codec: "h264", Cid: "TR_cam_h264"}},
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Mute{Mute: &livekit.MuteTrackRequest{Sid: "TR_VabcdefGHJKL", Muted: true}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{
			TrackSids: []string{"TR_VabcdefGHJKL"}, Subscribe: true,
			ParticipantTracks: []*livekit.ParticipantTracks{{ParticipantSid: "PA_x", TrackSids: []string{"TR_A", ""}}},
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Subscription{Subscription: &livekit.UpdateSubscription{TrackSids: []string{"TR_A"}}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_TrackSetting{TrackSetting: &livekit.UpdateTrackSettings{
			TrackSids: []string{"TR_VabcdefGHJKL"}, Disabled: true, Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180,
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateMetadata{UpdateMetadata: &livekit.UpdateParticipantMetadata{
			Name: "Fuzzy", Metadata: "{}", Attributes: map[string]string{"k": "v", "gone": ""},
		}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Ping{Ping: 1234}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 1234, Rtt: 20}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{Reason: livekit.DisconnectReason_CLIENT_INITIATED}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_SyncState{SyncState: &livekit.SyncState{}}}),
		req(&livekit.SignalRequest{Message: &livekit.SignalRequest_Simulate{Simulate: &livekit.SimulateScenario{}}}),
	}
}

// FuzzSignalRequest feeds two frames, in order, through the same decode
// and dispatch path as the websocket, to a fresh participant of a real
// in-process room. It must neither panic nor hang; the participant is
// removed after each input, so memory stays bounded.
func FuzzSignalRequest(f *testing.F) {
	env := newSignalEnv(f)
	seeds := signalSeeds(f)
	for _, s := range seeds {
		f.Add(s, []byte(nil))
	}
	// Pairs a client really sends one after the other.
	f.Add(seeds[11], seeds[2]) // add_track, then the offer
	f.Add(seeds[12], seeds[2])
	f.Add(seeds[2], seeds[8])   // offer, then a trickle
	f.Add(seeds[21], seeds[19]) // leave, then a ping to a participant that left
	f.Add(seeds[21], seeds[2])  // leave, then an offer
	f.Add(seeds[20], seeds[21])
	f.Fuzz(func(t *testing.T, a, b []byte) {
		p, _ := env.join(t)
		defer env.room.RemoveParticipant(p.p.Identity(), media.ReasonClientInitiated)
		env.dispatch(t, p, a)
		// Even after a leave: removal can race with a frame being
		// dispatched, so a closed participant must cope too.
		env.dispatch(t, p, b)
	})
}

// TestDispatch checks what dispatch does with a few frames whose effect
// can be seen from outside.
func TestDispatch(t *testing.T) {
	env := newSignalEnv(t)
	t.Run("ping is answered", func(t *testing.T) {
		p, _ := env.join(t)
		defer env.room.RemoveParticipant(p.p.Identity(), media.ReasonClientInitiated)
		require.True(t, env.dispatch(t, p, frame(t, &livekit.SignalRequest{Message: &livekit.SignalRequest_PingReq{PingReq: &livekit.Ping{Timestamp: 42}}})))
		select {
		case m := <-env.resps:
			require.Equal(t, int64(42), m.GetPongResp().GetLastPingTimestamp())
		case <-time.After(5 * time.Second):
			t.Fatal("no pong")
		}
	})
	t.Run("malformed frame keeps the session", func(t *testing.T) {
		p, rec := env.join(t)
		defer env.room.RemoveParticipant(p.p.Identity(), media.ReasonClientInitiated)
		require.True(t, env.dispatch(t, p, []byte{0x0a, 0xff}))
		rec.mu.Lock()
		defer rec.mu.Unlock()
		require.Empty(t, rec.leaves)
	})
	t.Run("add_track is confirmed", func(t *testing.T) {
		p, rec := env.join(t)
		defer env.room.RemoveParticipant(p.p.Identity(), media.ReasonClientInitiated)
		require.True(t, env.dispatch(t, p, frame(t, &livekit.SignalRequest{Message: &livekit.SignalRequest_AddTrack{AddTrack: &livekit.AddTrackRequest{
			Cid: "TR_mic", Type: livekit.TrackType_AUDIO, Source: livekit.TrackSource_MICROPHONE,
		}}})))
		rec.mu.Lock()
		defer rec.mu.Unlock()
		require.Len(t, rec.published, 1)
		require.True(t, strings.HasPrefix(rec.published[0].Sid, "TR_A"))
	})
	t.Run("publisher offer is answered", func(t *testing.T) {
		p, rec := env.join(t)
		defer env.room.RemoveParticipant(p.p.Identity(), media.ReasonClientInitiated)
		require.True(t, env.dispatch(t, p, frame(t, &livekit.SignalRequest{Message: &livekit.SignalRequest_Offer{Offer: &livekit.SessionDescription{
			Type: "offer", Sdp: pionOffer(t), Id: 3,
		}}})))
		rec.mu.Lock()
		defer rec.mu.Unlock()
		require.Len(t, rec.answers, 1)
		require.Contains(t, rec.answers[0].SDP, "a=simulcast:recv q;h;f")
	})
	t.Run("leave ends the session", func(t *testing.T) {
		p, _ := env.join(t)
		require.False(t, env.dispatch(t, p, frame(t, &livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})))
		require.False(t, env.room.RemoveParticipant(p.p.Identity(), media.ReasonClientInitiated), "participant must be gone")
	})
}
