package matrix

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/config"
	"entente.dev/entente/internal/dendritetest"
	"entente.dev/entente/internal/store"
)

func TestSFUURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:7880":       "ws://127.0.0.1:7880",
		"https://rtc.example/":        "wss://rtc.example",
		"https://rtc.example/prefix/": "wss://rtc.example/prefix",
	} {
		got, err := SFUURL(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := SFUURL("ftp://x")
	require.ErrorIs(t, err, ErrInvalidConfig)
}

func TestLoadRegistration(t *testing.T) {
	c := config.MatrixDefaults()
	c.ServerName, c.AppserviceListen = "hs.example", "127.0.0.1:29335"
	reg, err := RegistrationFor(&c)
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:29335", reg.URL)
	c.Registration = filepath.Join(t.TempDir(), "reg.yaml")
	require.NoError(t, reg.Save(c.Registration))

	got, err := LoadRegistration(&c)
	require.NoError(t, err)
	require.Equal(t, reg.AppToken, got.AppToken)
	require.Equal(t, reg.ServerToken, got.ServerToken)
	c.HSToken = "from-config"
	got, err = LoadRegistration(&c)
	require.NoError(t, err)
	require.Equal(t, "from-config", got.ServerToken, "config tokens take precedence")

	c.Registration = filepath.Join(t.TempDir(), "missing.yaml")
	_, err = LoadRegistration(&c)
	require.ErrorIs(t, err, ErrInvalidConfig)
	c.Registration, c.ASToken, c.HSToken = "", "a", "h"
	got, err = LoadRegistration(&c)
	require.NoError(t, err)
	require.Equal(t, "entente", got.SenderLocalpart)
}

// TestDendriteBridge runs the assembled bridge against Dendrite, as cmd/
// will: registration written from the config, appservice listener, bot
// set up by Run, token service and discovery on the node's mux.
func TestDendriteBridge(t *testing.T) {
	hs := dendritetest.New(t)
	c := config.MatrixDefaults()
	c.HomeserverURL, c.ServerName = hs.ClientURL, hs.ServerName
	c.AppserviceListen = "127.0.0.1:" + strconv.Itoa(dendritetest.FreePort(t))
	c.InsecureSkipVerify = true
	reg, err := RegistrationFor(&c)
	require.NoError(t, err)
	c.Registration = filepath.Join(t.TempDir(), "registration.yaml")
	require.NoError(t, reg.Save(c.Registration))

	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "entente.db"), zerolog.Nop())
	require.NoError(t, err)
	sfu := newFakeSFU()
	b, err := New(Options{Config: &c, PublicURL: "http://127.0.0.1:7880", SFUURL: "ws://127.0.0.1:7880",
		SFU: sfu, Store: st, Log: zerolog.New(zerolog.NewTestWriter(t))})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		require.NoError(t, st.Close())
	})
	hs.Start(t, dendritetest.Options{AppServices: []string{c.Registration}})

	bot := BotUserID(c.BotLocalpart, c.ServerName)
	var profile struct {
		DisplayName string `json:"displayname"`
	}
	require.Eventually(t, func() bool {
		return hs.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bot), "", nil, &profile) == http.StatusOK &&
			profile.DisplayName == BotDisplayName
	}, 30*time.Second, 100*time.Millisecond, "Run registers the bot and names it")

	mux := http.NewServeMux()
	b.Register(mux)
	node := httptest.NewServer(mux)
	defer node.Close()

	alice := hs.Register(t, "alice")
	// Invited, the bot joins by itself.
	room := hs.CreateRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bot}})
	require.Eventually(t, func() bool { return hs.IsJoined(t, alice, room, bot) }, 10*time.Second, 50*time.Millisecond,
		"the bot accepts an invitation from a local user")

	code, resp := postJSON(t, mux, PathSFUGet, map[string]any{"room": room, "openid_token": hs.OpenIDToken(t, alice), "device_id": alice.DeviceID})
	require.Equal(t, http.StatusOK, code, resp)
	require.Equal(t, "ws://127.0.0.1:7880", resp["url"])

	r, err := http.Get(node.URL + PathRTCTransports)
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusOK, r.StatusCode)

	// "!meet" gets a link to the join page for the room's call.
	hs.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/meet1", alice.Token,
		map[string]any{"msgtype": "m.text", "body": "!meet"}, nil)
	want := MeetLink("http://127.0.0.1:7880/", room, "")
	require.Eventually(t, func() bool {
		var msgs struct {
			Chunk []struct {
				Sender  string         `json:"sender"`
				Content map[string]any `json:"content"`
			} `json:"chunk"`
		}
		hs.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=20", alice.Token, nil, &msgs)
		for _, m := range msgs.Chunk {
			if body, _ := m.Content["body"].(string); m.Sender == bot && strings.HasSuffix(body, want) {
				return true
			}
		}
		return false
	}, 10*time.Second, 100*time.Millisecond)

	// The kick reaches the node through the appservice listener and ends
	// Carol's call.
	carol := hs.Register(t, "carol")
	hs.Invite(t, alice, room, carol.ID)
	hs.Join(t, carol, room)
	code, _ = postJSON(t, mux, PathSFUGet, map[string]any{"room": room, "openid_token": hs.OpenIDToken(t, carol), "device_id": carol.DeviceID})
	require.Equal(t, http.StatusOK, code)
	hs.Kick(t, alice, room, carol.ID)
	require.Eventually(t, func() bool {
		sfu.mu.Lock()
		defer sfu.mu.Unlock()
		return len(sfu.removed) == 1 && sfu.removed[0] == RoomAlias(room, LegacySlotID)+"/"+LegacyIdentity(carol.ID, carol.DeviceID)
	}, 10*time.Second, 20*time.Millisecond)
}

func TestMayInviteBot(t *testing.T) {
	b := &Bridge{cfg: &config.Matrix{ServerName: "hs.example", Allow: []string{"partner.example"}}}
	for sender, want := range map[string]bool{
		"@a:hs.example":      true,
		"@b:partner.example": true,
		"@c:other.example":   false,
		"not-a-user":         false,
	} {
		require.Equal(t, want, b.mayInviteBot(sender), sender)
	}
	b.cfg.Allow = []string{"*"}
	require.True(t, b.mayInviteBot("@c:other.example"))
}
