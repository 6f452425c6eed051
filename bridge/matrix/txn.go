package matrix

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
)

// CallMemberEventType is the MatrixRTC call membership state event (MSC3401,
// MSC4143) that Element Call and Element X send in legacy and compatibility
// modes.
const CallMemberEventType = "org.matrix.msc3401.call.member"

// RTCMemberEventType is the newer MatrixRTC membership (MSC4143), sent as a
// sticky message event (MSC4354) rather than state: matrix_2_0 mode.
const RTCMemberEventType = "org.matrix.msc4143.rtc.member"

// maxStickyDuration is MSC4354's upper bound on how long an event stays sticky.
const maxStickyDuration = time.Hour

// RoomMembership is a user's m.room.member state in a room, as a transaction
// reported it.
type RoomMembership struct {
	RoomID string
	UserID string
	// Membership is "join", "invite", "leave", "ban" or "knock".
	Membership string
	// Sender is who made the change: the user, or whoever invited, kicked
	// or banned them.
	Sender  string
	EventID string
	At      time.Time
}

// CallMember is one call membership state entry, attributed to the user who
// sent it. The state key is recorded but never trusted as identity: on some
// homeservers any member may write another member's key, so entries whose
// key the sender does not own are dropped before they get here.
type CallMember struct {
	RoomID   string
	StateKey string
	// UserID is the event's sender.
	UserID   string
	DeviceID string
	// Joined is false for the empty content that ends a membership.
	Joined         bool
	Application    string
	CallID         string
	Scope          string
	FocusSelection string
	// ServiceURL is the first preferred LiveKit focus's livekit_service_url:
	// the member's own node or token service.
	ServiceURL string
	EventID    string
	At         time.Time
	// ExpiresAt is when the membership lapses unless renewed; zero if the
	// content gave no expiry.
	ExpiresAt time.Time
}

// MeetCommand is a "!meet" or "!meet <name>" message to the bot: the sender
// asks for a join-page link to the room's call (or to a named meeting of
// the room).
type MeetCommand struct {
	RoomID  string
	Sender  string
	EventID string
	// Name is empty for the room's own call.
	Name string
}

// maxMeetName bounds a meeting name.
const maxMeetName = 64

// RoomCreated is a room's m.room.create event, as a transaction reported it.
// Once the node has seen a room's creation, every membership change since
// reaches it too (the registration's room namespace), so its record of the
// room's members is complete.
type RoomCreated struct {
	RoomID  string
	Creator string
	EventID string
	At      time.Time
}

// TxnEffects is what one appservice transaction changes in the node's view of
// Matrix. Memberships and call members are stored together with the
// transaction ID, atomically; commands are answered after the commit, at
// most once.
type TxnEffects struct {
	Rooms       []RoomCreated
	Memberships []RoomMembership
	CallMembers []CallMember
	Meets       []MeetCommand
}

// Empty reports whether the transaction changed nothing the node tracks.
func (fx TxnEffects) Empty() bool {
	return len(fx.Rooms) == 0 && len(fx.Memberships) == 0 && len(fx.CallMembers) == 0 && len(fx.Meets) == 0
}

// maxCallMemberExpiry bounds a membership's self-declared lifetime.
const maxCallMemberExpiry = 24 * time.Hour

// callMemberContent is the part of a call.member content the node reads
// (matrix-js-sdk src/matrixrtc/CallMembership.ts, SessionMembershipData).
type callMemberContent struct {
	Application string `json:"application"`
	CallID      string `json:"call_id"`
	Scope       string `json:"scope"`
	DeviceID    string `json:"device_id"`
	CreatedTS   int64  `json:"created_ts"`
	Expires     int64  `json:"expires"`
	FocusActive struct {
		Type           string `json:"type"`
		FocusSelection string `json:"focus_selection"`
	} `json:"focus_active"`
	FociPreferred []struct {
		Type              string `json:"type"`
		LivekitServiceURL string `json:"livekit_service_url"`
		LivekitAlias      string `json:"livekit_alias"`
	} `json:"foci_preferred"`
}

