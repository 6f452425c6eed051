package rtc

import (
	"context"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// chromeAnswerDataOnly is Chrome's answer to a subscriber offer that carries
// only the data channels, what a participant gets before anyone publishes.
const chromeAnswerDataOnly = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0\r\n" +
	"a=extmap-allow-mixed\r\n" +
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

// answerVariants are broken forms of the Chrome answer.
func answerVariants() []string {
	a := chromeAnswerDataOnly
	return []string{
		"", "v=0\r\n", "garbage", a[:len(a)/2],
		strings.ReplaceAll(a, "\r\n", "\n"),
		strings.Replace(a, "a=setup:active", "a=setup:actpass", 1),
		strings.Replace(a, "a=setup:active", "a=setup:passive", 1),
		strings.Replace(a, "a=mid:0", "a=mid:7", 1),
		strings.Replace(a, "a=group:BUNDLE 0", "a=group:BUNDLE 0 1", 1),
		strings.Replace(a, "a=fingerprint:sha-256", "a=fingerprint:md5", 1),
		strings.Replace(a, "a=sctp-port:5000", "a=sctp-port:99999999", 1),
		strings.Replace(a, "a=max-message-size:262144", "a=max-message-size:-1", 1),
		strings.Replace(a, "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=audio 9 UDP/TLS/RTP/SAVPF 111", 1),
		a + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n",
		strings.Replace(a, "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n", "", 1),
	}
}

// FuzzHandleAnswer feeds arbitrary SDP as the answer to a fresh
// participant's first subscriber offer. It must not panic, and:
//   - an accepted answer leaves the subscriber connection stable and able
//     to send its next offer;
//   - a refused one is media.ErrInvalidSDP, and either leaves the offer open so
//     that the client's good answer is still accepted, or, when pion had
//     applied it halfway, asks the client for a full reconnect and removes
//     the participant: never a participant that can no longer negotiate.
//
// The answer's size is bounded before it gets here, by the signal frame
// limit (media/livekit maxSignalMessage, 1 MiB).
//
// Each input costs a participant with two peer connections: fuzz with
// -fuzzminimizetime 20x, or the default minute of minimizing each new
// input at a few runs a second takes the whole run (so for FuzzHandleOffer).
func FuzzHandleAnswer(f *testing.F) {
	env := newOfferEnv(f)
	f.Add(chromeAnswerDataOnly)
	for _, v := range answerVariants() {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, sdp string) {
		p, rec := env.join(t)
		p.p.Start(context.Background())
		offers := rec.of("offer")
		require.Len(t, offers, 1)
		id := offers[0].id
		err := p.HandleAnswer(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}, id)
		if err == nil {
			require.Empty(t, rec.of("leave"))
			require.Equal(t, webrtc.SignalingStateStable, p.sub.SignalingState())
			p.Negotiate()
			require.Len(t, rec.of("offer"), 2, "no offer can follow the accepted answer")
			return
		}
		require.ErrorIs(t, err, media.ErrInvalidSDP)
		if len(rec.of("leave")) > 0 {
			requireFullReconnect(t, env, p, rec)
			return
		}
		require.Equal(t, webrtc.SignalingStateHaveLocalOffer, p.sub.SignalingState())
		require.NoError(t, p.HandleAnswer(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: chromeAnswerDataOnly}, id),
			"the good answer after a refused one")
		require.Equal(t, webrtc.SignalingStateStable, p.sub.SignalingState())
		require.Empty(t, rec.of("leave"))
		require.True(t, p.p.Started(), "still in the room")
	})
}

func TestHandleAnswerChrome(t *testing.T) {
	env := newOfferEnv(t)
	p, rec := env.join(t)
	p.p.Start(context.Background())
	offers := rec.of("offer")
	require.Len(t, offers, 1)
	require.NoError(t, p.HandleAnswer(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: chromeAnswerDataOnly}, offers[0].id))
	require.Equal(t, webrtc.SignalingStateStable, p.sub.SignalingState())
	require.Empty(t, rec.of("leave"))
}
