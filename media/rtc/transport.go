package rtc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"

	"entente.dev/entente/media"
)

// Target names one of a participant's two peer connections, with the
// values of LiveKit's SignalTarget.
type Target int32

const (
	// Publisher is the connection the client offers and sends media on.
	Publisher Target = 0
	// Subscriber is the connection the node offers and sends media on.
	Subscriber Target = 1
)

// Signaller carries what a Transport must negotiate with its client.
// media/livekit implements it over the LiveKit websocket. Like
// media.Signaller, every method returns at once and keeps call order.
type Signaller interface {
	// SendOffer sends the subscriber peer connection's offer.
	SendOffer(sd webrtc.SessionDescription, id uint32, midToTrackID map[string]string)
	// SendAnswer answers the participant's publisher offer with the same id.
	SendAnswer(sd webrtc.SessionDescription, id uint32)
	// SendCandidate trickles one local ICE candidate.
	SendCandidate(c *webrtc.ICECandidateInit, target Target)
}

// maxPendingCandidates bounds the ICE candidates queued before a remote
// description exists.
const maxPendingCandidates = 64

// maxRemoteCandidates bounds the remote candidates one connection takes in
// its life. pion keeps every one, pairs it with each local candidate and
// compares each new one with all it has, so without a bound a client
// trickling candidates costs the node memory and quadratic time. A browser
// gathers a few per network interface and ICE server; the node does no ICE
// restart (a client that loses its connection joins again), so a connection
// never has a second generation to count.
const maxRemoteCandidates = 256

// reportsPerPacket sender reports (28 bytes each) fit in one compound RTCP
// packet well under the MTU.
const reportsPerPacket = 32

// Transport is a participant's two peer connections, as LiveKit clients
// expect: the publisher (the client offers, we answer) and the subscriber
// (we offer, the client answers). It implements media.Transport.
type Transport struct {
	// sendConn is the subscriber connection's side of its sinks; its
	// direct path is set once the connection is connected.
	sendConn
	sig Signaller
	p   *media.Participant

	pub *webrtc.PeerConnection
	sub *webrtc.PeerConnection
	// secrets learns the subscriber connection's SRTP keys, for the
	// direct path.
	secrets   *dtlsSecrets
	connected atomic.Bool

	mu     sync.Mutex
	closed bool
	tracks map[*media.DownTrack]*localTrack
	// readers counts the goroutines the transport started: incoming
	// streams, RTCP from the subscriber, data channels. Close waits for
	// them.
	readers sync.WaitGroup

	pubMu    sync.Mutex // serialises publisher negotiation
	pubCands []webrtc.ICECandidateInit
	pubAdded int // remote candidates given to pion

	negMu         sync.Mutex // serialises subscriber negotiation
	offerID       uint32
	offerInFlight bool
	renegotiate   bool
	subCands      []webrtc.ICECandidateInit
	subAdded      int

	dcReliable *webrtc.DataChannel
	dcLossy    *webrtc.DataChannel
}

// NewTransport makes a transport whose negotiation goes through sig. Its
// peer connections are made when a room attaches it (Attach).
func (e *Engine) NewTransport(sig Signaller, log zerolog.Logger) *Transport {
	return &Transport{sendConn: sendConn{eng: e, log: log}, sig: sig, tracks: map[*media.DownTrack]*localTrack{}}
}

// Attach implements media.Transport: it makes the two peer connections
// and the data channels, which report to p.
func (t *Transport) Attach(p *media.Participant) error {
	t.p = p
	t.log = p.Log().With().Logger()
	var err error
	if t.pub, err = t.eng.pub.NewPeerConnection(webrtc.Configuration{}); err != nil {
		return fmt.Errorf("publisher peer connection: %w", err)
	}
	if t.sub, t.secrets, err = t.eng.newSubscriber(); err != nil {
		return fmt.Errorf("subscriber peer connection: %w", err)
	}
	t.pub.OnICECandidate(func(c *webrtc.ICECandidate) { t.trickle(c, Publisher) })
	t.sub.OnICECandidate(func(c *webrtc.ICECandidate) { t.trickle(c, Subscriber) })
	t.pub.OnTrack(t.onTrack)
	t.pub.OnDataChannel(t.serveData)
	t.sub.OnConnectionStateChange(t.onSubscriberState)
	t.pub.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed {
			t.log.Info().Msg("publisher connection failed")
			p.Fail(media.ReasonConnectionTimeout)
		}
	})
	// Data channels on the subscriber connection, which is primary: clients
	// adopt them by label (livekit/livekit transportmanager.go).
	ordered := false
	zero := uint16(0)
	if t.dcReliable, err = t.sub.CreateDataChannel("_reliable", &webrtc.DataChannelInit{}); err == nil {
		t.dcLossy, err = t.sub.CreateDataChannel("_lossy", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	}
	if err != nil {
		return fmt.Errorf("data channels: %w", err)
	}
	t.serveData(t.dcReliable)
	t.serveData(t.dcLossy)
	return nil
}

