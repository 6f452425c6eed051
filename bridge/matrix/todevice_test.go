package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func toDeviceEvent(sender, typ string, content any) map[string]any {
	return map[string]any{"sender": sender, "type": typ, "content": content}
}

func syncAnswer(t testing.TB, next string, events ...any) []byte {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"next_batch": next, "to_device": map[string]any{"events": events}})
	require.NoError(t, err)
	return raw
}

// TestParseBotSyncToDevice: only m.call.* and org.entente.* messages from a
// valid user with an object content of at most MaxToDeviceContent bytes
// are delivered, in order; oversized ones are named without their content;
// past maxToDevicePerSync, messages are counted, not read.
func TestParseBotSyncToDevice(t *testing.T) {
	const alice = "@alice:a.example"
	// An object of exactly MaxToDeviceContent bytes is accepted; one byte
	// more is not.
	pad := func(n int) json.RawMessage {
		return json.RawMessage(`{"p":"` + strings.Repeat("x", n-8) + `"}`)
	}
	require.Len(t, pad(MaxToDeviceContent), MaxToDeviceContent)
	raw := syncAnswer(t, "s2",
		toDeviceEvent(alice, "m.call.invite", map[string]any{"call_id": "c1"}),
		toDeviceEvent(alice, "m.room_key_request", map[string]any{}),
		toDeviceEvent(alice, "org.entente.trunk", map[string]any{"x": 1}),
		toDeviceEvent("not-a-user", "m.call.answer", map[string]any{}),
		toDeviceEvent(alice, "m.call.candidates", pad(MaxToDeviceContent)),
		toDeviceEvent(alice, "m.call.hangup", pad(MaxToDeviceContent+1)),
		toDeviceEvent(alice, "m.call.hangup", "not an object"),
		toDeviceEvent(alice, "m.call.\u0000", map[string]any{}),
		toDeviceEvent(alice, "m.callx", map[string]any{}),
		toDeviceEvent(alice, "m.call.hangup", nil),
		map[string]any{"sender": alice, "type": "m.call.hangup"},
		"junk", 5, nil,
	)
	a, err := parseBotSync(raw, "@bot:b.example")
	require.NoError(t, err)
	require.Equal(t, "s2", a.next)
	require.Len(t, a.toDevice, 3)
	require.Equal(t, ToDeviceEvent{Sender: alice, Type: "m.call.invite", Content: json.RawMessage(`{"call_id":"c1"}`)}, a.toDevice[0])
	require.Equal(t, "org.entente.trunk", a.toDevice[1].Type)
	require.Equal(t, "m.call.candidates", a.toDevice[2].Type)
	require.Len(t, a.toDevice[2].Content, MaxToDeviceContent)
	require.Equal(t, []droppedToDevice{{Sender: alice, Type: "m.call.hangup", size: MaxToDeviceContent + 1}}, a.oversized)
	require.Equal(t, 1, a.invalidSenders)
	require.Zero(t, a.overflow)

	// 150 messages: the first 100 are read, 50 are dropped unread.
	var events []any
	for i := range 150 {
		events = append(events, toDeviceEvent(alice, "m.call.candidates", map[string]any{"i": i}))
	}
	a, err = parseBotSync(syncAnswer(t, "s3", events...), "@bot:b.example")
	require.NoError(t, err)
	require.Len(t, a.toDevice, maxToDevicePerSync)
	require.JSONEq(t, `{"i":99}`, string(a.toDevice[99].Content))
	require.Equal(t, 50, a.overflow)
}

