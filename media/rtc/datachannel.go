package rtc

import (
	"errors"
	"io"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"
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
	kind := livekit.DataPacket_LOSSY
	if label == "_reliable" {
		kind = livekit.DataPacket_RELIABLE
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
		t.p.RelayData(kind, buf[:n])
		if len(buf) > dataReadStart {
			buf = make([]byte, dataReadStart)
		}
	}
}