// Close implements media.Transport: both peer connections close, and it
// returns once every reader goroutine has stopped.
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	if t.pub != nil {
		_ = t.pub.Close()
	}
	if t.sub != nil {
		_ = t.sub.Close()
	}
	t.readers.Wait()
}

// goRead starts a reader goroutine the transport owns, unless it is closed.
func (t *Transport) goRead(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.readers.Add(1)
	go func() {
		defer t.readers.Done()
		f()
	}()
	return true
}

func (t *Transport) trickle(c *webrtc.ICECandidate, target Target) {
	if c == nil {
		return
	}
	init := c.ToJSON()
	t.sig.SendCandidate(&init, target)
}

func (t *Transport) onSubscriberState(s webrtc.PeerConnectionState) {
	switch s {
	case webrtc.PeerConnectionStateConnected:
		if t.connected.Swap(true) {
			return
		}
		// Before the first packet is forwarded (media.Participant.Connected
		// lets them through), so that every stream is sent one way only:
		// one SRTP context sees all its packets (sink.go).
		if path, err := newDirectPath(t.eng.batch, t.sub, t.secrets); err == nil {
			t.direct.Store(path)
			t.log.Debug().Str("srtp", path.profile.String()).Msg("subscriber media sent directly")
		} else {
			t.log.Debug().Err(err).Msg("subscriber media goes through pion's write path")
		}
		t.p.Connected()
	case webrtc.PeerConnectionStateFailed:
		t.log.Info().Msg("subscriber connection failed")
		t.p.Fail(media.ReasonConnectionTimeout)
	}
}

// onTrack hands an incoming stream to the participant, which starts a
// reader for it once it belongs to a published track.
func (t *Transport) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	codec := remote.Codec()
	var levelID uint8
	for _, x := range receiver.GetParameters().HeaderExtensions {
		if x.URI == extAudioLevel {
			levelID = uint8(x.ID)
		}
	}
	t.p.Receive(media.IncomingStream{
		TrackID: remote.ID(),
		Codec: media.Codec{
			MimeType: codec.MimeType, ClockRate: codec.ClockRate, Channels: codec.Channels, SDPFmtpLine: codec.SDPFmtpLine,
		},
		RID: remote.RID(), SSRC: uint32(remote.SSRC()), AudioLevelExt: levelID,
		Mid:    receiverMid(t.pub, receiver),
		Source: t,
		Start: func(l *media.Layer) {
			if !t.goRead(func() { readLayer(&t.log, remote, l) }) {
				l.End()
			}
		},
	})
}

// readLayer is the packet path's start: read, then hand to the core. It
// ends when the far end's stream ends (track unpublished or peer
// connection closed).
func readLayer(log *zerolog.Logger, remote *webrtc.TrackRemote, l *media.Layer) {
	buf := make([]byte, receiveMTU)
	for {
		n, _, err := remote.Read(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug().Err(err).Uint32("ssrc", l.SSRC()).Msg("track read ended")
			}
			l.End()
			return
		}
		l.WriteRTP(buf[:n], time.Now().UnixNano())
	}
}

// RequestKeyframe implements media.TrackSource: a PLI to the publisher.
func (t *Transport) RequestKeyframe(ssrc uint32) {
	_ = t.pub.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
}

func receiverMid(pc *webrtc.PeerConnection, r *webrtc.RTPReceiver) string {
	for _, tr := range pc.GetTransceivers() {
		if tr.Receiver() == r {
			return tr.Mid()
		}
	}
	return ""
}

// AddDownTrack implements media.Transport: the track is added to the
// subscriber connection, and bound when the client's answer accepts it.
func (t *Transport) AddDownTrack(d *media.DownTrack) error {
	lt := newLocalTrack(&t.sendConn, d)
	sender, err := t.sub.AddTrack(lt)
	if err != nil {
		return err
	}
	lt.sender = sender
	t.mu.Lock()
	t.tracks[d] = lt
	t.mu.Unlock()
	if !t.goRead(lt.readRTCP) {
		return media.ErrParticipantClosed
	}
	return nil
}

// RemoveDownTrack implements media.Transport.
func (t *Transport) RemoveDownTrack(d *media.DownTrack) {
	t.mu.Lock()
	lt := t.tracks[d]
	delete(t.tracks, d)
	t.mu.Unlock()
	if lt != nil {
		_ = t.sub.RemoveTrack(lt.sender)
	}
}

// SendSenderReports implements media.SenderReporter.
func (t *Transport) SendSenderReports(now time.Time) {
	t.mu.Lock()
	tracks := make([]*localTrack, 0, len(t.tracks))
	for _, lt := range t.tracks {
		tracks = append(tracks, lt)
	}
	t.mu.Unlock()
	writeSenderReports(t.sub, tracks, now)
}

