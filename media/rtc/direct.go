package rtc

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// directPath sends a subscriber's RTP without pion's write path. pion
// passes each packet through the track's interceptor chain, the SRTP
// session's lock and stream map, its mux endpoint, the ICE connection, the
// selected candidate and the UDP mux before it reaches the socket; that
// was 18 % of the node's CPU under load, more than the encryption itself
// (BENCHMARKS.md). The node knows everything those layers decide: the SRTP
// keys (from the DTLS handshake, dtlskeys.go), the peer's address (the
// selected ICE candidate pair) and the socket (the one UDP socket every
// connection shares). So each down track encrypts its packets with its own
// SRTP context straight into the fan-out's send batch.
//
// pion keeps everything else: ICE checks and consent, DTLS, SCTP, RTCP in
// both directions, and RTP on connections where the node could not learn
// the keys (when it was the DTLS client). pion's ICE agent skips its
// keepalive while it sees packets go out on the pair; it does not see
// these, so it sends its binding request every 2 s on a subscriber
// connection, which RFC 7675 asks of a sender anyway (consent every 5 s).
type directPath struct {
	conn    *batchConn
	key     []byte
	salt    []byte
	profile srtp.ProtectionProfile
	// addr is the peer's address on the selected candidate pair; nil while
	// the pair is not one on our UDP socket, when pion's path is used.
	addr atomic.Pointer[netip.AddrPort]
	// sent counts the bytes (UDP payloads: SRTP packets) sent on this path, which pion's
	// candidate-pair counters never see (Trunk.Bytes).
	sent atomic.Uint64
}

// errDirectUnusable means a connection keeps pion's write path.
var errDirectUnusable = errors.New("direct send path unusable")

// newDirectPath prepares direct sends for a connected subscriber
// connection, or says why it cannot.
func newDirectPath(conn *batchConn, pc *webrtc.PeerConnection, secrets *dtlsSecrets) (*directPath, error) {
	if conn == nil || secrets == nil {
		return nil, errDirectUnusable
	}
	key, salt, profile, err := secrets.localKeys()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDirectUnusable, err)
	}
	// A sealer now checks the keys and profile once, not on the first packet.
	if _, err := newSealer(key, salt, profile); err != nil {
		return nil, fmt.Errorf("%w: %w", errDirectUnusable, err)
	}
	p := &directPath{conn: conn, key: key, salt: salt, profile: profile}
	ice := pc.SCTP().Transport().ICETransport()
	ice.OnSelectedCandidatePairChange(p.selectPair)
	pair, err := ice.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return nil, fmt.Errorf("%w: no selected candidate pair", errDirectUnusable)
	}
	p.selectPair(pair)
	if p.addr.Load() == nil {
		// ICE-TCP: media goes over the TCP connection pion holds, never
		// this socket. Deciding now keeps every packet of the connection
		// on pion's path (a sink picks its path once, at its first packet).
		return nil, fmt.Errorf("%w: selected pair %s is not on the UDP socket", errDirectUnusable, pair)
	}
	return p, nil
}

// selectPair follows ICE's choice of candidate pair. Every local UDP
// candidate of the node is on its one UDP socket; while the pair is not
// one of those (ICE-TCP, or a peer address that is not an IP) direct
// sends are dropped, until ICE selects a UDP pair again (a connection that
// starts on TCP never gets a direct path: newDirectPath).
func (p *directPath) selectPair(pair *webrtc.ICECandidatePair) {
	if pair == nil || pair.Local == nil || pair.Remote == nil || pair.Local.Protocol != webrtc.ICEProtocolUDP ||
		pair.Local.Typ == webrtc.ICECandidateTypeRelay || pair.Remote.Protocol != webrtc.ICEProtocolUDP {
		p.addr.Store(nil)
		return
	}
	ip, err := netip.ParseAddr(pair.Remote.Address)
	if err != nil {
		p.addr.Store(nil)
		return
	}
	a := netip.AddrPortFrom(ip.Unmap(), pair.Remote.Port)
	p.addr.Store(&a)
}

// newSealer is a down track's own SRTP sealer: one per SSRC, so that no
// two fan-outs share one and no lookup runs in a shared map.
func (p *directPath) newSealer() (rtpSealer, error) {
	return newSealer(p.key, p.salt, p.profile)
}

// srtpOverhead is the most SRTP adds to an RTP packet: the 16-byte
// AES-GCM tag (10 bytes for AES-CM with HMAC-SHA1-80), and 4 bytes for a
// rollover counter, which the node never asks for.
const srtpOverhead = 16 + 4

var errPacketTooLarge = errors.New("packet too large for the send buffer")
