package media

import (
	"fmt"
	"time"
)

// The core's data model: what a room says about itself, its participants
// and their tracks, and what it is asked to do. Front ends convert to and
// from their own wire types at their boundary (media/livekit for LiveKit's
// protobufs), so the core stays the same whichever protocol a participant
// speaks. The enumerations keep LiveKit's numeric values: LiveKit clients
// are the node's first front end and its values are what federated nodes
// and stored call history already carry, and a conversion is then a cast.
// A new value must take the number LiveKit gives it, if it has one.

// DisconnectReason is why a participant left or was removed. Its values
// are LiveKit's DisconnectReason (livekit_models.proto).
type DisconnectReason int32

const (
	ReasonUnknown            DisconnectReason = 0
	ReasonClientInitiated    DisconnectReason = 1
	ReasonDuplicateIdentity  DisconnectReason = 2
	ReasonServerShutdown     DisconnectReason = 3
	ReasonParticipantRemoved DisconnectReason = 4
	ReasonRoomDeleted        DisconnectReason = 5
	ReasonStateMismatch      DisconnectReason = 6
	ReasonJoinFailure        DisconnectReason = 7
	ReasonMigration          DisconnectReason = 8
	ReasonSignalClose        DisconnectReason = 9
	ReasonRoomClosed         DisconnectReason = 10
	ReasonUserUnavailable    DisconnectReason = 11
	ReasonUserRejected       DisconnectReason = 12
	ReasonSIPTrunkFailure    DisconnectReason = 13
	ReasonConnectionTimeout  DisconnectReason = 14
	ReasonMediaFailure       DisconnectReason = 15
	ReasonAgentError         DisconnectReason = 16
)

var reasonNames = [...]string{
	"UNKNOWN_REASON", "CLIENT_INITIATED", "DUPLICATE_IDENTITY", "SERVER_SHUTDOWN", "PARTICIPANT_REMOVED",
	"ROOM_DELETED", "STATE_MISMATCH", "JOIN_FAILURE", "MIGRATION", "SIGNAL_CLOSE", "ROOM_CLOSED",
	"USER_UNAVAILABLE", "USER_REJECTED", "SIP_TRUNK_FAILURE", "CONNECTION_TIMEOUT", "MEDIA_FAILURE", "AGENT_ERROR",
}

// String is LiveKit's name of the reason, so that logs read as before.
func (r DisconnectReason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("DisconnectReason(%d)", int32(r))
}

// LeaveAction is what a participant told to leave should do next. Its
// values are LiveKit's LeaveRequest.Action.
type LeaveAction int32

const (
	// LeaveDisconnect: the participant is gone for good.
	LeaveDisconnect LeaveAction = 0
	// LeaveResume: the participant may resume its session.
	LeaveResume LeaveAction = 1
	// LeaveReconnect: the participant should join again, afresh.
	LeaveReconnect LeaveAction = 2
)

// DataKind is the kind of channel a data packet travels on. Its values
// are LiveKit's DataPacket.Kind.
type DataKind int32

const (
	DataReliable DataKind = 0
	DataLossy    DataKind = 1
)

// ParticipantKind is what a participant is. Its values are LiveKit's
// ParticipantInfo.Kind.
type ParticipantKind int32

const (
	ParticipantStandard ParticipantKind = 0
	ParticipantIngress  ParticipantKind = 1
	ParticipantEgress   ParticipantKind = 2
	ParticipantSIP      ParticipantKind = 3
	// ParticipantAgent may speak for others (transcriptions).
	ParticipantAgent     ParticipantKind = 4
	ParticipantConnector ParticipantKind = 7
	ParticipantBridge    ParticipantKind = 8
)

// ParticipantState is where a participant is in its session. Its values
// are LiveKit's ParticipantInfo.State.
type ParticipantState int32

const (
	// StateJoining: admitted, its join answer not yet sent.
	StateJoining ParticipantState = 0
	// StateJoined: told of the room (Participant.Start).
	StateJoined ParticipantState = 1
	// StateActive: its transport can carry media (Participant.Connected).
	StateActive       ParticipantState = 2
	StateDisconnected ParticipantState = 3
)

// Source is what a track shows or plays (a camera, a screen). Its values
// are LiveKit's TrackSource. (TrackSource is where a stream's packets
// come from.)
type Source int32

const (
	SourceUnknown          Source = 0
	SourceCamera           Source = 1
	SourceMicrophone       Source = 2
	SourceScreenShare      Source = 3
	SourceScreenShareAudio Source = 4
)

var sourceNames = [...]string{"UNKNOWN", "CAMERA", "MICROPHONE", "SCREEN_SHARE", "SCREEN_SHARE_AUDIO"}