// FuzzBotSyncToDevice: the /sync parser never panics on to_device, and
// whatever it delivers satisfies what a handler relies on.
func FuzzBotSyncToDevice(f *testing.F) {
	f.Add(syncAnswer(f, "s1", toDeviceEvent("@a:x", "m.call.invite", map[string]any{"call_id": "c", "party_id": "p"})))
	f.Add(syncAnswer(f, "s1", toDeviceEvent("@a:x", "org.entente.x", map[string]any{}), toDeviceEvent("a", "m.call.x", 1)))
	f.Add([]byte(`{"next_batch":"s","to_device":{"events":[{"sender":"@a:x","type":"m.call.a","content":{"\ud800":[]}}]}}`))
	f.Add([]byte(`{"next_batch":"s","to_device":{"events":null}}`))
	f.Add([]byte(`{"next_batch":"s","to_device":[]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := parseBotSync(raw, "@b:x")
		if err != nil {
			return
		}
		if len(a.toDevice) > maxToDevicePerSync || len(a.toDevice)+len(a.oversized)+a.invalidSenders > maxToDevicePerSync {
			t.Fatalf("handled %d messages", len(a.toDevice))
		}
		for _, ev := range a.toDevice {
			if !validUserID(ev.Sender) || !toDeviceTypeAccepted(ev.Type) || len(ev.Content) > MaxToDeviceContent ||
				!json.Valid(ev.Content) || ev.Content[0] != '{' {
				t.Fatalf("delivered a bad message %+v", ev)
			}
		}
		for _, d := range a.oversized {
			if d.size <= MaxToDeviceContent || !validUserID(d.Sender) || !toDeviceTypeAccepted(d.Type) {
				t.Fatalf("bad drop %+v", d)
			}
		}
	})
}

// fakeBotHomeserver answers the bot's login (a new token each time), /sync
// from a script (one answer per call, then long polls that end with the
// test) and sendToDevice (recorded), and rejects tokens it was told to.
type fakeBotHomeserver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	logins   int
	rejected map[string]bool
	syncs    []string // the since of each /sync, "" for none
	answers  [][]byte
	sends    []recordedSend
	refuse   int // status for sendToDevice, when set
	stop     chan struct{}
}

type recordedSend struct {
	EventType, TxnID, Token string
	Body                    []byte
}

func newFakeBotHomeserver(t *testing.T) *fakeBotHomeserver {
	f := &fakeBotHomeserver{t: t, rejected: map[string]bool{}, stop: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() { close(f.stop); f.srv.Close() })
	return f
}

func (f *fakeBotHomeserver) serve(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if r.URL.Path == "/_matrix/client/v3/login" {
		var body struct {
			Type     string `json:"type"`
			DeviceID string `json:"device_id"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil || token != "as-secret" ||
			body.Type != "m.login.application_service" || body.DeviceID != BotDeviceID {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		f.mu.Lock()
		f.logins++
		n := f.logins
		f.mu.Unlock()
		_, _ = fmt.Fprintf(w, `{"access_token":"device-secret-%d","device_id":%q}`, n, BotDeviceID)
		return
	}
	f.mu.Lock()
	bad := f.rejected[token] || !strings.HasPrefix(token, "device-secret-")
	f.mu.Unlock()
	if bad {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN"}`))
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/_matrix/client/v3/sync":
		f.mu.Lock()
		f.syncs = append(f.syncs, r.URL.Query().Get("since"))
		var answer []byte
		if len(f.answers) > 0 {
			answer, f.answers = f.answers[0], f.answers[1:]
		}
		f.mu.Unlock()
		if answer == nil {
			select { // a long poll that ends with the client or the test
			case <-r.Context().Done():
			case <-f.stop:
			}
			return
		}
		_, _ = w.Write(answer)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.EscapedPath(), "/_matrix/client/v3/sendToDevice/"):
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/_matrix/client/v3/sendToDevice/"), "/")
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.sends = append(f.sends, recordedSend{EventType: parts[0], TxnID: parts[len(parts)-1], Token: token, Body: body})
		refuse := f.refuse
		f.mu.Unlock()
		if refuse != 0 {
			w.WriteHeader(refuse)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"no"}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeBotHomeserver) syncsSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.syncs...)
}

// syncWriter is a log sink safe for Run's goroutine and the test.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func newTestBotSync(t *testing.T, f *fakeBotHomeserver, onToDevice func(ToDeviceEvent)) (*BotSync, *syncWriter) {
	logs := &syncWriter{}
	s, err := NewBotSync(BotSyncOptions{HomeserverURL: f.srv.URL, ASToken: "as-secret", BotLocalpart: "entente",
		ServerName: "b.example", OnInvite: func(BotInvite) {}, OnToDevice: onToDevice,
		Log: zerolog.New(io.MultiWriter(logs, zerolog.NewTestWriter(t)))})
	require.NoError(t, err)
	return s, logs
}

// runBotSync runs s until the test ends and checks that it stops.
func runBotSync(t *testing.T, s *BotSync) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("bot sync did not stop")
		}
	})
}

// TestBotSyncToDeviceSinceAfterHandler: the next /sync uses the new since
// only once the handler returned for every message of the answer, so a
// crash while handling loses nothing; overflow and oversized messages are
// logged without their content.
func TestBotSyncToDeviceSinceAfterHandler(t *testing.T) {
	f := newFakeBotHomeserver(t)
	var many []any
	for i := range maxToDevicePerSync + 7 {
		many = append(many, toDeviceEvent("@a:a.example", "m.call.candidates", map[string]any{"i": i}))
	}
	f.answers = [][]byte{
		syncAnswer(t, "s1",
			toDeviceEvent("@a:a.example", "m.call.invite", map[string]any{"n": 1}),
			toDeviceEvent("@a:a.example", "m.call.hangup", map[string]any{"secret-content": strings.Repeat("y", MaxToDeviceContent)}),
			toDeviceEvent("@a:a.example", "org.entente.x", map[string]any{"n": 2})),
		syncAnswer(t, "s2", many...),
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var got []ToDeviceEvent
	s, logs := newTestBotSync(t, f, func(ev ToDeviceEvent) {
		mu.Lock()
		got = append(got, ev)
		n := len(got)
		mu.Unlock()
		if n == 2 {
			<-release
		}
	})
	runBotSync(t, s)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	}, 5*time.Second, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the handler blocks: no /sync moves past s1
	require.Equal(t, []string{""}, f.syncsSoFar())
	close(release)
	require.Eventually(t, func() bool { return len(f.syncsSoFar()) >= 3 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"", "s1", "s2"}, f.syncsSoFar()[:3])

	mu.Lock()
	require.Len(t, got, 2+maxToDevicePerSync)
	require.Equal(t, ToDeviceEvent{Sender: "@a:a.example", Type: "m.call.invite", Content: json.RawMessage(`{"n":1}`)}, got[0])
	require.Equal(t, "org.entente.x", got[1].Type)
	mu.Unlock()
	out := logs.String()
	require.Contains(t, out, `"overflow":7`)
	require.Contains(t, out, `"sender":"@a:a.example","type":"m.call.hangup"`)
	require.NotContains(t, out, "secret-content")
	require.NotContains(t, out, "device-secret")
	require.NotContains(t, out, "as-secret")
	require.Equal(t, 1, f.logins)
}

