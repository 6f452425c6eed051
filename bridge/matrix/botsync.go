package matrix

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// maxToDevicePerSync bounds the to-device messages handled from one
	// /sync answer. Dendrite v0.13.8 returns every pending message at once
	// (syncapi send_to_device_table.go has no LIMIT) and deletes them once
	// a later since is used, so the rest are dropped, and counted in the
	// log.
	maxToDevicePerSync = 100
	// MaxToDeviceContent bounds the content of one to-device message the
	// bot accepts.
	MaxToDeviceContent = 64 << 10
	// MaxToDeviceRequest bounds one sendToDevice request body.
	MaxToDeviceRequest = 64 << 10
	// maxSendAnswer bounds a sendToDevice answer (an empty object).
	maxSendAnswer = 64 << 10
)

// The to-device event types the bot sends and accepts: MSC3401's call
// signalling between nodes, and the node's own.
const (
	toDevicePrefixCall    = "m.call."
	toDevicePrefixEntente = "org.entente."
)

// botSyncFilter leaves out everything but invitations and to-device
// messages (spec: Client-Server API, "Filtering"): no timeline, state,
// ephemeral events, account data or presence. Invitations (rooms.invite)
// and to_device have no filter field, so neither is filtered by it
// (TestDendriteBotToDevice checks it with Dendrite).
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

// ToDeviceEvent is a to-device message the bot's device received (spec:
// Client-Server API, "Send-to-Device messaging"). Its sender is
// authenticated by the homeservers: the bot's own for a local sender, the
// sender's over federation otherwise.
type ToDeviceEvent struct {
	// Sender is the user who sent it, a valid Matrix user ID.
	Sender string
	// Type starts with "m.call." or "org.entente.".
	Type string
	// Content is a JSON object of at most MaxToDeviceContent bytes.
	Content json.RawMessage
}

// BotSyncOptions configures NewBotSync.
type BotSyncOptions struct {
	// HomeserverURL is the client-server API base of the bot's homeserver.
	// Required.
	HomeserverURL string
	// ASToken is the appservice's as_token, which logs the bot in.
	// Required.
	ASToken string
	// BotLocalpart and ServerName make the bot's user ID. BotLocalpart is
	// required.
	BotLocalpart, ServerName string
	// OnInvite is called for each invitation of the bot, from Run's
	// goroutine. Required.
	OnInvite func(BotInvite)
	// OnToDevice, when set, is called for each accepted to-device message
	// (ToDeviceEvent), in order, from Run's goroutine. The /sync position
	// moves past a message only once the call returned, so a crash never
	// loses one but a message may come again after a restart: handlers must
	// tolerate a repeat.
	OnToDevice func(ToDeviceEvent)
	Log        zerolog.Logger
}

// BotSync follows the bot's own /sync for invitations and to-device
// messages, and sends to-device messages from the bot's device.
type BotSync struct {
	homeserver *url.URL
	asToken    string
	localpart  string
	botUserID  string
	client     *http.Client
	onInvite   func(BotInvite)
	onToDevice func(ToDeviceEvent)
	log        zerolog.Logger

	// loginSlot serialises logins: logging in again on the fixed device
	// revokes the previous token (Dendrite userapi CreateDevice), so Run
	// and SendToDevice share one token and only one of them logs in.
	loginSlot chan struct{}
	mu        sync.Mutex
	token     string // guarded by mu; never logged

	// txnPrefix and txnSeq make sendToDevice transaction IDs unique across
	// restarts (Dendrite keys its transaction cache by access token, and a
	// restart logs in again, but another homeserver may not).
	txnPrefix string
	txnSeq    atomic.Uint64
}