// String is LiveKit's name of the source.
func (s Source) String() string {
	if s >= 0 && int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return fmt.Sprintf("Source(%d)", int32(s))
}

// VideoQuality names a simulcast layer. Its values are LiveKit's
// VideoQuality.
type VideoQuality int32

const (
	QualityLow    VideoQuality = 0
	QualityMedium VideoQuality = 1
	QualityHigh   VideoQuality = 2
	QualityOff    VideoQuality = 3
)

// VideoLayer is one simulcast layer as its publisher announced it.
type VideoLayer struct {
	Quality       VideoQuality
	Width, Height uint32
}

// TrackInfo describes a published track.
type TrackInfo struct {
	Sid    string
	Kind   Kind // 0 when the publisher announced neither audio nor video
	Source Source
	Name   string
	Muted  bool
	// MimeType and Mid are set once the track's media arrives.
	MimeType string
	Mid      string
	// Width and Height are the largest layer's size; Layers are the
	// simulcast layers (more than one: the track is simulcast).
	Width, Height uint32
	Layers        []VideoLayer
	// FrontEnd is what the publisher's front end said about the track that
	// the core has no use for (LiveKit's encryption, stream, audio features
	// and codecs). The core carries it untouched to every front end, which
	// reads what it knows and ignores the rest: a track described by a
	// LiveKit client reaches another node's clients as it was sent. Who
	// sets it must not change it afterwards, since it is shared.
	FrontEnd any
}

// Clone returns a copy that shares nothing but FrontEnd.
func (t *TrackInfo) Clone() *TrackInfo {
	c := *t
	c.Layers = append([]VideoLayer(nil), t.Layers...)
	return &c
}

// Permissions are what a participant's grant allows.
type Permissions struct {
	CanPublish     bool
	CanSubscribe   bool
	CanPublishData bool
	Hidden         bool
	// Sources, when not empty, limits what may be published.
	Sources []Source
}

func (p Permissions) allowsSource(s Source) bool {
	if len(p.Sources) == 0 {
		return true
	}
	for _, x := range p.Sources {
		if x == s {
			return true
		}
	}
	return false
}

// ParticipantInfo is a snapshot of a participant, for signalling.
type ParticipantInfo struct {
	Sid        string
	Identity   string
	Name       string
	Metadata   string
	Attributes map[string]string
	State      ParticipantState
	Kind       ParticipantKind
	// Tracks are its published tracks whose media has arrived.
	Tracks      []*TrackInfo
	Version     uint32
	Permissions Permissions
	JoinedAt    time.Time
	IsPublisher bool
	// DisconnectReason is set once State is StateDisconnected.
	DisconnectReason DisconnectReason
	// Origin is JoinParams.Origin: empty for the node's own participants.
	// Front ends do not show it; federation reads it.
	Origin string
}

// Clone returns a deep copy (but for the tracks' FrontEnd).
func (p *ParticipantInfo) Clone() *ParticipantInfo {
	c := *p
	c.Attributes = copyAttrs(p.Attributes)
	c.Permissions.Sources = append([]Source(nil), p.Permissions.Sources...)
	c.Tracks = make([]*TrackInfo, len(p.Tracks))
	for i, t := range p.Tracks {
		c.Tracks[i] = t.Clone()
	}
	return &c
}

// SpeakerInfo is one participant's change of speaking.
type SpeakerInfo struct {
	Sid    string // the participant's
	Level  float32
	Active bool
}

// RoomInfo is a snapshot of a room, for signalling.
type RoomInfo struct {
	Sid             string
	Name            string
	CreatedAt       time.Time
	EmptyTimeout    time.Duration
	MaxParticipants int // 0: no limit
	NumParticipants int
}

// AddTrackRequest is a participant's announcement of a track it is about
// to publish; its media is matched to it by Cid (Participant.Receive).
type AddTrackRequest struct {
	// Cid is the publisher's own id of the track.
	Cid string
	// SimulcastCids are the ids of the same track's other codecs' streams.
	SimulcastCids []string
	Kind          Kind
	Source        Source
	Name          string
	Muted         bool
	Width, Height uint32
	Layers        []VideoLayer
	// FrontEnd becomes the TrackInfo's FrontEnd.
	FrontEnd any
}

// TrackSettings is what a subscriber asks of video tracks it shows.
type TrackSettings struct {
	TrackSids []string
	// Disabled: the track is not shown (a hidden tile); nothing is sent.
	Disabled bool
	Quality  VideoQuality
	// Width and Height, when set, are the rendered size: they choose the
	// layer rather than Quality.
	Width, Height uint32
}
