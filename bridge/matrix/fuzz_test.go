package matrix

import (
	"testing"
)

// FuzzParseTokenRequest feeds arbitrary bodies to both token endpoints'
// parsers: they must never panic, and whatever they accept must satisfy the
// invariants the handler relies on.
func FuzzParseTokenRequest(f *testing.F) {
	f.Add([]byte(getTokenBody("!roomid:example.com", "slot1234", "example.com", "tok", "@alice:example.com", "DEVICE123", "memberABC")))
	f.Add([]byte(sfuGetBody("!roomid:example.com", "example.com", "tok", "DEVICE123")))
	f.Add([]byte(`{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"x","expires_in":1.5e300},"delay_id":"d","delay_timeout":1}`))
	f.Add([]byte(`{"room_id":"!\u0000","slot_id":"\ud800"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if r, e := parseGetToken(body); e == nil {
			if !validRoomID(r.RoomID) || r.SlotID == "" || r.Member.ID == "" || r.Member.ClaimedDeviceID == "" ||
				userIDServer(r.Member.ClaimedUserID) == "" || r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "" {
				t.Fatalf("accepted invalid /get_token request %+v", r)
			}
			if len(r.OpenIDToken.AccessToken) > maxAccessTokenLen {
				t.Fatal("accepted oversized access token")
			}
			_ = RoomAlias(r.RoomID, r.SlotID)
			_ = Identity(r.Member.ClaimedUserID, r.Member.ClaimedDeviceID, r.Member.ID)
		} else if e.Status != 400 || (e.ErrCode != "M_NOT_JSON" && e.ErrCode != "M_BAD_JSON") {
			t.Fatalf("unexpected error %v", e)
		}
		if r, e := parseSFUGet(body); e == nil {
			if !validRoomID(r.Room) || r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "" {
				t.Fatalf("accepted invalid /sfu/get request %+v", r)
			}
		} else if e.Status != 400 {
			t.Fatalf("unexpected error %v", e)
		}
		_, _ = ParseServerName(string(body))
	})
}