// TestSendToDevice: the request is PUT sendToDevice/{type}/{txnId} with
// {"messages":{user:{device:content}}} and the bot device's token, shared
// with Run (one login); transaction IDs are unique; a rejected token is
// replaced once; bad types, oversized bodies and refusals are errors.
func TestSendToDevice(t *testing.T) {
	f := newFakeBotHomeserver(t)
	s, logs := newTestBotSync(t, f, nil)
	ctx := t.Context()

	// Before Run, SendToDevice logs in itself; Run then uses that token.
	content := map[string]any{"conf_id": "conf", "call_id": "c1", "party_id": "p1", "version": "1"}
	require.NoError(t, s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.call.invite", content))
	runBotSync(t, s)
	require.Eventually(t, func() bool { return len(f.syncsSoFar()) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "org.entente.ping", json.RawMessage(`{}`)))

	f.mu.Lock()
	require.Equal(t, 1, f.logins, "Run and SendToDevice share the bot's login")
	require.Len(t, f.sends, 2)
	first := f.sends[0]
	require.Equal(t, "m.call.invite", first.EventType)
	require.Equal(t, "device-secret-1", first.Token)
	require.JSONEq(t, `{"messages":{"@entente:a.example":{"ENTENTE_NODE":{"conf_id":"conf","call_id":"c1","party_id":"p1","version":"1"}}}}`, string(first.Body))
	require.Equal(t, "org.entente.ping", f.sends[1].EventType)
	require.NotEqual(t, first.TxnID, f.sends[1].TxnID)
	require.NotEmpty(t, first.TxnID)
	f.mu.Unlock()

	// A token the homeserver no longer accepts is replaced once; the
	// message is sent again under the same transaction ID.
	f.mu.Lock()
	f.rejected["device-secret-1"] = true
	f.mu.Unlock()
	require.NoError(t, s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.call.hangup", map[string]any{}))
	f.mu.Lock()
	require.Equal(t, 2, f.logins)
	last := f.sends[len(f.sends)-1]
	require.Equal(t, "device-secret-2", last.Token)
	f.mu.Unlock()

	// Refusals.
	err := s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.room.message", map[string]any{})
	require.ErrorIs(t, err, ErrToDeviceInvalid)
	err = s.SendToDevice(ctx, "not-a-user", BotDeviceID, "m.call.invite", map[string]any{})
	require.ErrorIs(t, err, ErrToDeviceInvalid)
	err = s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.call.invite", map[string]any{"x": func() {}})
	require.ErrorIs(t, err, ErrToDeviceInvalid)
	f.mu.Lock()
	sent := len(f.sends)
	f.mu.Unlock()
	err = s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.call.invite", map[string]any{"sdp": strings.Repeat("v", MaxToDeviceRequest)})
	require.ErrorIs(t, err, ErrToDeviceTooLarge)
	f.mu.Lock()
	require.Len(t, f.sends, sent, "nothing sent")
	f.refuse = http.StatusForbidden
	f.mu.Unlock()
	err = s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.call.invite", map[string]any{})
	require.ErrorIs(t, err, ErrToDeviceRefused)
	var te *ToDeviceError
	require.True(t, errors.As(err, &te))
	require.Equal(t, http.StatusForbidden, te.Status)
	require.Equal(t, "M_FORBIDDEN", te.ErrCode)

	// Every token rejected: one new login, then the refusal.
	f.mu.Lock()
	f.refuse = 0
	f.rejected["device-secret-2"], f.rejected["device-secret-3"] = true, true
	logins := f.logins
	f.mu.Unlock()
	err = s.SendToDevice(ctx, "@entente:a.example", BotDeviceID, "m.call.invite", map[string]any{})
	require.True(t, errors.As(err, &te))
	require.Equal(t, http.StatusUnauthorized, te.Status)
	f.mu.Lock()
	require.Equal(t, logins+1, f.logins, "one new login, not a loop")
	f.mu.Unlock()
	require.NotContains(t, logs.String(), "device-secret")
	require.NotContains(t, logs.String(), "as-secret")
}