// writeSenderReports sends pc's bound tracks' sender reports, one compound
// RTCP packet per reportsPerPacket tracks.
func writeSenderReports(pc *webrtc.PeerConnection, tracks []*localTrack, now time.Time) {
	var batch []rtcp.Packet
	for _, lt := range tracks {
		ssrc, ok := lt.boundSSRC()
		if !ok {
			continue
		}
		if sr, ok := lt.d.SenderReport(now); ok {
			sr.SSRC = ssrc
			batch = append(batch, &sr)
		}
		if len(batch) == reportsPerPacket {
			_ = pc.WriteRTCP(batch)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		_ = pc.WriteRTCP(batch)
	}
}

// HandleOffer applies the client's publisher offer and sends the answer.
func (t *Transport) HandleOffer(sd webrtc.SessionDescription, id uint32) error {
	err := t.handleOffer(sd, id)
	if err != nil && t.pub.SignalingState() != webrtc.SignalingStateStable {
		// pion changes the signalling state before it finishes checking an
		// offer and cannot roll it back: a bad offer leaves the publisher
		// connection unable to take any other.
		t.p.Reconnect()
	}
	return err
}

func (t *Transport) handleOffer(sd webrtc.SessionDescription, id uint32) error {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	if sd.Type != webrtc.SDPTypeOffer {
		return fmt.Errorf("%w: expected an offer, got %s", media.ErrInvalidSDP, sd.Type)
	}
	if err := t.pub.SetRemoteDescription(sd); err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	for _, c := range t.pubCands {
		_ = t.pub.AddICECandidate(c)
	}
	t.pubAdded += len(t.pubCands)
	t.pubCands = nil
	answer, err := t.pub.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	if err := t.pub.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	t.sig.SendAnswer(answer, id)
	return nil
}

// HandleAnswer applies the client's answer to our subscriber offer.
func (t *Transport) HandleAnswer(sd webrtc.SessionDescription, id uint32) error {
	t.negMu.Lock()
	if sd.Type != webrtc.SDPTypeAnswer {
		t.negMu.Unlock()
		return fmt.Errorf("%w: expected an answer, got %s", media.ErrInvalidSDP, sd.Type)
	}
	if !t.offerInFlight || (id != 0 && id != t.offerID) {
		t.negMu.Unlock()
		return nil // a stale answer; the newest offer's answer follows
	}
	if err := checkAnswerSections(t.sub.PendingLocalDescription(), sd.SDP); err != nil {
		// Refused before pion sees it: the offer stays open for a good answer.
		t.negMu.Unlock()
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	if err := t.sub.SetRemoteDescription(sd); err != nil {
		// As for offers: a bad answer that pion applied halfway leaves the
		// subscriber connection stable with our offer still in flight, so
		// no later offer could ever be sent.
		wedged := t.sub.SignalingState() != webrtc.SignalingStateHaveLocalOffer
		t.negMu.Unlock()
		if wedged {
			t.p.Reconnect()
		}
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	for _, c := range t.subCands {
		_ = t.sub.AddICECandidate(c)
	}
	t.subAdded += len(t.subCands)
	t.subCands = nil
	t.offerInFlight = false
	again := t.renegotiate
	t.renegotiate = false
	t.negMu.Unlock()
	if again {
		t.Negotiate()
	}
	return nil
}

// checkAnswerSections refuses an answer whose media sections are not those
// of the offer: as many, in the same order, with the same mids (RFC 3264
// section 6, RFC 8829 section 5.3.1). pion accepts such an answer, for
// example one whose only section has no mid, and then can create no
// further offer, which would leave the participant unable to subscribe.
func checkAnswerSections(offer *webrtc.SessionDescription, answer string) error {
	if offer == nil {
		return fmt.Errorf("no offer in flight")
	}
	o, err := offer.Unmarshal()
	if err != nil {
		return fmt.Errorf("our offer: %w", err)
	}
	var a sdp.SessionDescription
	if err := a.UnmarshalString(answer); err != nil {
		return err
	}
	if len(a.MediaDescriptions) != len(o.MediaDescriptions) {
		return fmt.Errorf("%d media sections answer an offer of %d", len(a.MediaDescriptions), len(o.MediaDescriptions))
	}
	for i, md := range a.MediaDescriptions {
		want, _ := o.MediaDescriptions[i].Attribute(sdp.AttrKeyMID)
		if got, ok := md.Attribute(sdp.AttrKeyMID); !ok || got != want {
			return fmt.Errorf("media section %d has mid %q, the offer's has %q", i, got, want)
		}
	}
	return nil
}

// maxCandidateInit bounds a trickled candidate's JSON. A candidate line is
// well under 256 bytes (RFC 8839 section 5.1: foundation up to 32
// characters, an IPv6 address, a few extensions); browsers add sdpMid,
// sdpMLineIndex and usernameFragment around it.
const maxCandidateInit = 4096

// ParseCandidate decodes the candidate_init of a LiveKit TrickleRequest: the
// client's RTCIceCandidateInit as JSON (W3C webrtc-pc, "RTCIceCandidateInit
// Dictionary"). Errors wrap media.ErrInvalidCandidate.
func ParseCandidate(candidateInit string) (webrtc.ICECandidateInit, error) {
	var c webrtc.ICECandidateInit
	if len(candidateInit) > maxCandidateInit {
		return c, fmt.Errorf("%w: %d bytes", media.ErrInvalidCandidate, len(candidateInit))
	}
	if err := json.Unmarshal([]byte(candidateInit), &c); err != nil {
		return webrtc.ICECandidateInit{}, fmt.Errorf("%w: %v", media.ErrInvalidCandidate, err)
	}
	return c, nil
}

// HandleCandidate adds a remote ICE candidate to the named connection,
// queueing it (bounded) until that connection has a remote description.
// A candidate that cannot be added is refused with an error wrapping
// media.ErrInvalidCandidate and changes nothing.
func (t *Transport) HandleCandidate(c webrtc.ICECandidateInit, target Target) error {
	var mu *sync.Mutex
	var pc *webrtc.PeerConnection
	var queue *[]webrtc.ICECandidateInit
	var added *int
	if target == Subscriber {
		mu, pc, queue, added = &t.negMu, t.sub, &t.subCands, &t.subAdded
	} else {
		mu, pc, queue, added = &t.pubMu, t.pub, &t.pubCands, &t.pubAdded
	}
	mu.Lock()
	defer mu.Unlock()
	if pc.RemoteDescription() == nil {
		if drop, err := precheckCandidate(c.Candidate); drop || err != nil {
			return err
		}
		if len(*queue) < maxPendingCandidates {
			*queue = append(*queue, c)
		}
		return nil
	}
	if *added >= maxRemoteCandidates && c.Candidate != "" {
		return fmt.Errorf("%w: over %d candidates", media.ErrInvalidCandidate, maxRemoteCandidates)
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidCandidate, err)
	}
	if c.Candidate != "" {
		*added++
	}
	return nil
}

// precheckCandidate checks a candidate before its connection has a remote
// description what pion checks when the queue is flushed
// (PeerConnection.AddICECandidate), so that a refusal is heard of and takes
// no place in the queue. Like pion, it drops without an error a candidate
// of a type or network it does not know.
func precheckCandidate(candidate string) (drop bool, err error) {
	line := strings.TrimPrefix(candidate, "candidate:")
	if line == "" {
		return false, nil
	}
	if _, err := ice.UnmarshalCandidate(line); errors.Is(err, ice.ErrUnknownCandidateTyp) || errors.Is(err, ice.ErrDetermineNetworkType) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("%w: %v", media.ErrInvalidCandidate, err)
	}
	return false, nil
}

// Negotiate implements media.Transport: it sends a new subscriber offer,
// or marks one as needed when an offer is already waiting for its answer
// (one offer in flight at a time).
func (t *Transport) Negotiate() {
	t.negMu.Lock()
	if !t.p.Started() {
		t.negMu.Unlock()
		return
	}
	if t.offerInFlight {
		t.renegotiate = true
		t.negMu.Unlock()
		return
	}
	offer, err := t.sub.CreateOffer(nil)
	if err == nil {
		err = t.sub.SetLocalDescription(offer)
	}
	if err != nil {
		t.negMu.Unlock()
		t.log.Warn().Err(err).Msg("subscriber offer failed")
		return
	}
	t.offerID++
	t.offerInFlight = true
	id := t.offerID
	mids := map[string]string{}
	for _, tr := range t.sub.GetTransceivers() {
		// Read the sender's track once: a subscription ending on another
		// goroutine (a publisher's track closing) can clear it in between.
		if s := tr.Sender(); s != nil && tr.Mid() != "" {
			if track := s.Track(); track != nil {
				mids[tr.Mid()] = track.ID()
			}
		}
	}
	t.negMu.Unlock()
	t.sig.SendOffer(offer, id, mids)
}

// SendData implements media.Transport: one DataPacket on the subscriber
// connection's channel of the given kind, dropped when the channel is
// backed up.
func (t *Transport) SendData(kind media.DataKind, data []byte) {
	dc := t.dcLossy
	if kind == media.DataReliable {
		dc = t.dcReliable
	}
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen || dc.BufferedAmount() > maxDataBuffered {
		return
	}
	_ = dc.Send(data)
}

const maxDataBuffered = 1 << 20
