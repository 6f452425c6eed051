package matrix

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"
)

// meetSlotPrefix names the MatrixRTC-like slot of a named meeting, so that
// "!meet standup" gets a LiveKit room of its own, distinct from the room's
// call.
const meetSlotPrefix = "entente.meet#"

// MeetRoom returns the LiveKit room a meeting link opens: for an empty name,
// the room's own call, the one Element clients join (slot m.call#ROOM);
// otherwise a named meeting belonging to the room.
func MeetRoom(roomID, name string) string {
	return RoomAlias(roomID, MeetSlot(name))
}

// Query parameters of a meeting link. The join page reads them (web/src/app.js):
// with QueryMatrixRoom it signs the person in with their Matrix account and
// asks /get_token for the slot MeetSlot(QueryMeeting), or asks
// PathMeetingGuest for a guest token.
const (
	QueryMatrixRoom = "matrix_room"
	QueryMeeting    = "meeting"
)

// MeetSlot returns the MatrixRTC slot of a meeting: LegacySlotID
// ("m.call#ROOM", the one Element clients use) for the room's own call,
// meetSlotPrefix+name for a named meeting.
func MeetSlot(name string) string {
	if name == "" {
		return LegacySlotID
	}
	return meetSlotPrefix + name
}

// MeetLink returns the join page URL (joinPage is its base, e.g.
// "https://rtc.agency.example/") for the meeting: the Matrix room ID in
// QueryMatrixRoom and, for a named meeting, its name in QueryMeeting. The
// page derives the LiveKit room (MeetRoom) from them through the token
// service, never from the link alone.
func MeetLink(joinPage, roomID, name string) string {
	u, err := url.Parse(joinPage)
	if err != nil {
		return joinPage
	}
	q := u.Query()
	q.Set(QueryMatrixRoom, roomID)
	if name != "" {
		q.Set(QueryMeeting, name)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// meetText is the bot's answer to a meet command.
func meetText(joinPage string, m MeetCommand) string {
	link := MeetLink(joinPage, m.RoomID, m.Name)
	if m.Name == "" {
		return "Join this room's call from a browser: " + link
	}
	return "Meeting \u201c" + m.Name + "\u201d: " + link
}

// fromNode reports whether userID is the bot or one of the node's ghosts:
// their messages are never commands.
func (b *Bridge) fromNode(userID string) bool {
	if userID == b.appService.BotUserID() {
		return true
	}
	local, ok := strings.CutPrefix(userID, "@")
	if !ok || !strings.HasSuffix(local, ":"+b.cfg.ServerName) {
		return false
	}
	return strings.HasPrefix(local, b.cfg.GhostPrefix)
}

// applied is the application service's OnApplied: leaves go to the call
// guard, invitations of the bot and meet commands to the bot's loop
// (dropped when it is overwhelmed; each is acted on at most once).
func (b *Bridge) applied(ctx context.Context, fx TxnEffects) {
	b.guard.Applied(ctx, fx)
	bot := b.appService.BotUserID()
	for _, m := range fx.Memberships {
		if m.UserID == bot && m.Membership == "invite" {
			b.invited(BotInvite{RoomID: m.RoomID, Sender: m.Sender})
		}
	}
	for _, m := range fx.Meets {
		if b.fromNode(m.Sender) {
			continue
		}
		select {
		case b.meets <- m:
		default:
			b.log.Warn().Str("matrix_room", m.RoomID).Msg("too many meet commands; one dropped")
		}
	}
}

// invited hands an invitation of the bot, from a transaction or from the
// bot's own /sync, to the bot's loop if its sender is within the policy
// (dropped when the loop is overwhelmed; an invitation still pending is
// reported again by the next initial /sync, and accepted anyway when a
// local user asks for a call in the room).
func (b *Bridge) invited(inv BotInvite) {
	if !b.mayInviteBot(inv.Sender) {
		b.log.Info().Str("matrix_room", inv.RoomID).Str("sender", inv.Sender).Msg("invitation from a homeserver outside the policy ignored")
		return
	}
	select {
	case b.invites <- inv.RoomID:
	default:
		b.log.Warn().Str("matrix_room", inv.RoomID).Msg("too many invitations; one dropped")
	}
}

// mayInviteBot reports whether the bot accepts an invitation from sender:
// users of the node's homeserver and of the homeservers on matrix.allow.
// The bot in a room is what lets the node check membership there, so an
// invitation from elsewhere would only bring work.
func (b *Bridge) mayInviteBot(sender string) bool {
	s := userIDServer(sender)
	return s != "" && (s == b.cfg.ServerName || slices.Contains(b.cfg.Allow, "*") || slices.Contains(b.cfg.Allow, s))
}

// runBot joins the rooms the bot is invited to and posts meeting links, as
// the bot, until ctx is done. A failed join is tried again after 1, 2, 4, 8
// and 16 s: an invitation from another homeserver reaches the bot (through
// its /sync) before the inviting homeserver has stored it, and a join
// asked at once is refused there ("membership from leave to join").
func (b *Bridge) runBot(ctx context.Context) {
	bot := b.appService.mx.BotIntent()
	type retry struct {
		attempt int
		at      time.Time
	}
	retries := map[string]retry{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	rearm := func() {
		next := time.Hour
		for _, r := range retries {
			next = min(next, time.Until(r.at))
		}
		timer.Reset(max(next, 0))
	}
	join := func(roomID string, attempt int) {
		if _, err := bot.JoinRoomByID(ctx, id.RoomID(roomID)); err != nil {
			if attempt < maxJoinAttempts && ctx.Err() == nil && (len(retries) < maxJoinRetries || retries[roomID].attempt > 0) {
				retries[roomID] = retry{attempt: attempt + 1, at: time.Now().Add(time.Second << attempt)}
				b.log.Info().Err(err).Str("matrix_room", roomID).Int("attempt", attempt+1).Msg("accept invitation: will try again")
			} else {
				delete(retries, roomID)
				b.log.Warn().Err(err).Str("matrix_room", roomID).Msg("accept invitation")
			}
			return
		}
		delete(retries, roomID)
		b.log.Info().Str("matrix_room", roomID).Msg("bot joined room")
	}
	for {
		select {
		case <-ctx.Done():
			return
		case roomID := <-b.invites:
			join(roomID, 0)
			rearm()
		case <-timer.C:
			now := time.Now()
			for roomID, r := range retries {
				if !r.at.After(now) {
					join(roomID, r.attempt)
				}
			}
			rearm()
		case m := <-b.meets:
			if _, err := bot.SendNotice(ctx, id.RoomID(m.RoomID), meetText(b.joinPage, m)); err != nil {
				b.log.Warn().Err(err).Str("matrix_room", m.RoomID).Msg("answer meet command")
			}
		}
	}
}

const (
	// maxJoinAttempts bounds the tries to accept one invitation.
	maxJoinAttempts = 5
	// maxJoinRetries bounds the invitations waiting to be tried again.
	maxJoinRetries = 256
)
