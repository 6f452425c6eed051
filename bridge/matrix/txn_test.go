package matrix

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func txnBody(t testing.TB, events ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"events": events})
	require.NoError(t, err)
	return b
}

func stateEvent(typ, room, sender, key, id string, ts int64, content any) map[string]any {
	return map[string]any{"type": typ, "room_id": room, "sender": sender, "state_key": key,
		"event_id": id, "origin_server_ts": ts, "content": content}
}

func TestParseTxn(t *testing.T) {
	const room = "!r:hs"
	member := map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": "DEV_1",
		"expires": 3600000, "created_ts": 1000,
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://rtc.hs/", "livekit_alias": room}},
	}
	body := txnBody(t,
		stateEvent("m.room.create", room, "@a:hs", "", "$0", 4000, map[string]any{"room_version": "10"}),
		// A create event with a state key is no room's creation.
		stateEvent("m.room.create", "!other:hs", "@a:hs", "x", "$0b", 4000, map[string]any{}),
		stateEvent("m.room.member", room, "@a:hs", "@b:hs", "$1", 5000, map[string]any{"membership": "join"}),
		stateEvent("m.room.member", room, "@a:hs", "@b:hs", "$2", 6000, map[string]any{"membership": "leave"}),
		stateEvent(CallMemberEventType, room, "@a:hs", "_@a:hs_DEV_1_m.call", "$3", 7000, member),
		// Mallory writes Alice's key: ignored both ways.
		stateEvent(CallMemberEventType, room, "@m:hs", "_@a:hs_DEV_1_m.call", "$4", 8000, map[string]any{}),
		stateEvent(CallMemberEventType, room, "@m:hs", "_@a:hs_X_m.call", "$5", 8000, member),
		stateEvent(CallMemberEventType, room, "@a:hs", "_@a:hs_DEV_1_m.call", "$6", 9000, map[string]any{}),
		// Not tracked or malformed: skipped.
		map[string]any{"type": "m.room.message", "room_id": room, "sender": "@a:hs", "event_id": "$7", "content": map[string]any{"body": "hi"}},
		stateEvent("m.room.member", room, "@a:hs", "not-a-user", "$8", 1, map[string]any{"membership": "join"}),
		stateEvent("m.room.member", room, "@a:hs", "@c:hs", "$9", 1, map[string]any{"membership": 5}),
		stateEvent(CallMemberEventType, room, "@a:hs", "_@a:hs_D_m.call", "$10", 1, "not an object"),
	)
	fx, err := parseTxn(body)
	require.NoError(t, err)
	require.Equal(t, []RoomCreated{{RoomID: room, Creator: "@a:hs", EventID: "$0", At: time.UnixMilli(4000)}}, fx.Rooms)
	require.Equal(t, []RoomMembership{
		{RoomID: room, UserID: "@b:hs", Membership: "join", Sender: "@a:hs", EventID: "$1", At: time.UnixMilli(5000)},
		{RoomID: room, UserID: "@b:hs", Membership: "leave", Sender: "@a:hs", EventID: "$2", At: time.UnixMilli(6000)},
	}, fx.Memberships)
	require.Equal(t, []CallMember{
		{RoomID: room, StateKey: "_@a:hs_DEV_1_m.call", UserID: "@a:hs", DeviceID: "DEV_1", Joined: true,
			Application: "m.call", Scope: "m.room", FocusSelection: "oldest_membership", ServiceURL: "https://rtc.hs/",
			EventID: "$3", At: time.UnixMilli(7000), ExpiresAt: time.UnixMilli(1000 + 3600000)},
		{RoomID: room, StateKey: "_@a:hs_DEV_1_m.call", UserID: "@a:hs", DeviceID: "DEV_1", EventID: "$6", At: time.UnixMilli(9000)},
	}, fx.CallMembers)

	_, err = parseTxn([]byte("nope"))
	require.Error(t, err)
	fx, err = parseTxn([]byte(`{"events":[]}`))
	require.NoError(t, err)
	require.True(t, fx.Empty())
}

func TestParseMeet(t *testing.T) {
	msg := func(id, body string, msgtype string) map[string]any {
		return map[string]any{"type": "m.room.message", "room_id": "!r:hs", "sender": "@a:hs", "event_id": id,
			"content": map[string]any{"msgtype": msgtype, "body": body}}
	}
	fx, err := parseTxn(txnBody(t,
		msg("$1", "!meet", "m.text"),
		msg("$2", "  !meet   daily  standup ", "m.text"),
		msg("$3", "!meeting", "m.text"),
		msg("$4", "!meet", "m.notice"),
		msg("$5", "say !meet", "m.text"),
		msg("$6", "!meet "+strings.Repeat("x", maxMeetName+1), "m.text"),
	))
	require.NoError(t, err)
	require.Equal(t, []MeetCommand{
		{RoomID: "!r:hs", Sender: "@a:hs", EventID: "$1"},
		{RoomID: "!r:hs", Sender: "@a:hs", EventID: "$2", Name: "daily standup"},
	}, fx.Meets)
	require.False(t, fx.Empty())
}

