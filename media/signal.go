package media

import "github.com/livekit/protocol/livekit"

// Signaller carries what the room tells one participant about the room.
// media/livekit implements it over the LiveKit websocket; other front ends
// (the Jingle gateway, the federation trunk) implement it their own way.
// What a transport must negotiate (SDP, ICE candidates) is the transport's
// own business (media/rtc.Signaller).
//
// Every method must return at once (queue, never block on the network):
// rooms call them from their own goroutines. Calls made in order are
// delivered in order. Arguments are owned by the Signaller after the call.
type Signaller interface {
	// SendParticipants announces changed participants (including the receiver itself).
	SendParticipants(infos []*livekit.ParticipantInfo)
	// SendTrackPublished confirms an add-track request.
	SendTrackPublished(cid string, info *livekit.TrackInfo)
	// SendSpeakers announces active speaker changes.
	SendSpeakers(speakers []*livekit.SpeakerInfo)
	// SendLeave tells the participant it is being removed, then the
	// Signaller closes its transport.
	SendLeave(reason livekit.DisconnectReason, action livekit.LeaveRequest_Action)
}

// Permissions are what a participant's grant allows.
type Permissions struct {
	CanPublish     bool
	CanSubscribe   bool
	CanPublishData bool
	Hidden         bool
	// Sources, when not empty, limits what may be published.
	Sources []livekit.TrackSource
}

func (p Permissions) allowsSource(s livekit.TrackSource) bool {
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

func (p Permissions) proto() *livekit.ParticipantPermission {
	return &livekit.ParticipantPermission{
		CanPublish: p.CanPublish, CanSubscribe: p.CanSubscribe, CanPublishData: p.CanPublishData,
		Hidden: p.Hidden, CanPublishSources: append([]livekit.TrackSource(nil), p.Sources...),
	}
}

// JoinParams describe a participant about to join a room.
type JoinParams struct {
	Identity string
	Name     string
	Metadata string
	// Attributes come from the token: the participant may add its own
	// but never change or delete these (Participant.UpdateMetadata).
	Attributes    map[string]string
	Kind          livekit.ParticipantInfo_Kind
	Permissions   Permissions
	AutoSubscribe bool
	Signaller     Signaller
	// Transport carries the participant's media; Join attaches it, and
	// closes it when the participant leaves or is refused.
	Transport Transport
}

// JoinInfo is what a front end needs to answer a join.
type JoinInfo struct {
	Room        *livekit.Room
	Participant *livekit.ParticipantInfo
	Others      []*livekit.ParticipantInfo
	SIFTrailer  []byte
}