// NewBotSync returns a follower of the bot's /sync on the homeserver's
// client-server API at opts.HomeserverURL. It contacts nothing.
func NewBotSync(opts BotSyncOptions) (*BotSync, error) {
	u, err := url.Parse(opts.HomeserverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: homeserver url %q", ErrInvalidConfig, opts.HomeserverURL)
	}
	if opts.ASToken == "" || opts.BotLocalpart == "" || opts.OnInvite == nil {
		return nil, fmt.Errorf("%w: bot sync needs the as_token, the bot and an invitation handler", ErrInvalidConfig)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	var nonce [8]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand never fails (Go 1.24+)
	return &BotSync{
		homeserver: u, asToken: opts.ASToken, localpart: opts.BotLocalpart,
		botUserID: BotUserID(opts.BotLocalpart, opts.ServerName),
		// The client timeout leaves room for the long poll.
		client:     &http.Client{Timeout: botSyncTimeout + 30*time.Second},
		onInvite:   opts.OnInvite,
		onToDevice: opts.OnToDevice,
		log:        opts.Log.With().Str("component", "bot_sync").Logger(),
		loginSlot:  make(chan struct{}, 1),
		txnPrefix:  "entente." + hex.EncodeToString(nonce[:]) + ".",
	}, nil
}

// BotUserID returns the user ID of the bot this BotSync logs in.
func (s *BotSync) BotUserID() string { return s.botUserID }

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
	rejected, since := "", ""
	for ctx.Err() == nil {
		token, err := s.session(ctx, rejected)
		if err != nil {
			if ctx.Err() != nil || !backoff(err) {
				return
			}
			continue
		}
		rejected = ""
		a, err := s.sync(ctx, token, since)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errSyncUnauthorized) {
				rejected = token
			}
			if !backoff(err) {
				return
			}
			continue
		}
		delay = time.Second
		for _, inv := range a.invites {
			s.onInvite(inv)
		}
		s.deliverToDevice(a)
		// Only now: the homeserver deletes the to-device messages up to
		// since once a later since is used.
		since = a.next
	}
}

// deliverToDevice hands the answer's accepted to-device messages to the
// handler and logs what was dropped (never the content).
func (s *BotSync) deliverToDevice(a botSyncAnswer) {
	for _, d := range a.oversized {
		s.log.Warn().Str("sender", d.Sender).Str("type", d.Type).Int("size", d.size).
			Msg("to-device message dropped: content too large")
	}
	if a.invalidSenders > 0 {
		s.log.Warn().Int("count", a.invalidSenders).Msg("to-device messages dropped: invalid sender")
	}
	if a.overflow > 0 {
		s.log.Warn().Int("overflow", a.overflow).Int("max", maxToDevicePerSync).
			Msg("to-device messages dropped: too many in one sync")
	}
	if s.onToDevice == nil {
		if len(a.toDevice) > 0 {
			s.log.Debug().Int("count", len(a.toDevice)).Msg("to-device messages ignored: no handler")
		}
		return
	}
	for _, ev := range a.toDevice {
		s.onToDevice(ev)
	}
}

// session returns the bot device's access token, logging the bot in when
// it has none or when the one it has is rejected (the caller's last token,
// refused by the homeserver). Logins are serialised, so a token that
// someone else already replaced is not replaced again.
func (s *BotSync) session(ctx context.Context, rejected string) (string, error) {
	select {
	case s.loginSlot <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-s.loginSlot }()
	s.mu.Lock()
	token := s.token
	s.mu.Unlock()
	if token != "" && token != rejected {
		return token, nil
	}
	token, err := s.login(ctx)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.token = token
	s.mu.Unlock()
	return token, nil
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

// sync makes one /sync call and returns what it reported.
func (s *BotSync) sync(ctx context.Context, token, since string) (botSyncAnswer, error) {
	q := url.Values{"filter": {botSyncFilter}, "timeout": {strconv.Itoa(int(botSyncTimeout / time.Millisecond))}}
	if since != "" {
		q.Set("since", since)
	}
	u := *s.homeserver
	u.Path += "/_matrix/client/v3/sync"
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return botSyncAnswer{}, fmt.Errorf("bot sync: %w", err)
	}
	status, raw, err := callHomeserver(s.client, req, token, maxSyncBody)
	if errors.Is(err, errAnswerTooLong) {
		return botSyncAnswer{}, errors.New("bot sync: answer too long")
	} else if err != nil {
		return botSyncAnswer{}, fmt.Errorf("bot sync: %w", err)
	}
	if status == http.StatusUnauthorized {
		return botSyncAnswer{}, errSyncUnauthorized
	}
	if status != http.StatusOK {
		return botSyncAnswer{}, fmt.Errorf("bot sync: status %d", status)
	}
	return parseBotSync(raw, s.botUserID)
}

