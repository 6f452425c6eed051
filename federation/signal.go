package federation

import (
	"encoding/json"
	"fmt"
	"time"
)

// Matrix call signalling between the nodes' bots, as to-device messages
// (MSC3401 "Call setup" for to-device m.call.* events with conf_id and
// session ids; the spec's VoIP module for call_id, party_id, version,
// offer and answer). They are not encrypted (the bots have no Olm
// devices): the homeservers authenticate the sender, and the SDP's DTLS
// fingerprints pin the media connection to what the bots exchanged.
const (
	EventInvite     = "m.call.invite"
	EventAnswer     = "m.call.answer"
	EventCandidates = "m.call.candidates"
	EventHangup     = "m.call.hangup"
	// EventTrunkRequest is Entente's own: the node that answers asks the
	// node that offers for a trunk for a call that spans both and has
	// none here (it has just started, or restarted, or its trunk ended),
	// rather than waiting for the offerer to notice. It carries conf_id
	// and org.entente.trunk like an invite, without an offer.
	EventTrunkRequest = "org.entente.trunk.request"
)

// Hang-up reasons this node sends; the first three are the spec's.
const (
	reasonUserHangup    = "user_hangup"
	reasonICEFailed     = "ice_failed"
	reasonInviteTimeout = "invite_timeout"
	reasonRefused       = "org.entente.refused"
	reasonReplaced      = "org.entente.replaced"
)

const (
	// maxSDP bounds one session description.
	maxSDP = 32 << 10
	// maxCandidates bounds the candidates of one message, maxCandidate one candidate line.
	maxCandidates = 32
	maxCandidate  = 512
	// inviteLifetime is how long an invite is valid: one older than that
	// (a message replayed to a restarted node) is dropped.
	inviteLifetime = 30 * time.Second
	// maxIDLength bounds call, party and session ids and conf_id.
	maxIDLength = 255
)

// description is an SDP offer or answer.
type description struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// candidate is one ICE candidate, as RTCIceCandidateInit.
type candidate struct {
	Candidate     string `json:"candidate"`
	SDPMid        string `json:"sdpMid"`
	SDPMLineIndex uint16 `json:"sdpMLineIndex"`
}

// trunkInfo is Entente's own part of an invite: the Matrix room the
// call is in, and when the invite was made.
type trunkInfo struct {
	Version int    `json:"v"`
	RoomID  string `json:"room_id"`
	TS      int64  `json:"ts"` // Unix milliseconds
}

// callContent is the content of every m.call.* to-device message.
type callContent struct {
	CallID          string       `json:"call_id"`
	PartyID         string       `json:"party_id"`
	Version         string       `json:"version"`
	ConfID          string       `json:"conf_id"`
	DeviceID        string       `json:"device_id,omitempty"`
	SenderSessionID string       `json:"sender_session_id"`
	DestSessionID   string       `json:"dest_session_id,omitempty"`
	Invitee         string       `json:"invitee,omitempty"`
	Lifetime        int64        `json:"lifetime,omitempty"`
	Offer           *description `json:"offer,omitempty"`
	Answer          *description `json:"answer,omitempty"`
	Candidates      []candidate  `json:"candidates,omitempty"`
	Reason          string       `json:"reason,omitempty"`
	Trunk           *trunkInfo   `json:"org.entente.trunk,omitempty"`
}

// parseCall decodes and checks one m.call.* message's content for its type.
func parseCall(eventType string, raw []byte, now time.Time) (*callContent, error) {
	var c callContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", eventType, err)
	}
	for _, id := range []struct{ name, v string }{
		{"call_id", c.CallID}, {"conf_id", c.ConfID}, {"sender_session_id", c.SenderSessionID},
	} {
		if id.v == "" || len(id.v) > maxIDLength {
			return nil, fmt.Errorf("%s: %s missing or longer than %d bytes", eventType, id.name, maxIDLength)
		}
	}
	if len(c.PartyID) > maxIDLength || len(c.DestSessionID) > maxIDLength || len(c.Reason) > maxIDLength {
		return nil, fmt.Errorf("%s: an id or the reason is longer than %d bytes", eventType, maxIDLength)
	}
	switch eventType {
	case EventInvite:
		if c.Offer == nil || c.Offer.Type != "offer" || c.Offer.SDP == "" || len(c.Offer.SDP) > maxSDP {
			return nil, fmt.Errorf("%s: no offer, or one longer than %d bytes", eventType, maxSDP)
		}
		if err := checkTrunkInfo(eventType, c.Trunk, now); err != nil {
			return nil, err
		}
	case EventTrunkRequest:
		if err := checkTrunkInfo(eventType, c.Trunk, now); err != nil {
			return nil, err
		}
	case EventAnswer:
		if c.Answer == nil || c.Answer.Type != "answer" || c.Answer.SDP == "" || len(c.Answer.SDP) > maxSDP {
			return nil, fmt.Errorf("%s: no answer, or one longer than %d bytes", eventType, maxSDP)
		}
	case EventCandidates:
		if len(c.Candidates) == 0 || len(c.Candidates) > maxCandidates {
			return nil, fmt.Errorf("%s: %d candidates, want 1 to %d", eventType, len(c.Candidates), maxCandidates)
		}
		for _, x := range c.Candidates {
			if len(x.Candidate) > maxCandidate || len(x.SDPMid) > maxIDLength {
				return nil, fmt.Errorf("%s: a candidate longer than %d bytes", eventType, maxCandidate)
			}
		}
	case EventHangup:
	default:
		return nil, fmt.Errorf("%s: not a call event", eventType)
	}
	return &c, nil
}

// checkTrunkInfo checks an invite's or trunk request's org.entente.trunk:
// version 1, naming the room, made within inviteLifetime of now (an older
// one is a message replayed to a restarted node).
func checkTrunkInfo(eventType string, t *trunkInfo, now time.Time) error {
	if t == nil || t.Version != 1 || t.RoomID == "" || len(t.RoomID) > maxIDLength {
		return fmt.Errorf("%s: no org.entente.trunk of version 1 naming the room", eventType)
	}
	at := time.UnixMilli(t.TS)
	if at.Before(now.Add(-inviteLifetime)) || at.After(now.Add(inviteLifetime)) {
		return fmt.Errorf("%s: made at %s, not within %s of now", eventType, at.UTC().Format(time.RFC3339), inviteLifetime)
	}
	return nil
}