// parseTxn decodes an appservice transaction body (spec: Application Service
// API, PUT /_matrix/app/v1/transactions/{txnId}) and extracts the effects
// the node tracks, in event order. Events the node does not track, and
// malformed ones, are skipped; only a body that is not a transaction at all
// is an error.
func parseTxn(body []byte) (TxnEffects, error) {
	// Events are decoded one by one: one malformed event must not make the
	// whole transaction fail, or the homeserver would retry it forever.
	var txn struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &txn); err != nil {
		return TxnEffects{}, fmt.Errorf("decode transaction: %w", err)
	}
	var fx TxnEffects
	for _, raw := range txn.Events {
		evt := new(event.Event)
		if json.Unmarshal(raw, evt) != nil || evt.RoomID == "" || evt.Sender == "" {
			continue
		}
		if evt.StateKey == nil {
			switch evt.Type.Type {
			case event.EventMessage.Type:
				if m, ok := parseMeet(evt); ok {
					fx.Meets = append(fx.Meets, m)
				}
			case RTCMemberEventType:
				if cm, ok := parseRTCMember(evt, raw); ok {
					fx.CallMembers = append(fx.CallMembers, cm)
				}
			}
			continue
		}
		at := time.UnixMilli(evt.Timestamp)
		switch evt.Type.Type {
		case event.StateCreate.Type:
			if *evt.StateKey == "" && evt.ID != "" {
				fx.Rooms = append(fx.Rooms, RoomCreated{
					RoomID: evt.RoomID.String(), Creator: evt.Sender.String(), EventID: evt.ID.String(), At: at,
				})
			}
		case event.StateMember.Type:
			var c struct {
				Membership string `json:"membership"`
			}
			if json.Unmarshal(evt.Content.VeryRaw, &c) != nil || c.Membership == "" || userIDServer(*evt.StateKey) == "" {
				continue
			}
			// For m.room.member the state key is the target user: the
			// homeserver's auth rules vouch for it.
			fx.Memberships = append(fx.Memberships, RoomMembership{
				RoomID: evt.RoomID.String(), UserID: *evt.StateKey, Membership: c.Membership,
				Sender: evt.Sender.String(), EventID: evt.ID.String(), At: at,
			})
		case CallMemberEventType:
			if cm, ok := parseCallMember(evt, at); ok {
				fx.CallMembers = append(fx.CallMembers, cm)
			}
		}
	}
	return fx, nil
}

func parseCallMember(evt *event.Event, at time.Time) (CallMember, bool) {
	sender, key := evt.Sender.String(), *evt.StateKey
	if !ownsCallMemberKey(sender, key) {
		return CallMember{}, false
	}
	cm := CallMember{RoomID: evt.RoomID.String(), StateKey: key, UserID: sender, EventID: evt.ID.String(), At: at}
	var c callMemberContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &c); err != nil {
		return CallMember{}, false
	}
	if c.DeviceID == "" {
		// Empty content ({}): the membership at this key ends. The device
		// is taken from the key, which the sender owns.
		cm.DeviceID = deviceFromKey(sender, key)
		return cm, true
	}
	cm.Joined = true
	cm.DeviceID = c.DeviceID
	cm.Application, cm.CallID, cm.Scope = c.Application, c.CallID, c.Scope
	cm.FocusSelection = c.FocusActive.FocusSelection
	for _, f := range c.FociPreferred {
		if f.Type == "livekit" && f.LivekitServiceURL != "" {
			cm.ServiceURL = f.LivekitServiceURL
			break
		}
	}
	if c.Expires > 0 {
		created := at
		if c.CreatedTS > 0 {
			created = time.UnixMilli(c.CreatedTS)
		}
		cm.ExpiresAt = created.Add(min(time.Duration(c.Expires)*time.Millisecond, maxCallMemberExpiry))
	}
	return cm, true
}

// rtcMemberContent is the part of an rtc.member content the node reads
// (matrix-js-sdk src/matrixrtc/membership, RtcMembershipData).
type rtcMemberContent struct {
	SlotID string `json:"slot_id"`
	Member struct {
		ID              string `json:"id"`
		ClaimedUserID   string `json:"claimed_user_id"`
		ClaimedDeviceID string `json:"claimed_device_id"`
	} `json:"member"`
	Application struct {
		Type string `json:"type"`
	} `json:"application"`
	RTCTransports []struct {
		Type              string `json:"type"`
		LivekitServiceURL string `json:"livekit_service_url"`
	} `json:"rtc_transports"`
	StickyKey         string `json:"sticky_key"`
	UnstableStickyKey string `json:"msc4354_sticky_key"`
}

