package rtc

import (
	"net"
	"strconv"

	"github.com/pion/webrtc/v4"
)

// selectedPair is pc's selected ICE candidate pair, nil when there is none
// yet.
func selectedPair(pc *webrtc.PeerConnection) *webrtc.ICECandidatePair {
	if pc == nil {
		return nil
	}
	// pion's ICETransport.Start sets the transport's gatherer without the
	// lock GetSelectedCandidatePair would need (a race the race detector
	// reports when the connection list is read while a client connects);
	// the ICE state leaves "new" only after that, through the transport's
	// own state callback.
	switch pc.ICEConnectionState() {
	case webrtc.ICEConnectionStateNew, webrtc.ICEConnectionStateUnknown:
		return nil
	}
	sctp := pc.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return nil
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Remote == nil {
		return nil
	}
	return pair
}

// remotePath is "<protocol> <type>" of the far candidate of pc's selected
// pair, "" when there is none yet.
func remotePath(pc *webrtc.PeerConnection) string {
	pair := selectedPair(pc)
	if pair == nil {
		return ""
	}
	return pair.Remote.Protocol.String() + " " + pair.Remote.Typ.String()
}

// RemotePath implements media.RemotePather, for the subscriber connection
// (the publisher connection's, before it has one).
func (t *Transport) RemotePath() string {
	if p := remotePath(t.sub); p != "" {
		return p
	}
	return remotePath(t.pub)
}

// remoteAddress is the far end of pc's selected ICE candidate pair, "" when
// there is none yet.
func remoteAddress(pc *webrtc.PeerConnection) string {
	pair := selectedPair(pc)
	if pair == nil {
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
