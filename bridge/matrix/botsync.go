package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// The bot's own /sync. Dendrite v0.13.8 never pushes to an application
// service an invitation that reaches it over federation
// (appservice/consumers/roomserver.go handles only new room events), so
// the bot of one agency never hears of an invitation from another agency's
// user through transactions. Logged in with a device of its own (spec:
// Application Service API, "Server admin style permissions" and the
// m.login.application_service login type), the bot sees its invitations in
// /sync like any user; federation's to-device signalling will need that
// device too (TESTING.md: to-device messages reach an appservice neither
// through transactions nor through /sync?user_id=).

const (
	// BotDeviceID is the bot's fixed device: logging in again reuses it.
	BotDeviceID = "ENTENTE_NODE"
	// botSyncTimeout is how long one /sync waits for something new.
	botSyncTimeout = 30 * time.Second
	// maxSyncBody bounds one /sync answer; the filter keeps it small (no
	// timelines, no state of joined rooms), so only a bot invited to a very
	// large number of rooms at once comes near it.
	maxSyncBody = 16 << 20
	// maxLoginBody bounds a login answer.
	maxLoginBody = 64 << 10
)

// botSyncFilter leaves out everything but invitations (spec: Client-Server
// API, "Filtering"): no timeline, state, ephemeral events, account data or
// presence. Invitations (rooms.invite) are not filtered by it.
const botSyncFilter = `{"room":{"rooms":[],"timeline":{"limit":0,"types":[]},"state":{"types":[]},` +
	`"ephemeral":{"types":[]},"account_data":{"types":[]}},"presence":{"types":[]},"account_data":{"types":[]}}`

// errSyncUnauthorized means the bot's access token is no longer valid.
var errSyncUnauthorized = errors.New("matrix: bot sync token rejected")

// BotInvite is an invitation of the bot that its /sync reported.
type BotInvite struct {
	RoomID string
	// Sender is who invited the bot.
	Sender string
}

// BotSync follows the bot's own /sync for invitations.
type BotSync struct {
	homeserver *url.URL
	asToken    string
	localpart  string
	botUserID  string
	client     *http.Client
	onInvite   func(BotInvite)
	log        zerolog.Logger
}

// NewBotSync returns a follower of the bot's /sync on the homeserver's
// client-server API at homeserverURL; onInvite is called for each
// invitation, from Run's goroutine.
func NewBotSync(homeserverURL, asToken, botLocalpart, serverName string, onInvite func(BotInvite), log zerolog.Logger) (*BotSync, error) {
	u, err := url.Parse(homeserverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: homeserver url %q", ErrInvalidConfig, homeserverURL)
	}
	if asToken == "" || botLocalpart == "" || onInvite == nil {
		return nil, fmt.Errorf("%w: bot sync needs the as_token, the bot and an invitation handler", ErrInvalidConfig)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &BotSync{
		homeserver: u, asToken: asToken, localpart: botLocalpart, botUserID: BotUserID(botLocalpart, serverName),
		// The client timeout leaves room for the long poll.
		client:   &http.Client{Timeout: botSyncTimeout + 30*time.Second},
		onInvite: onInvite,
		log:      log.With().Str("component", "bot_sync").Logger(),
	}, nil
}

// Run logs the bot in and follows its /sync until ctx is done, retrying
// with backoff while the homeserver is unreachable. It returns when ctx is
// done.
func (s *BotSync) Run(ctx context.Context) {
	delay := time.Second
	backoff := func(err error) bool {
		s.log.Warn().Err(err).Dur("retry_in", delay).Msg("bot sync")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Minute)
		return true
	}
	token, since := "", ""
	for ctx.Err() == nil {
		if token == "" {
			t, err := s.login(ctx)
			if err != nil {
				if ctx.Err() != nil || !backoff(err) {
					return
				}
				continue
			}
			token = t
		}
		next, invites, err := s.sync(ctx, token, since)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errSyncUnauthorized) {
				token = ""
			}
			if !backoff(err) {
				return
			}
			continue
		}
		delay = time.Second
		for _, inv := range invites {
			s.onInvite(inv)
		}
		since = next
	}
}

// login logs the bot in with m.login.application_service on its fixed
// device and returns the access token (never logged).
func (s *BotSync) login(ctx context.Context) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"type":       "m.login.application_service",
		"identifier": map[string]string{"type": "m.id.user", "user": s.localpart},
		"device_id":  BotDeviceID,
	})
	u := *s.homeserver
	u.Path += "/_matrix/client/v3/login"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("bot login: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, raw, err := callHomeserver(s.client, req, s.asToken, maxLoginBody)
	if errors.Is(err, errAnswerTooLong) {
		return "", errors.New("bot login: answer unreadable or too long")
	} else if err != nil {
		return "", fmt.Errorf("bot login: %w", err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("bot login: status %d", status)
	}
	var l struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(raw, &l) != nil || l.AccessToken == "" {
		return "", errors.New("bot login: malformed answer")
	}
	return l.AccessToken, nil
}

// sync makes one /sync call and returns the next batch token and the
// invitations of the bot it reported.
func (s *BotSync) sync(ctx context.Context, token, since string) (string, []BotInvite, error) {
	q := url.Values{"filter": {botSyncFilter}, "timeout": {strconv.Itoa(int(botSyncTimeout / time.Millisecond))}}
	if since != "" {
		q.Set("since", since)
	}
	u := *s.homeserver
	u.Path += "/_matrix/client/v3/sync"
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", nil, fmt.Errorf("bot sync: %w", err)
	}
	status, raw, err := callHomeserver(s.client, req, token, maxSyncBody)
	if errors.Is(err, errAnswerTooLong) {
		return "", nil, errors.New("bot sync: answer too long")
	} else if err != nil {
		return "", nil, fmt.Errorf("bot sync: %w", err)
	}
	if status == http.StatusUnauthorized {
		return "", nil, errSyncUnauthorized
	}
	if status != http.StatusOK {
		return "", nil, fmt.Errorf("bot sync: status %d", status)
	}
	return parseBotSync(raw, s.botUserID)
}

// parseBotSync reads a /sync answer (spec: Client-Server API, GET
// /_matrix/client/v3/sync) for the bot's invitations: in rooms.invite, the
// stripped m.room.member event whose state key is the bot, with membership
// "invite", names who invited it. Malformed rooms are skipped; an answer
// without next_batch is an error.
func parseBotSync(raw []byte, botUserID string) (string, []BotInvite, error) {
	var r struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Invite map[string]struct {
				InviteState struct {
					Events []json.RawMessage `json:"events"`
				} `json:"invite_state"`
			} `json:"invite"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return "", nil, fmt.Errorf("bot sync: decode: %w", err)
	}
	if r.NextBatch == "" || len(r.NextBatch) > maxIDLen {
		return "", nil, errors.New("bot sync: no next_batch")
	}
	var invites []BotInvite
	for roomID, room := range r.Rooms.Invite {
		if !validRoomID(roomID) {
			continue
		}
		for _, e := range room.InviteState.Events {
			var ev struct {
				Type     string `json:"type"`
				StateKey string `json:"state_key"`
				Sender   string `json:"sender"`
				Content  struct {
					Membership string `json:"membership"`
				} `json:"content"`
			}
			if json.Unmarshal(e, &ev) != nil || ev.Type != "m.room.member" || ev.StateKey != botUserID ||
				ev.Content.Membership != "invite" || !validUserID(ev.Sender) {
				continue
			}
			invites = append(invites, BotInvite{RoomID: roomID, Sender: ev.Sender})
			break
		}
	}
	return r.NextBatch, invites, nil
}
