package rtc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// connectedClient joins a pion client whose subscriber connection is up.
func connectedClient(tb testing.TB) *testClient {
	tb.Helper()
	sfu, eng := newTestSFU(tb)
	room, err := sfu.CreateRoom("trickle")
	require.NoError(tb, err)
	c := joinClient(tb, clientAPI(tb, false), eng, room, "alice")
	tb.Cleanup(c.close)
	deadline := time.Now().Add(20 * time.Second)
	for !c.tr.connected.Load() {
		require.True(tb, time.Now().Before(deadline), "subscriber connection did not come up")
		time.Sleep(10 * time.Millisecond)
	}
	return c
}

// candidateSeeds are trickle candidate_init strings as livekit-client sends
// them (JSON.stringify of an RTCIceCandidateInit), and broken forms.
var candidateSeeds = []string{
	`{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw"}`,
	`{"candidate":"candidate:1467250027 1 udp 2122260223 192.168.1.10 56143 typ host generation 0 ufrag EsAw network-id 1","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw"}`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}`,
	`{"candidate":"candidate:2 1 tcp 1518280447 192.168.1.10 9 typ host tcptype active generation 0","sdpMid":"0"}`,
	`{"candidate":"candidate:3 1 udp 2122262783 2001:db8::1 51234 typ host generation 0","sdpMid":"0"}`,
	`{"candidate":"candidate:4 1 udp 2113937151 4f1c0b33-2d9a-4e6f-9b51-55b8a1a1c0de.local 53211 typ host","sdpMid":"0"}`,
	`{"candidate":"","sdpMid":"0","sdpMLineIndex":0}`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"7"}`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMLineIndex":65535}`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"}`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 99999 typ host","sdpMid":"0"}`,
	`{"candidate":"candidate:1 1 udp 2130706431 example.com 50000 typ host","sdpMid":"0"}`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ relay","sdpMid":"0"}`,
	`{"candidate":"candidate:1 1 udp","sdpMid":"0"}`,
	`{"candidate":"not a candidate","sdpMid":"0"}`,
	`{"candidate":5}`,
	`{}`, `null`, `[]`, `"candidate"`, ``, `{`,
	`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host ` + strings.Repeat("x", maxCandidateInit) + `","sdpMid":"0"}`,
}

// FuzzHandleCandidate feeds arbitrary trickle candidate_init strings, as
// they arrive in a SignalRequest's TrickleRequest, to a participant whose
// subscriber connection is up (SUBSCRIBER target) and whose publisher
// connection has no remote description yet (PUBLISHER: the queue). A
// refusal must be media.ErrInvalidCandidate; the queue stays bounded; nothing
// tears the working connection down.
func FuzzHandleCandidate(f *testing.F) {
	c := connectedClient(f)
	for _, s := range candidateSeeds {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, candidateInit string, subscriber bool) {
		target := Publisher
		if subscriber {
			target = Subscriber
		}
		cand, err := ParseCandidate(candidateInit)
		if len(candidateInit) > maxCandidateInit {
			require.ErrorIs(t, err, media.ErrInvalidCandidate)
		}
		if err == nil {
			err = c.tr.HandleCandidate(cand, target)
		}
		if err != nil {
			require.ErrorIs(t, err, media.ErrInvalidCandidate)
		}
		c.tr.pubMu.Lock()
		queued := len(c.tr.pubCands)
		c.tr.pubMu.Unlock()
		require.LessOrEqual(t, queued, maxPendingCandidates)
		c.tr.negMu.Lock()
		added := c.tr.subAdded
		c.tr.negMu.Unlock()
		require.LessOrEqual(t, added, maxRemoteCandidates)
		require.True(t, c.p.Started(), "still in the room")
		require.Equal(t, webrtc.PeerConnectionStateConnected, c.tr.sub.ConnectionState())
		require.Empty(t, c.sig.of("leave"))
	})
}

// TestMalformedCandidatesKeepTheConnection: after every seed candidate,
// good or bad, on its working subscriber connection, a participant still
// receives what another publishes.
func TestMalformedCandidatesKeepTheConnection(t *testing.T) {
	alice := connectedClient(t)
	for _, s := range candidateSeeds {
		if c, err := ParseCandidate(s); err == nil {
			_ = alice.tr.HandleCandidate(c, Subscriber)
		}
	}
	bob := joinClient(t, clientAPI(t, false), alice.eng, alice.p.Room(), "bob")
	t.Cleanup(bob.close)
	audio, _ := bob.publish(t)
	deadline := time.Now().Add(20 * time.Second)
	for seq := uint16(1); alice.got(webrtc.RTPCodecTypeAudio) < 10; seq++ {
		require.True(t, time.Now().Before(deadline), "no audio reached alice")
		require.NoError(t, audio.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960},
			Payload: []byte{0xfc, 0xff, 0xfe},
		}))
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, webrtc.PeerConnectionStateConnected, alice.tr.sub.ConnectionState())
	require.Empty(t, alice.sig.of("leave"))
}

// TestRemoteCandidatesBounded: a client trickling ever more candidates on a
// working connection is refused past the bound, and the connection stays.
func TestRemoteCandidatesBounded(t *testing.T) {
	alice := connectedClient(t)
	refused := 0
	for i := range 2 * maxRemoteCandidates {
		// Loopback addresses, so that no connectivity check leaves the host.
		line := fmt.Sprintf("candidate:%d 1 udp 2130706431 127.1.%d.%d %d typ host", i, i/250, i%250+1, 40000+i)
		err := alice.tr.HandleCandidate(webrtc.ICECandidateInit{Candidate: line, SDPMid: &[]string{"0"}[0]}, Subscriber)
		if err != nil {
			require.ErrorIs(t, err, media.ErrInvalidCandidate)
			refused++
		} else {
			require.Zero(t, refused, "candidate %d accepted after a refusal", i)
		}
	}
	require.Greater(t, refused, maxRemoteCandidates-1)
	require.NoError(t, alice.tr.HandleCandidate(webrtc.ICECandidateInit{Candidate: ""}, Subscriber),
		"end of candidates is not a candidate")
	require.Equal(t, webrtc.PeerConnectionStateConnected, alice.tr.sub.ConnectionState())
}
