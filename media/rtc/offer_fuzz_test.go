package rtc

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// chromeOffer is a publisher offer shaped like Chrome's when livekit-client
// publishes a microphone, a camera with three simulcast layers, and opens
// its data channel.
func chromeOffer() string {
	const fp = "a=fingerprint:sha-256 5C:3F:9E:1B:72:4A:D0:88:61:0E:AF:34:C2:19:7B:E5:90:4D:2A:6C:B3:11:F8:07:DE:55:83:29:C6:4B:E0:1F\r\n"
	const ice = "a=ice-ufrag:Zn3b\r\na=ice-pwd:Hq0ADk3Tnz1GQbVjcwQ8XxoS\r\na=ice-options:trickle\r\n"
	return "v=0\r\n" +
		"o=- 7213464329176562397 2 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"t=0 0\r\n" +
		"a=group:BUNDLE 0 1 2\r\n" +
		"a=extmap-allow-mixed\r\n" +
		"a=msid-semantic: WMS 9f4d1c3e-6b0a-4f7e-8d5c-2a1b3c4d5e6f\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n" +
		"c=IN IP4 0.0.0.0\r\n" +
		"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
		ice + fp +
		"a=setup:actpass\r\n" +
		"a=mid:0\r\n" +
		"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n" +
		"a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n" +
		"a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n" +
		"a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n" +
		"a=sendonly\r\n" +
		"a=msid:9f4d1c3e-6b0a-4f7e-8d5c-2a1b3c4d5e6f 3c2b1a09-mic\r\n" +
		"a=rtcp-mux\r\n" +
		"a=rtcp-rsize\r\n" +
		"a=rtpmap:111 opus/48000/2\r\n" +
		"a=rtcp-fb:111 transport-cc\r\n" +
		"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
		"a=rtpmap:63 red/48000/2\r\n" +
		"a=fmtp:63 111/111\r\n" +
		"a=rtpmap:9 G722/8000\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=rtpmap:13 CN/8000\r\n" +
		"a=rtpmap:110 telephone-event/48000\r\n" +
		"a=rtpmap:126 telephone-event/8000\r\n" +
		"a=ssrc:3573218944 cname:8wlTqOZ1mQ8tN0dJ\r\n" +
		"a=ssrc:3573218944 msid:9f4d1c3e-6b0a-4f7e-8d5c-2a1b3c4d5e6f 3c2b1a09-mic\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 98 99 45 46\r\n" +
		"c=IN IP4 0.0.0.0\r\n" +
		"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
		ice + fp +
		"a=setup:actpass\r\n" +
		"a=mid:1\r\n" +
		"a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n" +
		"a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n" +
		"a=extmap:13 urn:3gpp:video-orientation\r\n" +
		"a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n" +
		"a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n" +
		"a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type\r\n" +
		"a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing\r\n" +
		"a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space\r\n" +
		"a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n" +
		"a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n" +
		"a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n" +
		"a=sendonly\r\n" +
		"a=msid:9f4d1c3e-6b0a-4f7e-8d5c-2a1b3c4d5e6f 7e6d5c4b-cam\r\n" +
		"a=rtcp-mux\r\n" +
		"a=rtcp-rsize\r\n" +
		"a=rtpmap:96 VP8/90000\r\n" +
		"a=rtcp-fb:96 goog-remb\r\n" +
		"a=rtcp-fb:96 transport-cc\r\n" +
		"a=rtcp-fb:96 ccm fir\r\n" +
		"a=rtcp-fb:96 nack\r\n" +
		"a=rtcp-fb:96 nack pli\r\n" +
		"a=rtpmap:97 rtx/90000\r\n" +
		"a=fmtp:97 apt=96\r\n" +
		"a=rtpmap:102 H264/90000\r\n" +
		"a=rtcp-fb:102 goog-remb\r\n" +
		"a=rtcp-fb:102 transport-cc\r\n" +
		"a=rtcp-fb:102 ccm fir\r\n" +
		"a=rtcp-fb:102 nack\r\n" +
		"a=rtcp-fb:102 nack pli\r\n" +
		"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n" +
		"a=rtpmap:103 rtx/90000\r\n" +
		"a=fmtp:103 apt=102\r\n" +
		"a=rtpmap:98 VP9/90000\r\n" +
		"a=rtcp-fb:98 goog-remb\r\n" +
		"a=rtcp-fb:98 transport-cc\r\n" +
		"a=rtcp-fb:98 ccm fir\r\n" +
		"a=rtcp-fb:98 nack\r\n" +
		"a=rtcp-fb:98 nack pli\r\n" +
		"a=fmtp:98 profile-id=0\r\n" +
		"a=rtpmap:99 rtx/90000\r\n" +
		"a=fmtp:99 apt=98\r\n" +
		"a=rtpmap:45 AV1/90000\r\n" +
		"a=rtcp-fb:45 goog-remb\r\n" +
		"a=rtcp-fb:45 transport-cc\r\n" +
		"a=rtcp-fb:45 ccm fir\r\n" +
		"a=rtcp-fb:45 nack\r\n" +
		"a=rtcp-fb:45 nack pli\r\n" +
		"a=fmtp:45 level-idx=5;profile=0;tier=0\r\n" +
		"a=rtpmap:46 rtx/90000\r\n" +
		"a=fmtp:46 apt=45\r\n" +
		"a=rid:q send\r\n" +
		"a=rid:h send\r\n" +
		"a=rid:f send\r\n" +
		"a=simulcast:send q;h;f\r\n" +
		"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" +
		"c=IN IP4 0.0.0.0\r\n" +
		ice + fp +
		"a=setup:actpass\r\n" +
		"a=mid:2\r\n" +
		"a=sctp-port:5000\r\n" +
		"a=max-message-size:262144\r\n"
}

