package federation

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"entente.dev/entente/media"
)

// The trunk's control channel: one JSON object per message, each with the
// protocol version and a type. Unknown types are ignored, so that a newer
// node may add messages; a new major version is agreed in hello.
const (
	protoVersion = 1

	msgHello       = "hello"       // first message from both: versions spoken
	msgParticipant = "participant" // a participant of the sender's node joined or changed
	msgLeave       = "leave"       // it left
	msgWant        = "want"        // the receiver of a track asks for its layers (or none)
	msgSpeakers    = "speakers"    // speaking levels of the sender's participants changed
	msgBye         = "bye"         // the sender ends the trunk
	msgData        = "data"        // a data packet of one of the sender's participants
)

// Bounds on what a peer may announce.
const (
	maxMessage            = 64 << 10
	maxRemoteParticipants = 200
	maxTracksPerRemote    = 32
	maxLayers             = 3
	maxIdentity           = 256
	maxName               = 256
	maxMetadata           = 16 << 10
	maxAttributes         = 32
	maxAttribute          = 1 << 10
	maxFrontEnd           = 8 << 10
	maxSpeakers           = maxRemoteParticipants
	// maxData bounds a data packet that crosses: with base64 it must fit
	// in one control message.
	maxData  = 44 << 10
	maxDests = 64
)

type message struct {
	V int    `json:"v"`
	T string `json:"t"`

	Versions    []int               `json:"versions,omitempty"`    // hello
	Server      string              `json:"server,omitempty"`      // hello
	Participant *participantMessage `json:"participant,omitempty"` // participant
	Sid         string              `json:"sid,omitempty"`         // leave: the participant; want: the track
	Layers      *uint8              `json:"layers,omitempty"`      // want: bit i for layer i, 0 none
	Speakers    []speakerMessage    `json:"speakers,omitempty"`    // speakers
	Reason      string              `json:"reason,omitempty"`
	Kind        media.DataKind      `json:"kind,omitempty"`  // data: reliable or lossy
	Dests       []string            `json:"dests,omitempty"` // data: identities, none for everyone
	Data        []byte              `json:"data,omitempty"`  // data: the packet, as the sender's node stamped it      // bye
}

