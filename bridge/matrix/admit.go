package matrix

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Participant attributes of the tokens the token service issues: the
// Matrix room the call belongs to and the user the token was issued to.
// They are visible to the other participants, who are members of the same
// Matrix room. Values are escaped by claimEscape.
const (
	AttrMatrixRoomID = "matrix_room_id"
	AttrMatrixUserID = "matrix_user_id"
	// AttrMeetingGuest marks the tokens of "!meet" guests
	// (PathMeetingGuest), so that Admit refuses them once
	// matrix.meeting_guests is off.
	AttrMeetingGuest = "entente_meeting_guest"
	// AttrMembershipUnverified marks tokens issued while the node could not
	// know whether their holder was joined to the room
	// (matrix.unknown_membership = "serve_local").
	AttrMembershipUnverified = "entente_membership_unverified"
)

// admitCheckTimeout bounds the homeserver lookup of one admission.
const admitCheckTimeout = 5 * time.Second

// matrixAttributes returns the attributes identifying a token's Matrix room
// and user.
func matrixAttributes(roomID, userID string) map[string]string {
	return map[string]string{AttrMatrixRoomID: claimEscape(roomID), AttrMatrixUserID: claimEscape(userID)}
}

// claimEscape percent-encodes '%' and every byte claimSafe refuses, so
// that the value can travel in a JWT that Element Call decodes with atob.
// Room and user IDs in practice have none of them and stay as they are;
// url.PathUnescape undoes it.
func claimEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || !claimSafe(s[i:i+1]) {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Admit decides whether the holder of a LiveKit token with participant
// attributes attrs may join the SFU now. Tokens without the token
// service's attributes are none of its business (nil). For the others the
// user must still be joined to the Matrix room: a token issued before a
// kick, unused until after it, is refused (ErrNotAdmitted). A "!meet"
// guest's token is refused while matrix.meeting_guests is off.
//
// The homeserver is asked, as for issuing the token. When it cannot answer
// (it is down, or the bot is not in the room), the node's own record (from
// appservice transactions) decides: admitted if it has the user joined;
// refused if it says the user left or was removed, or if it saw the room
// from its creation and never saw the user join; admitted otherwise, so
// that a homeserver outage does not stop calls whose members are known.
func (b *Bridge) Admit(ctx context.Context, attrs map[string]string) error {
	if attrs[AttrMeetingGuest] != "" && !b.meetingGuests {
		// Minted while the node let guests in, used after it stopped.
		return fmt.Errorf("%w: meeting guests may not join on this node", ErrNotAdmitted)
	}
	rawRoom, okRoom := attrs[AttrMatrixRoomID]
	rawUser, okUser := attrs[AttrMatrixUserID]
	if !okRoom && !okUser {
		return nil
	}
	roomID, err1 := url.PathUnescape(rawRoom)
	userID, err2 := url.PathUnescape(rawUser)
	if err1 != nil || err2 != nil || roomID == "" || userIDServer(userID) == "" {
		return fmt.Errorf("%w: malformed Matrix attributes", ErrNotAdmitted)
	}
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		log = &b.log
	}
	ctx, cancel := context.WithTimeout(ctx, admitCheckTimeout)
	defer cancel()
	joined, err := b.members.IsJoined(ctx, roomID, userID)
	if err == nil {
		if !joined {
			return fmt.Errorf("%w: %s is not joined to %s", ErrNotAdmitted, userID, roomID)
		}
		return nil
	}
	m, seen, serr := b.store.MatrixRecordedMembership(ctx, roomID, userID)
	switch {
	case serr != nil:
		log.Warn().Err(serr).Msg("admission: stored membership unreadable")
	case m == "join":
		return nil // the record, complete or not, has the user joined
	case m != "":
		return fmt.Errorf("%w: %s is not joined to %s (%s, as last seen)", ErrNotAdmitted, userID, roomID, m)
	case seen:
		// The node saw the room from its creation and never saw the user join.
		return fmt.Errorf("%w: %s never joined %s", ErrNotAdmitted, userID, roomID)
	}
	log.Warn().Err(err).Str("matrix_room", roomID).Str("user_id", userID).
		Msg("admission: membership not checked with the homeserver; admitted on the node's record")
	return nil
}