// offerVariants are broken forms of the Chrome offer, as a buggy or hostile
// client might send them.
func offerVariants() map[string]string {
	o := chromeOffer()
	lines := strings.Split(o, "\r\n")
	without := func(prefix string) string {
		var keep []string
		for _, l := range lines {
			if !strings.HasPrefix(l, prefix) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\r\n")
	}
	return map[string]string{
		"empty":                 "",
		"version only":          "v=0\r\n",
		"not sdp":               "hello, world",
		"truncated in a line":   o[:len(o)/2],
		"truncated after video": o[:strings.Index(o, "m=application")],
		"no fingerprint":        without("a=fingerprint"),
		"no ice credentials":    without("a=ice-"),
		"no mids":               without("a=mid:"),
		"no rtpmap":             without("a=rtpmap"),
		"LF line endings":       strings.ReplaceAll(o, "\r\n", "\n"),
		"bad port":              strings.Replace(o, "m=audio 9 ", "m=audio x ", 1),
		"huge payload type":     strings.Replace(o, "a=rtpmap:111 opus", "a=rtpmap:99999999999 opus", 1),
		"rid without simulcast": without("a=simulcast"),
		"simulcast unknown rid": strings.Replace(o, "a=simulcast:send q;h;f", "a=simulcast:send q;h;f;z;;~", 1),
		"duplicate mid":         strings.Replace(o, "a=mid:1", "a=mid:0", 1),
		"bundle names nothing":  strings.Replace(o, "a=group:BUNDLE 0 1 2", "a=group:BUNDLE 7", 1),
		"reversed lines": func() string {
			r := append([]string(nil), lines...)
			for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
				r[i], r[j] = r[j], r[i]
			}
			return strings.Join(r, "\r\n")
		}(),
	}
}

// offerEnv joins fresh participants to one room of an in-process SFU.
type offerEnv struct {
	sfu  *media.SFU
	eng  *Engine
	room *media.Room
}

func newOfferEnv(tb testing.TB) *offerEnv {
	tb.Helper()
	sfu, eng := newTestSFU(tb)
	r, err := sfu.CreateRoom("offers")
	require.NoError(tb, err)
	return &offerEnv{sfu: sfu, eng: eng, room: r}
}

// join adds a participant and returns its transport, through which the
// tests negotiate.
func (e *offerEnv) join(tb testing.TB) (*Transport, *recordingSignaller) {
	tb.Helper()
	rec := newRecordingSignaller()
	p, t := join(tb, e.eng, e.room, media.JoinParams{Identity: "publisher", Permissions: allowAll()}, rec)
	tb.Cleanup(func() { e.room.RemoveParticipant(p.Identity(), media.ReasonClientInitiated) })
	return t, rec
}

func TestHandleOfferChrome(t *testing.T) {
	env := newOfferEnv(t)
	p, rec := env.join(t)
	require.NoError(t, p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: chromeOffer()}, 7))
	answers := rec.of("answer")
	require.Len(t, answers, 1)
	require.Equal(t, uint32(7), answers[0].id)
	a := answers[0].sd.SDP
	require.Equal(t, webrtc.SDPTypeAnswer, answers[0].sd.Type)
	for _, want := range []string{
		"a=rtpmap:111 opus/48000/2", "a=rtpmap:96 VP8/90000", "a=rtpmap:102 H264/90000",
		"a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f",
		"m=application", "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
	} {
		require.Contains(t, a, want)
	}
	require.NotContains(t, a, "VP9", "VP9 is not offered to publishers")
	require.NotContains(t, a, "AV1")
}