type participantMessage struct {
	Sid        string            `json:"sid"`
	Identity   string            `json:"identity"`
	Name       string            `json:"name,omitempty"`
	Metadata   string            `json:"metadata,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Kind       int32             `json:"kind"`
	JoinedAt   int64             `json:"joined_at"` // Unix milliseconds
	Tracks     []trackMessage    `json:"tracks,omitempty"`
	// Room names the transport whose room the participant is in at the
	// sender, by the server name of the node that runs it; empty on the
	// shared transport. The receiver puts the participant into its own
	// room standing for that transport (link.sideFor).
	Room string `json:"room,omitempty"`
}

type trackMessage struct {
	Sid      string         `json:"sid"`
	Kind     uint8          `json:"kind"`
	Source   int32          `json:"source"`
	Name     string         `json:"name,omitempty"`
	Muted    bool           `json:"muted,omitempty"`
	MimeType string         `json:"mime,omitempty"`
	Width    uint32         `json:"width,omitempty"`
	Height   uint32         `json:"height,omitempty"`
	Layers   []layerMessage `json:"layers,omitempty"`
	// FrontEnd is the front end's own description of the track (LiveKit's
	// TrackInfo, with its encryption), carried as bytes.
	FrontEnd []byte `json:"front_end,omitempty"`
}

type layerMessage struct {
	Quality media.VideoQuality `json:"q"`
	Width   uint32             `json:"w,omitempty"`
	Height  uint32             `json:"h,omitempty"`
}

type speakerMessage struct {
	Sid   string  `json:"sid"`
	Level float32 `json:"level"`
}

// decodeMessage parses and bounds one control message.
func decodeMessage(b []byte) (*message, error) {
	if len(b) > maxMessage {
		return nil, fmt.Errorf("message of %d bytes, more than %d", len(b), maxMessage)
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("message: %w", err)
	}
	if m.V != protoVersion {
		return nil, fmt.Errorf("message of version %d, want %d", m.V, protoVersion)
	}
	if len(m.Sid) > maxIdentity || len(m.Server) > maxIdentity || len(m.Reason) > maxIdentity || len(m.Versions) > 8 {
		return nil, fmt.Errorf("%s: a field over its bound", m.T)
	}
	switch m.T {
	case msgParticipant:
		if m.Participant == nil {
			return nil, fmt.Errorf("participant: missing")
		}
		if err := m.Participant.check(); err != nil {
			return nil, err
		}
	case msgLeave:
		if m.Sid == "" {
			return nil, fmt.Errorf("leave: no sid")
		}
	case msgWant:
		if m.Sid == "" || m.Layers == nil || *m.Layers > 7 {
			return nil, fmt.Errorf("want: no track or no valid layers")
		}
	case msgSpeakers:
		if len(m.Speakers) > maxSpeakers {
			return nil, fmt.Errorf("speakers: %d, more than %d", len(m.Speakers), maxSpeakers)
		}
	case msgData:
		if m.Sid == "" || len(m.Data) == 0 || len(m.Data) > maxData || len(m.Dests) > maxDests ||
			(m.Kind != media.DataReliable && m.Kind != media.DataLossy) {
			return nil, fmt.Errorf("data: no sender, no packet, a packet over %d bytes, more than %d destinations or an unknown kind", maxData, maxDests)
		}
		for _, d := range m.Dests {
			if d == "" || len(d) > maxIdentity {
				return nil, fmt.Errorf("data: a destination missing or too long")
			}
		}
	}
	return &m, nil
}

func (p *participantMessage) check() error {
	switch {
	case p.Sid == "" || len(p.Sid) > maxIdentity:
		return fmt.Errorf("participant: sid missing or too long")
	case p.Identity == "" || len(p.Identity) > maxIdentity || !utf8.ValidString(p.Identity):
		return fmt.Errorf("participant %s: identity missing, too long or not UTF-8", p.Sid)
	case len(p.Name) > maxName || len(p.Metadata) > maxMetadata || len(p.Room) > maxIdentity:
		return fmt.Errorf("participant %s: name or metadata too long", p.Sid)
	case len(p.Attributes) > maxAttributes:
		return fmt.Errorf("participant %s: %d attributes, more than %d", p.Sid, len(p.Attributes), maxAttributes)
	case len(p.Tracks) > maxTracksPerRemote:
		return fmt.Errorf("participant %s: %d tracks, more than %d", p.Sid, len(p.Tracks), maxTracksPerRemote)
	}
	for k, v := range p.Attributes {
		if len(k)+len(v) > maxAttribute {
			return fmt.Errorf("participant %s: attribute %.32q too long", p.Sid, k)
		}
	}
	for _, t := range p.Tracks {
		switch {
		case t.Sid == "" || len(t.Sid) > maxIdentity:
			return fmt.Errorf("participant %s: a track without a valid sid", p.Sid)
		case media.Kind(t.Kind) != media.KindAudio && media.Kind(t.Kind) != media.KindVideo:
			return fmt.Errorf("track %s: kind %d", t.Sid, t.Kind)
		case len(t.Name) > maxName || len(t.MimeType) > 64 || len(t.FrontEnd) > maxFrontEnd:
			return fmt.Errorf("track %s: a field over its bound", t.Sid)
		case len(t.Layers) > maxLayers:
			return fmt.Errorf("track %s: %d layers, more than %d", t.Sid, len(t.Layers), maxLayers)
		}
		for _, l := range t.Layers {
			if l.Quality < media.QualityLow || l.Quality > media.QualityHigh {
				return fmt.Errorf("track %s: layer quality %d", t.Sid, l.Quality)
			}
		}
	}
	return nil
}

func encodeMessage(m *message) ([]byte, error) {
	m.V = protoVersion
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.T, err)
	}
	if len(b) > maxMessage {
		return nil, fmt.Errorf("encode %s: %d bytes, more than %d", m.T, len(b), maxMessage)
	}
	return b, nil
}