func TestMeetLink(t *testing.T) {
	room := RoomAlias("!r:hs", LegacySlotID)
	require.Equal(t, room, MeetRoom("!r:hs", ""), "the room's call is the one Element joins")
	require.NotEqual(t, room, MeetRoom("!r:hs", "standup"))
	for _, tc := range []struct{ name, link, meeting string }{
		{"room call", MeetLink("https://rtc.example/", "!r:hs", ""), ""},
		{"named", MeetLink("https://rtc.example/", "!r:hs", "daily standup"), "daily standup"},
		{"room v12", MeetLink("https://rtc.example/", "!AbC+/x", ""), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.link)
			require.NoError(t, err)
			require.Equal(t, "rtc.example", u.Host)
			q := u.Query()
			roomID := q.Get(QueryMatrixRoom)
			require.True(t, roomID == "!r:hs" || roomID == "!AbC+/x", roomID)
			require.Equal(t, tc.meeting, q.Get(QueryMeeting))
			require.Equal(t, q.Has(QueryMeeting), tc.meeting != "")
			// What the page asks /get_token for lands in MeetRoom.
			require.Equal(t, MeetRoom(roomID, tc.meeting), RoomAlias(roomID, MeetSlot(tc.meeting)))
		})
	}
}

func TestCallMemberKeyOwnership(t *testing.T) {
	require.True(t, ownsCallMemberKey("@a:hs", "@a:hs"))
	require.True(t, ownsCallMemberKey("@a:hs", "_@a:hs_DEV_m.call"))
	require.False(t, ownsCallMemberKey("@a:hs", "_@a:hs.evil_DEV_m.call"))
	require.False(t, ownsCallMemberKey("@a:hs", "_@b:hs_DEV_m.call"))
	require.False(t, ownsCallMemberKey("@a:hs", "@a:hsx"))
	require.Equal(t, "DEV", deviceFromKey("@a:hs", "_@a:hs_DEV_m.call"))
	require.Equal(t, "DEV", deviceFromKey("@a:hs", "_@a:hs_DEV"))
	require.Equal(t, "", deviceFromKey("@a:hs", "@a:hs"))
}

func TestCallMemberExpiryBounded(t *testing.T) {
	body := txnBody(t, stateEvent(CallMemberEventType, "!r:hs", "@a:hs", "_@a:hs_D_m.call", "$1", 1000,
		map[string]any{"device_id": "D", "expires": int64(1) << 50}))
	fx, err := parseTxn(body)
	require.NoError(t, err)
	require.Equal(t, time.UnixMilli(1000).Add(maxCallMemberExpiry), fx.CallMembers[0].ExpiresAt)
}

// FuzzParseTxn: transaction bodies come from the homeserver, which relays
// events written by anyone in a shared room.
func FuzzParseTxn(f *testing.F) {
	f.Add(txnBody(f, stateEvent(CallMemberEventType, "!r:hs", "@a:hs", "_@a:hs_D_m.call", "$1", 1000,
		map[string]any{"device_id": "D", "expires": 10, "foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "x"}}})))
	f.Add(txnBody(f, stateEvent("m.room.member", "!r:hs", "@a:hs", "@a:hs", "$1", 1, map[string]any{"membership": "join"})))
	f.Add([]byte(`{"events":[null,{"type":"m.room.member","state_key":""}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fx, err := parseTxn(body)
		if err != nil {
			return
		}
		for _, cm := range fx.CallMembers {
			if !ownsCallMemberKey(cm.UserID, cm.StateKey) {
				t.Fatalf("call member attributed to a key its sender does not own: %+v", cm)
			}
		}
		for _, m := range fx.Memberships {
			if userIDServer(m.UserID) == "" || m.Membership == "" {
				t.Fatalf("bad membership %+v", m)
			}
		}
	})
}

func TestParseStickyRTCMember(t *testing.T) {
	ev := func(sender, content string, extra string) string {
		return `{"type":"org.matrix.msc4143.rtc.member","room_id":"!r:hs","sender":"` + sender +
			`","event_id":"$e","origin_server_ts":1700000000000` + extra + `,"content":` + content + `}`
	}
	join := `{"slot_id":"m.call#ROOM","application":{"type":"m.call"},"member":{"id":"mem1","claimed_user_id":"@a:hs","claimed_device_id":"DEV"},` +
		`"rtc_transports":[{"type":"livekit","livekit_service_url":"https://rtc.hs/"}],"versions":[],"msc4354_sticky_key":"k1"}`
	forged := `{"slot_id":"m.call#ROOM","application":{"type":"m.call"},"member":{"id":"mem2","claimed_user_id":"@b:hs","claimed_device_id":"DEV"},"msc4354_sticky_key":"k2"}`
	leave := `{"msc4354_sticky_key":"k1"}`
	body := `{"events":[` + ev("@a:hs", join, `,"msc4354_sticky":{"duration_ms":600000}`) + `,` +
		ev("@a:hs", forged, "") + `,` + ev("@a:hs", leave, "") + `]}`
	fx, err := parseTxn([]byte(body))
	require.NoError(t, err)
	require.Len(t, fx.CallMembers, 2, "the membership claimed for someone else is dropped")
	j, l := fx.CallMembers[0], fx.CallMembers[1]
	require.True(t, j.Joined)
	require.Equal(t, "@a:hs", j.UserID)
	require.Equal(t, "DEV", j.DeviceID)
	require.Equal(t, "m.call#ROOM", j.CallID)
	require.Equal(t, "https://rtc.hs/", j.ServiceURL)
	require.Equal(t, time.UnixMilli(1700000000000).Add(10*time.Minute), j.ExpiresAt)
	require.False(t, l.Joined)
	require.Equal(t, j.StateKey, l.StateKey, "leave ends the same membership")

	// A sticky duration above MSC4354's hour is cut to an hour.
	fx, err = parseTxn([]byte(`{"events":[` + ev("@a:hs", join, `,"sticky":{"duration_ms":86400000}`) + `]}`))
	require.NoError(t, err)
	require.Equal(t, time.UnixMilli(1700000000000).Add(time.Hour), fx.CallMembers[0].ExpiresAt)
}
