package matrix

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/names"
	"entente.dev/entente/internal/ratelimit"
)

func newTestMeetingAPI(t *testing.T, sfu SFU, guests bool) *MeetingAPI {
	t.Helper()
	a, err := NewMeetingAPI(MeetingAPIOptions{
		SFU: sfu, HomeserverURL: "https://matrix.agency.example/", ServerName: "agency.example",
		Guests: guests, URL: "wss://rtc.agency.example", TokenTTL: time.Hour, Log: zerolog.Nop(),
	})
	require.NoError(t, err)
	return a
}

func TestNewMeetingAPIChecksOptions(t *testing.T) {
	_, err := NewMeetingAPI(MeetingAPIOptions{HomeserverURL: "matrix.example", ServerName: "x y", URL: "https://rtc", TokenTTL: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, want := range []string{"SFU is required", "homeserver url", "server name", "url \"https://rtc\"", "negative token TTL"} {
		require.ErrorContains(t, err, want)
	}
}

func TestMeetingInfo(t *testing.T) {
	for _, guests := range []bool{false, true} {
		a := newTestMeetingAPI(t, newFakeSFU(), guests)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PathMeetingInfo, nil))
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
		var info map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &info))
		require.Equal(t, map[string]any{
			"homeserver_url": "https://matrix.agency.example", "server_name": "agency.example", "guests": guests,
		}, info)
	}
	a := newTestMeetingAPI(t, newFakeSFU(), true)
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathMeetingInfo, nil))
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}

