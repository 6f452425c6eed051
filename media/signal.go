package media

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
	SendParticipants(infos []*ParticipantInfo)
	// SendTrackPublished confirms an add-track request.
	SendTrackPublished(cid string, info *TrackInfo)
	// SendSpeakers announces active speaker changes.
	SendSpeakers(speakers []SpeakerInfo)
	// SendLeave tells the participant it is being removed, then the
	// Signaller closes its transport.
	SendLeave(reason DisconnectReason, action LeaveAction)
}

// DataObserver is what a Signaller may also be: told of every data packet
// relayed in its room, with its sender and destinations, whoever they are
// addressed to, instead of its transport being sent those addressed to
// it. A federation trunk's export participant is one: it carries its
// node's participants' packets to the other node, which delivers them to
// the destinations there. ObserveData is called on the sender's
// transport's goroutine; it must return at once and not keep data.
type DataObserver interface {
	ObserveData(from *Participant, kind DataKind, data []byte, dests []string)
}

// JoinParams describe a participant about to join a room.
type JoinParams struct {
	Identity string
	Name     string
	Metadata string
	// Attributes come from the token: the participant may add its own
	// but never change or delete these (Participant.UpdateMetadata).
	Attributes    map[string]string
	Kind          ParticipantKind
	Permissions   Permissions
	AutoSubscribe bool
	Signaller     Signaller
	// Transport carries the participant's media; Join attaches it, and
	// closes it when the participant leaves or is refused.
	Transport Transport
	// Origin is the server name of the node a remote participant joined
	// at (a federation trunk brings it here); empty for the node's own
	// participants. A participant is never sent back to its origin, nor
	// on to a third node (federation: full mesh, no transit).
	Origin string
}

// JoinInfo is what a front end needs to answer a join.
type JoinInfo struct {
	Room        *RoomInfo
	Participant *ParticipantInfo
	Others      []*ParticipantInfo
	SIFTrailer  []byte
}