func TestHandleOfferRefusals(t *testing.T) {
	env := newOfferEnv(t)
	t.Run("an answer is not an offer", func(t *testing.T) {
		p, rec := env.join(t)
		err := p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: chromeOffer()}, 1)
		require.ErrorIs(t, err, media.ErrInvalidSDP)
		require.Empty(t, rec.of("answer"))
	})
	for _, name := range []string{"empty", "version only", "not sdp", "no fingerprint", "no ice credentials", "bad port"} {
		t.Run(name, func(t *testing.T) {
			p, rec := env.join(t)
			err := p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerVariants()[name]}, 1)
			require.ErrorIs(t, err, media.ErrInvalidSDP)
			require.Empty(t, rec.of("answer"))
		})
	}
	t.Run("a good offer after an unparsable one", func(t *testing.T) {
		p, rec := env.join(t)
		require.ErrorIs(t, p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: "not sdp"}, 1), media.ErrInvalidSDP)
		require.Empty(t, rec.of("leave"))
		require.NoError(t, p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: chromeOffer()}, 2))
		require.Len(t, rec.of("answer"), 1)
	})
}

// requireFullReconnect checks that p was told to reconnect and removed.
func requireFullReconnect(t *testing.T, env *offerEnv, p *Transport, rec *recordingSignaller) {
	t.Helper()
	leaves := rec.of("leave")
	require.Len(t, leaves, 1)
	require.Equal(t, media.ReasonStateMismatch, leaves[0].reason)
	require.Equal(t, media.LeaveReconnect, leaves[0].action)
	// The room closes a removed participant's transport on a goroutine
	// of its own.
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.closed
	}, 10*time.Second, 5*time.Millisecond, "the transport is closed")
	require.False(t, env.sfu.HasParticipant(env.room.Name(), p.p.Identity()))
}

// TestHalfAppliedDescriptions: pion moves the signalling state before it
// has finished checking a description and cannot roll back, so a
// description it refuses late leaves the connection stuck. The client is
// then asked for a full reconnect instead of being left unable to publish
// or subscribe.
func TestHalfAppliedDescriptions(t *testing.T) {
	env := newOfferEnv(t)
	for _, name := range []string{"no fingerprint", "no ice credentials", "no mids", "version only"} {
		t.Run("offer "+name, func(t *testing.T) {
			p, rec := env.join(t)
			err := p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerVariants()[name]}, 1)
			require.ErrorIs(t, err, media.ErrInvalidSDP)
			requireFullReconnect(t, env, p, rec)
		})
	}
	t.Run("answer without ICE credentials", func(t *testing.T) {
		p, rec := env.join(t)
		p.p.Start(context.Background())
		offers := rec.of("offer")
		require.Len(t, offers, 1)
		noICE := strings.Replace(strings.Replace(chromeAnswerDataOnly, "a=ice-ufrag:EsAw\r\n", "", 1), "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n", "", 1)
		err := p.HandleAnswer(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: noICE}, offers[0].id)
		require.ErrorIs(t, err, media.ErrInvalidSDP)
		requireFullReconnect(t, env, p, rec)
	})
	t.Run("unparsable answer keeps the offer open", func(t *testing.T) {
		p, rec := env.join(t)
		p.p.Start(context.Background())
		offers := rec.of("offer")
		require.Len(t, offers, 1)
		err := p.HandleAnswer(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: "garbage"}, offers[0].id)
		require.ErrorIs(t, err, media.ErrInvalidSDP)
		require.Empty(t, rec.of("leave"))
		require.Equal(t, webrtc.SignalingStateHaveLocalOffer, p.sub.SignalingState())
	})
}

// FuzzHandleOffer feeds arbitrary SDP to a fresh participant's publisher
// connection. It must not panic; every refusal must be media.ErrInvalidSDP; every
// acceptance must send exactly one answer.
func FuzzHandleOffer(f *testing.F) {
	env := newOfferEnv(f)
	f.Add(chromeOffer())
	variants := offerVariants()
	for _, name := range slices.Sorted(maps.Keys(variants)) {
		f.Add(variants[name])
	}
	f.Fuzz(func(t *testing.T, sdp string) {
		rec := newRecordingSignaller()
		pp, p := join(t, env.eng, env.room, media.JoinParams{Identity: "publisher", Permissions: allowAll()}, rec)
		defer env.room.RemoveParticipant(pp.Identity(), media.ReasonClientInitiated)
		err := p.HandleOffer(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}, 1)
		if err != nil {
			require.ErrorIs(t, err, media.ErrInvalidSDP)
			require.Empty(t, rec.of("answer"))
			if len(rec.of("leave")) == 0 {
				// Refused without harm: the next offer can still be applied.
				require.Equal(t, webrtc.SignalingStateStable, p.pub.SignalingState())
			} else {
				require.Equal(t, media.LeaveReconnect, rec.of("leave")[0].action)
				require.False(t, env.sfu.HasParticipant(env.room.Name(), pp.Identity()))
			}
			return
		}
		require.Len(t, rec.of("answer"), 1)
		require.Empty(t, rec.of("leave"))
	})
}