// parseRTCMember reads a sticky org.matrix.msc4143.rtc.member event. As for
// state memberships, identity is the sender: an event whose claimed user is
// someone else is dropped. The membership is keyed by its sticky key (the
// sender's own namespace) and lapses when the event stops being sticky;
// content without a member ends it.
func parseRTCMember(evt *event.Event, raw json.RawMessage) (CallMember, bool) {
	var c rtcMemberContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &c); err != nil {
		return CallMember{}, false
	}
	var top struct {
		Sticky struct {
			DurationMS int64 `json:"duration_ms"`
		} `json:"sticky"`
		UnstableSticky struct {
			DurationMS int64 `json:"duration_ms"`
		} `json:"msc4354_sticky"`
	}
	_ = json.Unmarshal(raw, &top)
	sender := evt.Sender.String()
	key := c.StickyKey
	if key == "" {
		key = c.UnstableStickyKey
	}
	if key == "" {
		key = c.Member.ID
	}
	if key == "" || len(key) > 255 {
		return CallMember{}, false
	}
	at := time.UnixMilli(evt.Timestamp)
	cm := CallMember{
		RoomID: evt.RoomID.String(), StateKey: "rtc.member:" + sender + ":" + key, UserID: sender,
		EventID: evt.ID.String(), At: at,
	}
	if c.Member.ClaimedUserID == "" {
		return cm, true // the membership under this key ends
	}
	if c.Member.ClaimedUserID != sender || c.Member.ClaimedDeviceID == "" {
		return CallMember{}, false
	}
	cm.Joined = true
	cm.DeviceID = c.Member.ClaimedDeviceID
	cm.Application = c.Application.Type
	cm.CallID = c.SlotID
	cm.Scope = "m.room"
	cm.FocusSelection = "multi_sfu"
	for _, t := range c.RTCTransports {
		if t.Type == "livekit" && t.LivekitServiceURL != "" {
			cm.ServiceURL = t.LivekitServiceURL
			break
		}
	}
	d := top.Sticky.DurationMS
	if d <= 0 {
		d = top.UnstableSticky.DurationMS
	}
	if d > 0 {
		cm.ExpiresAt = at.Add(min(time.Duration(d)*time.Millisecond, maxStickyDuration))
	} else {
		cm.ExpiresAt = at.Add(maxStickyDuration)
	}
	return cm, true
}

// ownsCallMemberKey reports whether sender may speak for state key key:
// "@user:server" (MSC3401's original per-user key) or "_@user:server_…"
// (matrix-js-sdk's per-device key; the leading '_' keeps it from being an
// MSC3757 owned key). A key owned by someone else is ignored: Dendrite lets
// any member write it.
func ownsCallMemberKey(sender, key string) bool {
	return key == sender || strings.HasPrefix(key, "_"+sender+"_") || strings.HasPrefix(key, sender+"_")
}

// deviceFromKey extracts DEVICE from "_@user:server_DEVICE_m.call" or
// "_@user:server_DEVICE"; "" when the key carries no device.
func deviceFromKey(sender, key string) string {
	rest, ok := strings.CutPrefix(key, "_"+sender+"_")
	if !ok {
		rest, ok = strings.CutPrefix(key, sender+"_")
	}
	if !ok {
		return ""
	}
	// Device IDs may contain '_': only the application suffix is cut.
	return strings.TrimSuffix(rest, "_m.call")
}

// parseMeet recognises "!meet" and "!meet <name>" in a plain text message.
func parseMeet(evt *event.Event) (MeetCommand, bool) {
	var c struct {
		MsgType string `json:"msgtype"`
		Body    string `json:"body"`
	}
	if json.Unmarshal(evt.Content.VeryRaw, &c) != nil || c.MsgType != "m.text" {
		return MeetCommand{}, false
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(c.Body), "!meet")
	if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t') {
		return MeetCommand{}, false
	}
	name := strings.Join(strings.Fields(rest), " ")
	if len(name) > maxMeetName || !validText(name) && name != "" {
		return MeetCommand{}, false
	}
	return MeetCommand{RoomID: evt.RoomID.String(), Sender: evt.Sender.String(), EventID: evt.ID.String(), Name: name}, true
}
