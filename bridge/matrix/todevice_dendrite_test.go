package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// botOnDendrite is one agency's bot device, following its /sync as the
// bridge runs it, with every to-device message it receives recorded.
type botOnDendrite struct {
	sync *BotSync
	mu   sync.Mutex
	got  []receivedToDevice
	stop func()
}

type receivedToDevice struct {
	ev ToDeviceEvent
	at time.Time
}

func startBotOnDendrite(t *testing.T, clientURL, asToken, localpart, serverName string) *botOnDendrite {
	t.Helper()
	b := &botOnDendrite{}
	s, err := NewBotSync(BotSyncOptions{HomeserverURL: clientURL, ASToken: asToken, BotLocalpart: localpart,
		ServerName: serverName, OnInvite: func(BotInvite) {},
		OnToDevice: func(ev ToDeviceEvent) {
			b.mu.Lock()
			b.got = append(b.got, receivedToDevice{ev: ev, at: time.Now()})
			b.mu.Unlock()
		}, Log: zerolog.New(zerolog.NewTestWriter(t)).With().Str("node", serverName).Logger()})
	require.NoError(t, err)
	b.sync = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	var once sync.Once
	b.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("bot sync did not stop")
			}
		})
	}
	t.Cleanup(b.stop)
	require.Eventually(t, func() bool { // logged in: its device exists
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.token != ""
	}, 30*time.Second, 20*time.Millisecond)
	return b
}

// waitFor returns the first message received whose content has callID.
func (b *botOnDendrite) waitFor(t *testing.T, callID string) receivedToDevice {
	t.Helper()
	var found receivedToDevice
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		i := slices.IndexFunc(b.got, func(r receivedToDevice) bool {
			var c struct {
				CallID string `json:"call_id"`
			}
			return json.Unmarshal(r.ev.Content, &c) == nil && c.CallID == callID
		})
		if i >= 0 {
			found = b.got[i]
		}
		return i >= 0
	}, 60*time.Second, 2*time.Millisecond, "to-device message %s not received", callID)
	return found
}

// TestDendriteBotToDevice: with two federating Dendrites, each agency's bot
// device (ENTENTE_NODE, logged in by BotSync) sends m.call.invite to the
// other's over federation; the receiver's handler gets it from its real
// /sync (the bot's filter does not hide to_device) with the sender the
// homeservers authenticated and the same content. A message sent while the
// receiver's node is down is received when it comes back.
func TestDendriteBotToDevice(t *testing.T) {
	hsA, regA := registeredHomeserver(t, nil)
	hsB, regB := registeredHomeserver(t, nil)
	botA := startBotOnDendrite(t, hsA.ClientURL, regA.AppToken, regA.SenderLocalpart, hsA.ServerName)
	botB := startBotOnDendrite(t, hsB.ClientURL, regB.AppToken, regB.SenderLocalpart, hsB.ServerName)
	idA, idB := botA.sync.BotUserID(), botB.sync.BotUserID()
	ctx := t.Context()

	var latencies []time.Duration
	send := func(from *botOnDendrite, to *botOnDendrite, toID, fromID, callID string) {
		t.Helper()
		content := map[string]any{"conf_id": "!room:a", "call_id": callID, "party_id": "p-" + callID,
			"version": "1", "lifetime": 30000, "offer": map[string]any{"type": "offer", "sdp": "v=0\r\n"}}
		sent := time.Now()
		require.NoError(t, from.sync.SendToDevice(ctx, toID, BotDeviceID, "m.call.invite", content))
		r := to.waitFor(t, callID)
		require.Equal(t, fromID, r.ev.Sender)
		require.Equal(t, "m.call.invite", r.ev.Type)
		want, err := json.Marshal(content)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(r.ev.Content))
		d := r.at.Sub(sent)
		latencies = append(latencies, d)
		t.Logf("%s -> %s: m.call.invite received %v after the send", fromID, toID, d.Round(time.Millisecond))
	}
	// The first message in each direction also opens the federation
	// connections and fetches the server keys.
	for i := range 5 {
		send(botA, botB, idB, idA, fmt.Sprintf("a2b-%d", i))
		send(botB, botA, idA, idB, fmt.Sprintf("b2a-%d", i))
	}
	sorted := slices.Clone(latencies)
	slices.Sort(sorted)
	t.Logf("to-device latency across federation over %d messages: min %v, median %v, max %v",
		len(sorted), sorted[0].Round(time.Millisecond), sorted[len(sorted)/2].Round(time.Millisecond),
		sorted[len(sorted)-1].Round(time.Millisecond))

	// B's node stops (its /sync position is lost with it); A's message
	// waits on Dendrite B, and B's node gets it when it logs in again.
	botB.stop()
	require.NoError(t, botA.sync.SendToDevice(ctx, idB, BotDeviceID, "m.call.hangup",
		map[string]any{"conf_id": "!room:a", "call_id": "while-down", "party_id": "p", "version": "1"}))
	time.Sleep(time.Second) // let it reach Dendrite B
	botB2 := startBotOnDendrite(t, hsB.ClientURL, regB.AppToken, regB.SenderLocalpart, hsB.ServerName)
	r := botB2.waitFor(t, "while-down")
	require.Equal(t, idA, r.ev.Sender)
	require.Equal(t, "m.call.hangup", r.ev.Type)
}
