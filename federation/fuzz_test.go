package federation

import (
	"testing"
	"time"
)

// FuzzDecodeMessage: whatever a peer sends on the control channel, the
// decoder returns a bounded message or an error, never a panic.
func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"v":1,"t":"hello","versions":[1],"server":"b.test"}`))
	f.Add([]byte(`{"v":1,"t":"participant","participant":{"sid":"PA_1","identity":"@b:b.test:D","tracks":[{"sid":"TR_1","kind":2,"layers":[{"q":0},{"q":2}],"front_end":"CAE="}]}}`))
	f.Add([]byte(`{"v":1,"t":"want","sid":"TR_1","layers":5}`))
	f.Add([]byte(`{"v":1,"t":"speakers","speakers":[{"sid":"PA_1","level":0.5}]}`))
	f.Add([]byte(`{"v":1,"t":"data","sid":"PA_1","kind":1,"dests":["@b:b.test:D"],"data":"aGk="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if m.T == msgData && (len(m.Data) > maxData || len(m.Dests) > maxDests) {
			t.Fatalf("data bounds not enforced: %d bytes, %d destinations", len(m.Data), len(m.Dests))
		}
		if m.Participant != nil && m.T == msgParticipant {
			if len(m.Participant.Tracks) > maxTracksPerRemote || len(m.Participant.Identity) > maxIdentity {
				t.Fatalf("bounds not enforced: %d tracks", len(m.Participant.Tracks))
			}
		}
	})
}

// FuzzParseCall: the m.call.* contents a peer's bot sends are checked
// without a panic, whatever they hold.
func FuzzParseCall(f *testing.F) {
	now := time.UnixMilli(1_800_000_000_000)
	f.Add(EventInvite, []byte(`{"call_id":"c","conf_id":"r","sender_session_id":"s","offer":{"type":"offer","sdp":"v=0"},"org.entente.trunk":{"v":1,"room_id":"!r:a","ts":1800000000000}}`))
	f.Add(EventAnswer, []byte(`{"call_id":"c","conf_id":"r","sender_session_id":"s","answer":{"type":"answer","sdp":"v=0"}}`))
	f.Add(EventCandidates, []byte(`{"call_id":"c","conf_id":"r","sender_session_id":"s","candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}]}`))
	f.Add(EventHangup, []byte(`{"call_id":"c","conf_id":"r","sender_session_id":"s","reason":"user_hangup"}`))
	f.Add(EventTrunkRequest, []byte(`{"call_id":"c","conf_id":"r","sender_session_id":"s","org.entente.trunk":{"v":1,"room_id":"!r:a","ts":1800000000000}}`))
	f.Fuzz(func(t *testing.T, typ string, b []byte) {
		c, err := parseCall(typ, b, now)
		if err != nil {
			return
		}
		if typ == EventTrunkRequest && c.Trunk == nil {
			t.Fatal("a trunk request without its room passed")
		}
		if typ == EventInvite && (c.Offer == nil || len(c.Offer.SDP) > maxSDP || c.Trunk == nil) {
			t.Fatal("an invite without a bounded offer passed")
		}
	})
}

// FuzzTokenMessages: a peer's token requests and answers are decoded
// within their bounds, or refused, never with a panic.
func FuzzTokenMessages(f *testing.F) {
	f.Add([]byte(`{"req_id":"r1","endpoint":"/sfu/get","body":"{}","room_id":"!r:a","service_url":"https://b","media_room":"R"}`))
	f.Add([]byte(`{"req_id":"r1","status":200,"body":"{\"url\":\"wss://a\",\"jwt\":\"x\"}"}`))
	f.Add([]byte(`{"req_id":"r1","status":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := parseTokenRequest(b); err == nil && (r.ReqID == "" || len(r.Body) > maxTokenBody) {
			t.Fatal("an unbounded token request passed")
		}
		if r, err := parseTokenResponse(b); err == nil && (r.ReqID == "" || len(r.Body) > maxTokenBody || r.Status > 599) {
			t.Fatal("an unbounded token response passed")
		}
	})
}
