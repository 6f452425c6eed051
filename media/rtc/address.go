package rtc

import (
	"net"
	"strconv"

	"github.com/pion/webrtc/v4"
)

// remoteAddress is the far end of pc's selected ICE candidate pair, "" when
// there is none yet.
func remoteAddress(pc *webrtc.PeerConnection) string {
	if pc == nil {
		return ""
	}
	sctp := pc.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return ""
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Remote == nil {
		return ""
	}
	return net.JoinHostPort(pair.Remote.Address, strconv.Itoa(int(pair.Remote.Port)))
}

// RemoteAddress implements media.RemoteAddresser: where the subscriber
// connection's media goes (the publisher connection's, before it has one).
func (t *Transport) RemoteAddress() string {
	if a := remoteAddress(t.sub); a != "" {
		return a
	}
	return remoteAddress(t.pub)
}

// RemoteAddress implements media.RemoteAddresser: the far node's address.
func (t *Trunk) RemoteAddress() string { return remoteAddress(t.pc) }