func TestMeetingGuest(t *testing.T) {
	const roomID = "!call:agency.example"
	running := MeetRoom(roomID, "")
	named := MeetRoom(roomID, "standup")
	for _, tc := range []struct {
		name     string
		guests   bool
		method   string
		ctype    string
		body     string
		status   int
		errcode  string
		wantRoom string
		wantName string
	}{
		{name: "room call", guests: true, body: `{"room_id":"!call:agency.example","name":"  Gus "}`, status: 200, wantRoom: running, wantName: "Gus"},
		{name: "named meeting", guests: true, body: `{"room_id":"!call:agency.example","meeting":"standup","name":"Gus"}`, status: 200, wantRoom: named, wantName: "Gus"},
		{name: "content type with charset", guests: true, ctype: "application/json; charset=utf-8", body: `{"room_id":"!call:agency.example","name":"Gus"}`, status: 200, wantRoom: running, wantName: "Gus"},
		{name: "policy off", guests: false, body: `{"room_id":"!call:agency.example","name":"Gus"}`, status: 403, errcode: "M_FORBIDDEN"},
		{name: "policy off, garbage", guests: false, body: `{`, status: 403, errcode: "M_FORBIDDEN"},
		{name: "no call yet", guests: true, body: `{"room_id":"!other:agency.example","name":"Gus"}`, status: 404, errcode: "M_NOT_FOUND"},
		{name: "named meeting not started", guests: true, body: `{"room_id":"!call:agency.example","meeting":"retro","name":"Gus"}`, status: 404, errcode: "M_NOT_FOUND"},
		{name: "GET", guests: true, method: http.MethodGet, status: 405, errcode: "M_UNRECOGNIZED"},
		{name: "not JSON", guests: true, body: `room=x`, status: 400, errcode: "M_NOT_JSON"},
		{name: "trailing data", guests: true, body: `{"room_id":"!call:agency.example","name":"Gus"} {}`, status: 400, errcode: "M_NOT_JSON"},
		{name: "wrong content type", guests: true, ctype: "text/plain", body: `{"room_id":"!call:agency.example","name":"Gus"}`, status: 415, errcode: "M_NOT_JSON"},
		{name: "too large", guests: true, body: `{"room_id":"!call:agency.example","name":"` + strings.Repeat("a", maxGuestBody) + `"}`, status: 413, errcode: "M_TOO_LARGE"},
		{name: "bad room id", guests: true, body: `{"room_id":"#alias:agency.example","name":"Gus"}`, status: 400, errcode: "M_BAD_JSON"},
		{name: "bad meeting", guests: true, body: `{"room_id":"!call:agency.example","meeting":"a\u0000b","name":"Gus"}`, status: 400, errcode: "M_BAD_JSON"},
		{name: "long meeting", guests: true, body: `{"room_id":"!call:agency.example","meeting":"` + strings.Repeat("m", maxMeetName+1) + `","name":"Gus"}`, status: 400, errcode: "M_BAD_JSON"},
		{name: "no name", guests: true, body: `{"room_id":"!call:agency.example","name":"   "}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "name with bidi override", guests: true, body: `{"room_id":"!call:agency.example","name":"Gus\u202e"}`, status: 400, errcode: "M_INVALID_PARAM"},
		{name: "name too long", guests: true, body: `{"room_id":"!call:agency.example","name":"` + strings.Repeat("é", maxGuestName+1) + `"}`, status: 400, errcode: "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sfu := newFakeSFU()
			sfu.rooms[running] = true
			sfu.rooms[named] = true
			a := newTestMeetingAPI(t, sfu, tc.guests)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, PathMeetingGuest, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, req)
			require.Equal(t, tc.status, rec.Code, rec.Body.String())
			var resp map[string]string
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &resp))
			if tc.status != http.StatusOK {
				require.Equal(t, tc.errcode, resp["errcode"])
				require.Empty(t, sfu.mints, "nothing minted")
				return
			}
			require.Len(t, sfu.mints, 1)
			m := sfu.mints[0]
			require.Equal(t, tc.wantRoom, m.room)
			require.Equal(t, tc.wantName, m.name)
			require.True(t, strings.HasPrefix(m.identity, GuestIdentityPrefix), m.identity)
			require.Equal(t, Grant{
				CanPublish: true, CanSubscribe: true, CanPublishData: true, TTL: time.Hour,
				Attributes: map[string]string{AttrMeetingGuest: "1"},
			}, m.grant, "no Matrix attributes: a guest is no Matrix user")
			require.Equal(t, map[string]string{"url": "wss://rtc.agency.example", "token": "jwt." + tc.wantRoom, "identity": m.identity}, resp)
			require.Empty(t, sfu.ensured, "guests never create a call")
		})
	}
}

// Guest tokens beyond the limit get 429 M_LIMIT_EXCEEDED with the wait;
// asking while the call has not started (the page polls) costs nothing.
func TestMeetingGuestRateLimited(t *testing.T) {
	sfu := newFakeSFU()
	const roomID = "!call:agency.example"
	a, err := NewMeetingAPI(MeetingAPIOptions{
		SFU: sfu, HomeserverURL: "https://matrix.agency.example/", ServerName: "agency.example", Guests: true,
		Limiter: ratelimit.New(1, 2, 0, ratelimit.Resolver{}), // two at once, then one a minute
		URL:     "wss://rtc.agency.example", TokenTTL: time.Hour, Log: zerolog.Nop(),
	})
	require.NoError(t, err)
	for i, tc := range []struct {
		remote  string
		started bool
		status  int
	}{
		{"192.0.2.1:1000", false, 404},
		{"192.0.2.1:1000", false, 404},
		{"192.0.2.1:1000", false, 404},
		{"192.0.2.1:1000", true, 200},
		{"192.0.2.1:1001", true, 200},
		{"192.0.2.1:1002", true, 429},
		{"192.0.2.2:1000", true, 200},
	} {
		sfu.rooms[MeetRoom(roomID, "")] = tc.started
		req := httptest.NewRequest(http.MethodPost, PathMeetingGuest, strings.NewReader(`{"room_id":"!call:agency.example","name":"Gus"}`))
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		require.Equal(t, tc.status, rec.Code, "request %d: %s", i, rec.Body.String())
		if tc.status != http.StatusTooManyRequests {
			continue
		}
		var e struct {
			ErrCode      string `json:"errcode"`
			RetryAfterMS int64  `json:"retry_after_ms"`
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
		require.Equal(t, "M_LIMIT_EXCEEDED", e.ErrCode)
		require.Positive(t, e.RetryAfterMS)
		require.NotEmpty(t, rec.Header().Get("Retry-After"))
	}
	require.Len(t, sfu.mints, 3)
}

func TestMeetingGuestMintFails(t *testing.T) {
	sfu := newFakeSFU()
	sfu.rooms[MeetRoom("!r:hs", "")] = true
	sfu.failMint = true
	a := newTestMeetingAPI(t, sfu, true)
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathMeetingGuest, strings.NewReader(`{"room_id":"!r:hs","name":"G"}`)))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	require.NotContains(t, rec.Body.String(), "boom", "no Go error strings to clients")
}

func TestGuestIdentitiesNeverLookMatrix(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := names.GuestIdentity()
		require.Len(t, id, len(GuestIdentityPrefix)+10)
		require.False(t, seen[id])
		seen[id] = true
	}
	// /get_token identities are standard base64 (no '-'), /sfu/get's start with '@'.
	require.NotContains(t, Identity("@a:hs", "D", "m"), "-")
	require.True(t, strings.HasPrefix(LegacyIdentity("@a:hs", "D"), "@"))
}

// FuzzParseMeetingGuest: the guest request parser never panics, and what it
// accepts is what the handler relies on.
func FuzzParseMeetingGuest(f *testing.F) {
	f.Add([]byte(`{"room_id":"!call:agency.example","name":"Gus"}`))
	f.Add([]byte(`{"room_id":"!call:agency.example","meeting":"daily standup","name":" Gus "}`))
	f.Add([]byte(`{"room_id":"!\u0000","meeting":"\ud800","name":"\u202e"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := parseMeetingGuest(body)
		if e != nil {
			if e.Status != http.StatusBadRequest {
				t.Fatalf("unexpected error %v", e)
			}
			return
		}
		if !validRoomID(r.RoomID) || len(r.Meeting) > maxMeetName || (r.Meeting != "" && !validText(r.Meeting)) ||
			!names.Printable(r.Name, maxGuestName) || strings.TrimSpace(r.Name) != r.Name {
			t.Fatalf("accepted invalid guest request %+v", r)
		}
		_ = MeetRoom(r.RoomID, r.Meeting)
	})
}
