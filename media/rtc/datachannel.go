package rtc

import (
	"errors"
	"fmt"
	"io"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/media"
)

// dataReadStart is the read buffer a data channel starts with. LiveKit's
// data packets (chat, reactions, small app messages) fit in it; a larger
// message grows the buffer up to maxDataMessage for that message only.
// pion's own read loop holds a 64 KiB buffer per channel for the channel's
// lifetime, which with four channels per participant was the largest part
// of the node's heap per participant.
const dataReadStart = 2048

// serveData reads a data channel's messages and relays them to the room.
// Data channels are detached (engine.go), so this read loop is ours. The
// channel's kind follows its label, as LiveKit clients name them.
func (t *Transport) serveData(dc *webrtc.DataChannel) {
	label := dc.Label()
	dc.OnOpen(func() {
		rw, err := dc.Detach()
		if err != nil {
			t.log.Debug().Err(err).Str("label", label).Msg("data channel not served")
			return
		}
		if !t.goRead(func() { t.readData(label, rw) }) {
			_ = rw.Close()
		}
	})
}

// readData runs until the channel or its connection closes. A message
// larger than the negotiated maximum (maxDataMessage, sent in the SDP's
// max-message-size) closes the channel, as pion's read loop does.
func (t *Transport) readData(label string, rw datachannel.ReadWriteCloser) {
	defer rw.Close()
	kind := media.DataLossy
	if label == "_reliable" {
		kind = media.DataReliable
	}
	buf := make([]byte, dataReadStart)
	for {
		n, err := rw.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			// The message stays queued until a read takes all of it.
			if len(buf) >= maxDataMessage {
				t.log.Debug().Str("label", label).Msg("data message over the size limit: closing the channel")
				return
			}
			buf = make([]byte, min(2*len(buf), maxDataMessage))
			continue
		}
		if err != nil {
			return
		}
		t.relayData(kind, buf[:n])
		if len(buf) > dataReadStart {
			buf = make([]byte, dataReadStart)
		}
	}
}

// relayData hands one DataPacket the participant sent to its room, read
// and stamped with its sender (relayedData). Only a participant that may
// publish data has its packets read at all.
func (t *Transport) relayData(kind media.DataKind, data []byte) {
	from := sender{identity: t.p.Identity(), sid: t.p.SID(), agent: t.p.Kind() == media.ParticipantAgent}
	out, dests, err := relayedData(from, kind, data)
	if err != nil {
		t.log.Debug().Err(err).Msg("dropping a data packet")
		return
	}
	t.p.RelayData(kind, out, dests)
}

// sender is who sent a data packet, as relayedData stamps it.
type sender struct {
	identity, sid string
	// agent: the sender may speak for others (transcriptions).
	agent bool
}

// relayedData decodes one DataPacket that from sent on a channel of the
// given kind and returns the packet as the room relays it (on a channel of
// the same kind) and the identities it is addressed to (none: everyone).
// The sender's identity is stamped on it, as livekit/livekit
// participant.go handleReceivedDataMessage does. It is here, with the
// data channels, because the packets are LiveKit's: the core relays
// bytes.
func relayedData(from sender, kind media.DataKind, data []byte) ([]byte, []string, error) {
	if len(data) == 0 || len(data) > media.MaxDataMessage {
		return nil, nil, fmt.Errorf("%w: %d bytes", media.ErrInvalidDataPacket, len(data))
	}
	var pkt livekit.DataPacket
	// Only what the node can read is relayed: it cannot stamp the sender on
	// a payload it does not know, and a field it does not know may be read
	// by a client as one it does, such as the identity field sent again
	// with another wire type, which Go keeps as unknown and a JavaScript
	// decoder may take as the sender's identity.
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &pkt); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", media.ErrInvalidDataPacket, err)
	}
	// Payloads that speak for other participants are not relayed, as in
	// livekit/livekit handleReceivedDataMessage: transcriptions come from
	// agents only; metrics are not forwarded as data; speaker updates are
	// the node's to send, over signalling.
	switch pkt.Value.(type) {
	case nil:
		return nil, nil, fmt.Errorf("%w: no payload the node knows", media.ErrInvalidDataPacket)
	case *livekit.DataPacket_Speaker, *livekit.DataPacket_Metrics:
		return nil, nil, fmt.Errorf("%w: %T is not relayed", media.ErrInvalidDataPacket, pkt.Value)
	case *livekit.DataPacket_Transcription:
		if !from.agent {
			return nil, nil, fmt.Errorf("%w: transcription from a participant that is not an agent", media.ErrInvalidDataPacket)
		}
	}
	// media.DataKind has LiveKit's values.
	pkt.Kind = livekit.DataPacket_Kind(kind)
	pkt.ParticipantIdentity = from.identity
	pkt.ParticipantSid = from.sid
	dests := pkt.DestinationIdentities
	if u := pkt.GetUser(); u != nil {
		u.ParticipantIdentity = from.identity
		u.ParticipantSid = from.sid
		if len(dests) == 0 {
			dests = u.DestinationIdentities
		}
	}
	out, err := proto.Marshal(&pkt)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", media.ErrInvalidDataPacket, err)
	}
	return out, dests, nil
}
