package matrix

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/dendritetest"
)

func TestParseBotSync(t *testing.T) {
	const bot = "@entente:b.example"
	member := func(key, sender, membership string) map[string]any {
		return map[string]any{"type": "m.room.member", "state_key": key, "sender": sender, "content": map[string]any{"membership": membership}}
	}
	raw, err := json.Marshal(map[string]any{
		"next_batch": "s42",
		"rooms": map[string]any{"invite": map[string]any{
			"!a:a.example": map[string]any{"invite_state": map[string]any{"events": []any{
				map[string]any{"type": "m.room.name", "state_key": "", "sender": "@x:a.example", "content": map[string]any{"name": "A"}},
				member(bot, "@alice:a.example", "invite"),
			}}},
			"!other:a.example":  map[string]any{"invite_state": map[string]any{"events": []any{member("@bob:b.example", "@alice:a.example", "invite")}}},
			"!joined:a.example": map[string]any{"invite_state": map[string]any{"events": []any{member(bot, "@alice:a.example", "join")}}},
			"!forged:a.example": map[string]any{"invite_state": map[string]any{"events": []any{member(bot, "not a user", "invite")}}},
			"not-a-room":        map[string]any{"invite_state": map[string]any{"events": []any{member(bot, "@alice:a.example", "invite")}}},
			"!junk:a.example":   map[string]any{"invite_state": map[string]any{"events": []any{"x", 5, nil}}},
		}},
	})
	require.NoError(t, err)
	a, err := parseBotSync(raw, bot)
	require.NoError(t, err)
	require.Equal(t, "s42", a.next)
	require.Equal(t, []BotInvite{{RoomID: "!a:a.example", Sender: "@alice:a.example"}}, a.invites)
	require.Empty(t, a.toDevice)

	_, err = parseBotSync([]byte(`{"rooms":{}}`), bot)
	require.Error(t, err, "no next_batch")
	_, err = parseBotSync([]byte(`[`), bot)
	require.Error(t, err)
}

// FuzzParseBotSync: the /sync parser never panics and reports only
// invitations of the bot by a valid user in a valid room.
func FuzzParseBotSync(f *testing.F) {
	f.Add([]byte(`{"next_batch":"s1","rooms":{"invite":{"!r:x":{"invite_state":{"events":[{"type":"m.room.member","state_key":"@b:x","sender":"@a:x","content":{"membership":"invite"}}]}}}}}`))
	f.Add([]byte(`{"next_batch":"","rooms":{"invite":null}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := parseBotSync(raw, "@b:x")
		if err != nil {
			return
		}
		if a.next == "" {
			t.Fatal("accepted an answer without next_batch")
		}
		for _, inv := range a.invites {
			if !validRoomID(inv.RoomID) || !validUserID(inv.Sender) {
				t.Fatalf("bad invitation %+v", inv)
			}
		}
	})
}

// TestDendriteBotSyncSeesFederatedInvitation: Dendrite B never pushes to
// its application service the invitation of B's bot that Alice of A sends
// over federation (TestDendriteFederatedInvitationNotPushed); the bot's own
// /sync sees it, with Alice as its sender, and stops when asked.
func TestDendriteBotSyncSeesFederatedInvitation(t *testing.T) {
	hsA := dendritetest.Start(t, dendritetest.Options{})
	hsB, reg := registeredHomeserver(t, nil)
	botB := BotUserID(reg.SenderLocalpart, hsB.ServerName)
	var mu sync.Mutex
	var got []BotInvite
	s, err := NewBotSync(BotSyncOptions{HomeserverURL: hsB.ClientURL, ASToken: reg.AppToken,
		BotLocalpart: reg.SenderLocalpart, ServerName: hsB.ServerName, OnInvite: func(inv BotInvite) {
			mu.Lock()
			got = append(got, inv)
			mu.Unlock()
		}, Log: zerolog.New(zerolog.NewTestWriter(t))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("bot sync did not stop")
		}
	}()

	alice := hsA.Register(t, "alice")
	room := hsA.CreateRoom(t, alice, map[string]any{"preset": "private_chat"})
	hsA.Invite(t, alice, room, botB)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, inv := range got {
			if inv.RoomID == room && inv.Sender == alice.ID {
				return true
			}
		}
		return false
	}, 40*time.Second, 100*time.Millisecond, "the bot's /sync reports the invitation")
}