// botSyncAnswer is what one /sync answer reported to the bot.
type botSyncAnswer struct {
	next     string
	invites  []BotInvite
	toDevice []ToDeviceEvent
	// oversized are the to-device messages of an accepted type dropped for
	// their size, without their content.
	oversized []droppedToDevice
	// invalidSenders counts to-device messages of an accepted type dropped
	// because their sender is not a user ID.
	invalidSenders int
	// overflow counts the to-device messages past maxToDevicePerSync,
	// dropped unread.
	overflow int
}

// droppedToDevice names a to-device message dropped for its size.
type droppedToDevice struct {
	Sender, Type string
	size         int
}

// toDeviceTypeAccepted reports whether the bot sends and accepts to-device
// messages of type t.
func toDeviceTypeAccepted(t string) bool {
	return len(t) <= maxIDLen && validText(t) &&
		(strings.HasPrefix(t, toDevicePrefixCall) || strings.HasPrefix(t, toDevicePrefixEntente))
}

// parseBotSync reads a /sync answer (spec: Client-Server API, GET
// /_matrix/client/v3/sync) for the bot's invitations and to-device
// messages. In rooms.invite, the stripped m.room.member event whose state
// key is the bot, with membership "invite", names who invited it;
// malformed rooms are skipped. Of to_device.events, the first
// maxToDevicePerSync are read: those of an accepted type
// (toDeviceTypeAccepted) from a valid user ID, with an object content of
// at most MaxToDeviceContent bytes, are returned in order; others are
// dropped. An answer without next_batch is an error.
func parseBotSync(raw []byte, botUserID string) (botSyncAnswer, error) {
	var r struct {
		NextBatch string `json:"next_batch"`
		ToDevice  struct {
			Events []json.RawMessage `json:"events"`
		} `json:"to_device"`
		Rooms struct {
			Invite map[string]struct {
				InviteState struct {
					Events []json.RawMessage `json:"events"`
				} `json:"invite_state"`
			} `json:"invite"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return botSyncAnswer{}, fmt.Errorf("bot sync: decode: %w", err)
	}
	if r.NextBatch == "" || len(r.NextBatch) > maxIDLen {
		return botSyncAnswer{}, errors.New("bot sync: no next_batch")
	}
	a := botSyncAnswer{next: r.NextBatch}
	events := r.ToDevice.Events
	if len(events) > maxToDevicePerSync {
		a.overflow = len(events) - maxToDevicePerSync
		events = events[:maxToDevicePerSync]
	}
	for _, e := range events {
		var ev struct {
			Sender  string          `json:"sender"`
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(e, &ev) != nil || !toDeviceTypeAccepted(ev.Type) {
			continue
		}
		switch {
		case !validUserID(ev.Sender):
			a.invalidSenders++
		case len(ev.Content) > MaxToDeviceContent:
			a.oversized = append(a.oversized, droppedToDevice{Sender: ev.Sender, Type: ev.Type, size: len(ev.Content)})
		case len(ev.Content) == 0 || ev.Content[0] != '{':
			// The spec's content is an object; anything else is malformed.
		default:
			a.toDevice = append(a.toDevice, ToDeviceEvent{Sender: ev.Sender, Type: ev.Type, Content: ev.Content})
		}
	}
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
			a.invites = append(a.invites, BotInvite{RoomID: roomID, Sender: ev.Sender})
			break
		}
	}
	return a, nil
}
