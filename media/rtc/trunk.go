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

	"github.com/pion/datachannel"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"

	"entente.dev/entente/media"
)

var (
	_ media.Transport      = (*Trunk)(nil)
	_ media.TrackSource    = (*Trunk)(nil)
	_ media.SenderReporter = (*Trunk)(nil)
)

// TrunkEvents is what a trunk tells its owner (the federation package).
// It is called from pion's and the trunk's goroutines, never with a trunk
// lock held, and must not block.
type TrunkEvents interface {
	// SendDescription carries the trunk's first local description (typ
	// "offer" from the offerer, "answer" from the answerer) to the far
	// node. The SDP is complete: it is sent once ICE gathering has ended
	// or after trunkGatherTimeout, so candidates rarely need trickling.
	SendDescription(typ, sdp string)
	// SendCandidate carries a local ICE candidate gathered after the first
	// description was sent; it may never be called.
	SendCandidate(candidate, sdpMid string, sdpMLineIndex uint16)
	// Up is called once, when ICE and DTLS are connected and the control
	// channel is open.
	Up()
	// Down is called once when the trunk failed (ICE failed or stayed
	// disconnected too long, DTLS failed, a renegotiation failed) or the
	// far node closed it; never after Close.
	Down(err error)
	// Interrupted is called when nothing has arrived from the far node for
	// trunkDisconnectedAfter (a cut link, a dead node), Resumed when its
	// packets arrive again; Down follows an interruption that lasts
	// trunkFailedAfter more. The connection, its tracks and its channels
	// stay through an interruption.
	Interrupted()
	Resumed()
	// Message is one message from the far node's control channel.
	Message(b []byte)
	// Track is called when the far node starts sending the track whose
	// sender-side id (msid track id) is trackID. s has everything but the
	// TrackID filled in; the owner sets it and calls
	// media.Participant.Receive with it. Unlike other transports' streams,
	// a trunk's may be started again (s.Start called anew, with a new
	// layer) once the participant it fed is gone: its packets go to the
	// newest layer from then on (the owner brings a far node's participant
	// back after an interruption).
	Track(trackID string, s media.IncomingStream)
}

const (
	// The trunk's two data channels, negotiated (RFC 8832 section 6: no
	// DCEP) with fixed stream ids, reliable and ordered: the owner's
	// control messages, and the trunk's own renegotiations.
	trunkControlLabel     = "entente-trunk"
	trunkControlID        = 0
	trunkNegotiationLabel = "entente-negotiation"
	trunkNegotiationID    = 1

	// MaxTrunkDescription bounds the first description from the far node.
	MaxTrunkDescription = 32 << 10
	// MaxTrunkMessage bounds one control message (the SCTP maximum message
	// size the engine announces).
	MaxTrunkMessage = maxDataMessage
	// maxTrunkBuffered is how much may wait in the control channel before
	// Send refuses more.
	maxTrunkBuffered = 1 << 20
	// maxTrunkTransceivers bounds a trunk's media sections, sent and
	// received together. pion never reuses a stopped one, so a long call
	// with many tracks coming and going uses them up.
	maxTrunkTransceivers = 256
	// trunkGatherTimeout bounds the wait for ICE gathering before the first
	// description is sent.
	trunkGatherTimeout = 2 * time.Second
	// trunkChunk is the SDP carried by one negotiation message; a larger
	// description is sent in several (More set on all but the last).
	trunkChunk = 32 << 10
	// maxTrunkRenegotiation bounds a reassembled renegotiation description.
	maxTrunkRenegotiation = 1 << 20
)

// trunkNegotiation is one message on the negotiation channel. Only the
// offerer offers: the answerer asks it for an offer, with receive slots
// for the tracks it wants to send.
type trunkNegotiation struct {
	// Type is "offer" or "answer" (with SDP), or "need" (answerer to
	// offerer: Audio and Video more receive slots, and an offer).
	Type  string `json:"type"`
	SDP   string `json:"sdp,omitempty"`
	More  bool   `json:"more,omitempty"`
	Audio int    `json:"audio,omitempty"`
	Video int    `json:"video,omitempty"`
}

// Trunk is the one peer connection between two nodes for one call: each
// sends the other the tracks of its own publishers that the other wants.
// It is the media.Transport of the node's export participant (which the
// owner subscribes to what the far node wants) and reports what the far
// node sends through TrunkEvents.Track.
//
// Only the offerer offers. After the first offer and answer, which the
// owner carries, the trunk renegotiates on its own data channel: the
// offerer when it adds or removes a track, the answerer by asking the
// offerer for receive slots (recvonly media sections) for the tracks it
// wants to send, or for an offer after removing one.
type Trunk struct {
	sendConn
	ev      TrunkEvents
	offerer bool
	api     *webrtc.API
	pc      *webrtc.PeerConnection
	secrets *dtlsSecrets
	ctrl    *webrtc.DataChannel
	neg     *webrtc.DataChannel

	mu        sync.Mutex
	closed    bool
	done      chan struct{} // closed by Close
	p         *media.Participant
	connected bool // ICE and DTLS
	stalled   bool // Interrupted reported, Resumed not yet
	ctrlOpen  bool
	up        bool // Up reported
	down      bool // Down reported
	descSent  bool // the first local description went to the owner
	tracks    map[*media.DownTrack]*localTrack
	readers   sync.WaitGroup
	// finalBytes are the byte counts when Close began, which Bytes returns from then on.
	finalBytes [2]uint64

	// negMu serialises negotiation: every change to the connection's
	// descriptions and transceivers.
	negMu     sync.Mutex
	started   bool // the first description was made (offerer) or applied (answerer)
	firstDone bool // the first offer and answer are applied
	negOpen   bool
	inFlight  bool // offerer: an offer waits for its answer
	again     bool // offerer: negotiate once the answer is in
	slots     [2]int
	cands     []webrtc.ICECandidateInit
	added     int
	incoming  strings.Builder // a renegotiation description in parts
	pending   []*localTrack   // answerer: tracks waiting for a slot
	asked     [2]int          // answerer: slots asked for, not yet offered
	seenMids  map[string]bool // answerer: media sections offered so far
	usedMids  map[string]bool // answerer: slots a track was ever sent on
	needOffer bool            // answerer: a track was removed
}

// NewTrunk makes a trunk's peer connection and its two data channels. The
// offerer then calls Start; the answerer waits for the far node's offer
// (HandleDescription).
func (e *Engine) NewTrunk(offerer bool, ev TrunkEvents, log zerolog.Logger) (*Trunk, error) {
	api, pc, secrets, err := e.newTrunkConnection()
	if err != nil {
		return nil, fmt.Errorf("trunk peer connection: %w", err)
	}
	t := &Trunk{
		sendConn: sendConn{eng: e, log: log},
		ev:       ev, offerer: offerer, api: api, pc: pc, secrets: secrets,
		done: make(chan struct{}), tracks: map[*media.DownTrack]*localTrack{},
		seenMids: map[string]bool{}, usedMids: map[string]bool{},
	}
	yes := true
	for _, c := range []struct {
		label string
		id    uint16
		dc    **webrtc.DataChannel
	}{{trunkControlLabel, trunkControlID, &t.ctrl}, {trunkNegotiationLabel, trunkNegotiationID, &t.neg}} {
		id := c.id
		if *c.dc, err = pc.CreateDataChannel(c.label, &webrtc.DataChannelInit{Negotiated: &yes, ID: &id}); err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("trunk data channel %s: %w", c.label, err)
		}
	}
	t.ctrl.OnOpen(func() { t.openChannel(t.ctrl, t.readControl) })
	t.neg.OnOpen(func() { t.openChannel(t.neg, t.readNegotiation) })
	pc.OnICECandidate(t.trickle)
	pc.OnConnectionStateChange(t.onState)
	pc.OnTrack(t.onTrack)
	return t, nil
}

func (t *Trunk) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// goRun starts a goroutine the trunk owns, unless it is closed.
func (t *Trunk) goRun(f func()) bool {
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

// Start makes the offerer's first offer and sends it to the owner
// (SendDescription) once ICE gathering is over.
func (t *Trunk) Start() error {
	if !t.offerer {
		return fmt.Errorf("%w: the answerer waits for an offer", ErrTrunkState)
	}
	if t.isClosed() {
		return ErrTrunkClosed
	}
	t.negMu.Lock()
	defer t.negMu.Unlock()
	if t.started {
		return fmt.Errorf("%w: started twice", ErrTrunkState)
	}
	offer, err := t.pc.CreateOffer(nil)
	if err == nil {
		err = t.pc.SetLocalDescription(offer)
	}
	if err != nil {
		return fmt.Errorf("trunk offer: %w", err)
	}
	t.started, t.inFlight = true, true
	t.sendFirst(webrtc.SDPTypeOffer)
	return nil
}

// sendFirst sends the first local description once gathering is over, on
// a goroutine the trunk owns.
func (t *Trunk) sendFirst(typ webrtc.SDPType) {
	gathered := webrtc.GatheringCompletePromise(t.pc)
	t.goRun(func() {
		timer := time.NewTimer(trunkGatherTimeout)
		defer timer.Stop()
		select {
		case <-gathered:
		case <-timer.C:
		case <-t.done:
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return
		}
		// Set first: a candidate gathered from now on is trickled, even if
		// the description has it too (a duplicate is harmless).
		t.descSent = true
		t.mu.Unlock()
		desc := t.pc.LocalDescription()
		if desc != nil {
			t.ev.SendDescription(typ.String(), desc.SDP)
		}
	})
}

// trickle sends the candidates gathered after the first description.
func (t *Trunk) trickle(c *webrtc.ICECandidate) {
	if c == nil {
		return
	}
	t.mu.Lock()
	send := t.descSent && !t.closed
	t.mu.Unlock()
	if !send {
		return // in the first description
	}
	init := c.ToJSON()
	var mid string
	var index uint16
	if init.SDPMid != nil {
		mid = *init.SDPMid
	}
	if init.SDPMLineIndex != nil {
		index = *init.SDPMLineIndex
	}
	t.ev.SendCandidate(init.Candidate, mid, index)
}

// HandleDescription applies the far node's first description: the offer
// on the answerer, which answers it (SendDescription), or the answer on
// the offerer. Errors wrap media.ErrInvalidSDP or ErrTrunkState; after one
// the trunk cannot be used and the owner closes it.
func (t *Trunk) HandleDescription(typ, sdpText string) error {
	err, negErr := t.handleDescription(typ, sdpText)
	if negErr != nil {
		t.fail(negErr)
	}
	return err
}

// handleDescription returns the description's error, and the error of
// the renegotiation it started, which fails the trunk.
func (t *Trunk) handleDescription(typ, sdpText string) (err, negErr error) {
	if t.isClosed() {
		return ErrTrunkClosed, nil
	}
	if len(sdpText) > MaxTrunkDescription {
		return fmt.Errorf("%w: %d bytes, at most %d", media.ErrInvalidSDP, len(sdpText), MaxTrunkDescription), nil
	}
	want := webrtc.SDPTypeAnswer
	if !t.offerer {
		want = webrtc.SDPTypeOffer
	}
	if webrtc.NewSDPType(typ) != want {
		return fmt.Errorf("%w: the %s expects an %s, got %q", ErrTrunkState, t.role(), want, typ), nil
	}
	if err := checkTrunkSDP(sdpText); err != nil {
		return err, nil
	}
	t.negMu.Lock()
	defer t.negMu.Unlock()
	if t.firstDone || (t.offerer && !t.started) || (!t.offerer && t.started) {
		return fmt.Errorf("%w: a first %s now", ErrTrunkState, typ), nil
	}
	if t.offerer {
		if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: want, SDP: sdpText}); err != nil {
			return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err), nil
		}
		t.inFlight = false
	} else {
		if err := t.answer(sdpText); err != nil {
			return err, nil
		}
		t.started = true
		t.sendFirst(webrtc.SDPTypeAnswer)
	}
	t.firstDone = true
	for _, c := range t.cands {
		_ = t.pc.AddICECandidate(c)
	}
	t.added += len(t.cands)
	t.cands = nil
	return nil, t.negotiateLocked()
}

func (t *Trunk) role() string {
	if t.offerer {
		return "offerer"
	}
	return "answerer"
}

// checkTrunkSDP parses a description before pion sees it, for a clear
// error: pion changes its signalling state before it finishes checking
// one.
func checkTrunkSDP(s string) error {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(s); err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	if len(d.MediaDescriptions) > maxTrunkTransceivers+2 {
		return fmt.Errorf("%w: %d media sections", media.ErrInvalidSDP, len(d.MediaDescriptions))
	}
	for i, md := range d.MediaDescriptions {
		if mid, ok := md.Attribute(sdp.AttrKeyMID); !ok || mid == "" {
			return fmt.Errorf("%w: media section %d has no mid", media.ErrInvalidSDP, i)
		}
	}
	return nil
}

// answer applies an offer on the answerer, gives its pending tracks the
// slots offered, and makes the answer (set as the local description).
// negMu held.
func (t *Trunk) answer(offer string) error {
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidSDP, err)
	}
	t.attachPending()
	answer, err := t.pc.CreateAnswer(nil)
	if err == nil {
		err = t.pc.SetLocalDescription(answer)
	}
	if err != nil {
		return fmt.Errorf("%w: answer: %v", media.ErrInvalidSDP, err)
	}
	return nil
}

// attachPending puts the answerer's pending tracks on the receive slots
// the offer has for them. For an offered recvonly section pion's
// SetRemoteDescription (peerconnection.go) makes a transceiver with no
// sender and the direction sendonly. PeerConnection.AddTrack would reuse
// such a transceiver (RTPTransceiver.isSendAllowed), but when none fits it
// makes a new one, which only an offer could announce, and it also reuses
// sections a track was sent on before. So the slot is picked here, and the
// track set on it as AddTrack does (API.NewRTPSender, then
// RTPTransceiver.SetSender, whose setSendingTrack keeps sendonly): the
// answer then announces the track in that section. negMu held.
func (t *Trunk) attachPending() {
	free := map[webrtc.RTPCodecType][]*webrtc.RTPTransceiver{}
	for _, tr := range t.pc.GetTransceivers() {
		mid := tr.Mid()
		if mid == "" {
			continue
		}
		if !t.seenMids[mid] {
			t.seenMids[mid] = true
			if tr.Direction() == webrtc.RTPTransceiverDirectionSendonly && tr.Sender() == nil {
				if k := kindIndex(tr.Kind()); t.asked[k] > 0 {
					t.asked[k]--
				}
			}
		}
		if tr.Direction() == webrtc.RTPTransceiverDirectionSendonly && tr.Sender() == nil && !t.usedMids[mid] {
			free[tr.Kind()] = append(free[tr.Kind()], tr)
		}
	}
	waiting := t.pending[:0]
	for _, lt := range t.pending {
		slots := free[lt.kind]
		if len(slots) == 0 {
			waiting = append(waiting, lt)
			continue
		}
		tr := slots[0]
		sender, err := t.api.NewRTPSender(lt, t.pc.SCTP().Transport())
		if err == nil {
			if err = tr.SetSender(sender, lt); err != nil {
				_ = sender.Stop()
			}
		}
		if err != nil {
			t.log.Warn().Err(err).Str("track", lt.ID()).Msg("trunk track not sent")
			continue
		}
		free[lt.kind] = slots[1:]
		t.usedMids[tr.Mid()] = true
		lt.sender = sender
		if !t.goRun(lt.readRTCP) {
			t.pending = nil // closed
			return
		}
	}
	for i := len(waiting); i < len(t.pending); i++ {
		t.pending[i] = nil
	}
	t.pending = waiting
}

func kindIndex(k webrtc.RTPCodecType) int {
	if k == webrtc.RTPCodecTypeVideo {
		return 1
	}
	return 0
}

// HandleCandidate adds one of the far node's ICE candidates, queueing it
// (bounded) until the first description is applied. Errors wrap
// media.ErrInvalidCandidate.
func (t *Trunk) HandleCandidate(candidate, sdpMid string, sdpMLineIndex uint16) error {
	if len(candidate) > maxCandidateInit || len(sdpMid) > maxCandidateInit {
		return fmt.Errorf("%w: %d bytes", media.ErrInvalidCandidate, len(candidate))
	}
	if t.isClosed() {
		return ErrTrunkClosed
	}
	c := webrtc.ICECandidateInit{Candidate: candidate, SDPMLineIndex: &sdpMLineIndex}
	if sdpMid != "" {
		c.SDPMid = &sdpMid
	}
	t.negMu.Lock()
	defer t.negMu.Unlock()
	if !t.firstDone {
		if drop, err := precheckCandidate(candidate); drop || err != nil {
			return err
		}
		if len(t.cands) < maxPendingCandidates {
			t.cands = append(t.cands, c)
		}
		return nil
	}
	if t.added >= maxRemoteCandidates && candidate != "" {
		return fmt.Errorf("%w: over %d candidates", media.ErrInvalidCandidate, maxRemoteCandidates)
	}
	if err := t.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: %v", media.ErrInvalidCandidate, err)
	}
	if candidate != "" {
		t.added++
	}
	return nil
}

// Send sends one control message to the far node.
func (t *Trunk) Send(b []byte) error {
	if len(b) > MaxTrunkMessage {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTrunkMessageTooLarge, len(b), MaxTrunkMessage)
	}
	t.mu.Lock()
	closed, open := t.closed, t.ctrlOpen
	t.mu.Unlock()
	if closed {
		return ErrTrunkClosed
	}
	if !open {
		return ErrTrunkNotOpen
	}
	if t.ctrl.BufferedAmount() > maxTrunkBuffered {
		return ErrTrunkBackedUp
	}
	return t.ctrl.Send(b)
}

// openChannel detaches an opened data channel and starts its reader.
func (t *Trunk) openChannel(dc *webrtc.DataChannel, read func(datachannel.ReadWriteCloser)) {
	rw, err := dc.Detach()
	if err != nil {
		t.log.Debug().Err(err).Str("label", dc.Label()).Msg("trunk data channel not served")
		return
	}
	if !t.goRun(func() { read(rw) }) {
		_ = rw.Close()
	}
}

// readMessages calls f with each message of a detached channel, up to
// MaxTrunkMessage bytes, until the channel closes; a larger message closes
// it. It reports why it ended.
func readMessages(rw datachannel.ReadWriteCloser, f func([]byte)) error {
	buf := make([]byte, dataReadStart)
	for {
		n, err := rw.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			if len(buf) >= MaxTrunkMessage {
				return fmt.Errorf("%w: message over %d bytes", ErrTrunkFailed, MaxTrunkMessage)
			}
			buf = make([]byte, min(2*len(buf), MaxTrunkMessage))
			continue
		}
		if err != nil {
			return err
		}
		f(buf[:n])
		if len(buf) > dataReadStart {
			buf = make([]byte, dataReadStart)
		}
	}
}

// readControl hands the owner the far node's control messages. The
// channel ending while the trunk is open means the far node went away.
func (t *Trunk) readControl(rw datachannel.ReadWriteCloser) {
	defer rw.Close()
	t.mu.Lock()
	t.ctrlOpen = true
	t.mu.Unlock()
	t.maybeUp()
	err := readMessages(rw, func(b []byte) { t.ev.Message(append([]byte(nil), b...)) })
	t.mu.Lock()
	t.ctrlOpen = false
	t.mu.Unlock()
	if !errors.Is(err, ErrTrunkFailed) {
		err = fmt.Errorf("%w: control channel ended: %v", ErrTrunkPeerClosed, err)
	}
	t.fail(err)
}

// readNegotiation serves the renegotiation channel.
func (t *Trunk) readNegotiation(rw datachannel.ReadWriteCloser) {
	defer rw.Close()
	t.negMu.Lock()
	t.negOpen = true
	negErr := t.negotiateLocked()
	t.negMu.Unlock()
	if negErr != nil {
		t.fail(negErr)
	}
	err := readMessages(rw, func(b []byte) {
		if err := t.handleNegotiation(b); err != nil {
			t.fail(fmt.Errorf("%w: renegotiation: %w", ErrTrunkFailed, err))
		}
	})
	t.negMu.Lock()
	t.negOpen = false
	t.negMu.Unlock()
	if errors.Is(err, ErrTrunkFailed) {
		t.fail(err)
	}
}

// handleNegotiation applies one message of the far node's negotiation.
func (t *Trunk) handleNegotiation(b []byte) error {
	var m trunkNegotiation
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	t.negMu.Lock()
	defer t.negMu.Unlock()
	switch {
	case m.Type == "need" && t.offerer:
		if m.Audio < 0 || m.Video < 0 || m.Audio > maxTrunkTransceivers || m.Video > maxTrunkTransceivers {
			return fmt.Errorf("asked for %d audio and %d video slots", m.Audio, m.Video)
		}
		// More than the trunk can hold is refused when the offer is made.
		t.slots[0] = min(t.slots[0]+m.Audio, maxTrunkTransceivers)
		t.slots[1] = min(t.slots[1]+m.Video, maxTrunkTransceivers)
		t.again = true
		return t.negotiateLocked()
	case (m.Type == "offer" && !t.offerer) || (m.Type == "answer" && t.offerer):
		if t.incoming.Len()+len(m.SDP) > maxTrunkRenegotiation {
			return fmt.Errorf("%s over %d bytes", m.Type, maxTrunkRenegotiation)
		}
		t.incoming.WriteString(m.SDP)
		if m.More {
			return nil
		}
		s := t.incoming.String()
		t.incoming.Reset()
		if !t.firstDone {
			return fmt.Errorf("%s before the first one", m.Type)
		}
		if m.Type == "answer" {
			return t.applyAnswer(s)
		}
		if err := checkTrunkSDP(s); err != nil {
			return err
		}
		if err := t.answer(s); err != nil {
			return err
		}
		if err := t.sendSDP("answer", t.pc.LocalDescription().SDP); err != nil {
			return err
		}
		t.askLocked()
		return nil
	}
	return fmt.Errorf("unexpected %q message to the %s", m.Type, t.role())
}

// applyAnswer applies the answer to the offer in flight and sends the
// next offer if one is due. negMu held.
func (t *Trunk) applyAnswer(s string) error {
	if !t.inFlight {
		return errors.New("an answer with no offer in flight")
	}
	if err := checkTrunkSDP(s); err != nil {
		return err
	}
	if err := t.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s}); err != nil {
		return err
	}
	t.inFlight = false
	return t.negotiateLocked()
}

// sendSDP sends a description on the negotiation channel, in parts of
// trunkChunk bytes.
func (t *Trunk) sendSDP(typ, s string) error {
	for {
		part := s[:min(len(s), trunkChunk)]
		s = s[len(part):]
		if err := t.sendNegotiation(trunkNegotiation{Type: typ, SDP: part, More: s != ""}); err != nil {
			return err
		}
		if s == "" {
			return nil
		}
	}
}

func (t *Trunk) sendNegotiation(m trunkNegotiation) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return t.neg.Send(b)
}

// Negotiate implements media.Transport: the offerer offers the tracks
// added and removed (coalesced while an offer is in flight); the answerer
// asks the offerer for slots for its new tracks, or for an offer after
// removing one.
func (t *Trunk) Negotiate() {
	t.negMu.Lock()
	if t.offerer {
		t.again = true
	}
	err := t.negotiateLocked()
	t.negMu.Unlock()
	if err != nil {
		t.fail(err)
	}
}

// negotiateLocked does what Negotiate asks once the negotiation channel is
// open and the first exchange is over. An offer that cannot be made or
// sent leaves the trunk unable to change: the error fails it. negMu held.
func (t *Trunk) negotiateLocked() error {
	if !t.firstDone || !t.negOpen {
		return nil
	}
	if !t.offerer {
		t.askLocked()
		return nil
	}
	if t.inFlight || !t.again {
		return nil
	}
	t.again = false
	for k, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		for ; t.slots[k] > 0; t.slots[k]-- {
			if len(t.pc.GetTransceivers()) >= maxTrunkTransceivers {
				t.log.Warn().Str("kind", kind.String()).Int("refused", t.slots[k]).Msg("trunk full: receive slots refused")
				t.slots[k] = 0
				break
			}
			if _, err := t.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				t.log.Warn().Err(err).Msg("trunk receive slot")
			}
		}
	}
	offer, err := t.pc.CreateOffer(nil)
	if err == nil {
		err = t.pc.SetLocalDescription(offer)
	}
	if err == nil {
		err = t.sendSDP("offer", offer.SDP)
	}
	if err != nil {
		return fmt.Errorf("%w: offer: %w", ErrTrunkFailed, err)
	}
	t.inFlight = true
	return nil
}

// askLocked asks the offerer, on the answerer, for the receive slots its
// pending tracks still lack, or for an offer that drops a removed track.
// negMu held.
func (t *Trunk) askLocked() {
	if !t.firstDone || !t.negOpen {
		return
	}
	var want [2]int
	for _, lt := range t.pending {
		want[kindIndex(lt.kind)]++
	}
	need := trunkNegotiation{Type: "need", Audio: max(0, want[0]-t.asked[0]), Video: max(0, want[1]-t.asked[1])}
	if need.Audio == 0 && need.Video == 0 && !t.needOffer {
		return
	}
	if err := t.sendNegotiation(need); err != nil {
		t.log.Debug().Err(err).Msg("trunk slots not asked for")
		return
	}
	t.asked[0] += need.Audio
	t.asked[1] += need.Video
	t.needOffer = false
}

// onState follows the connection: the direct path once connected, Down
// when it fails or the far end closes it.
func (t *Trunk) onState(s webrtc.PeerConnectionState) {
	switch s {
	case webrtc.PeerConnectionStateConnected:
		t.mu.Lock()
		first := !t.connected
		t.connected = true
		t.mu.Unlock()
		if !first {
			t.mu.Lock()
			resumed := t.stalled && !t.closed && !t.down
			t.stalled = false
			t.mu.Unlock()
			if resumed {
				t.log.Info().Msg("trunk resumed")
				t.ev.Resumed()
			}
			return
		}
		// Before the first packet is forwarded (Up lets them through), so
		// that every stream is sent one way only (sink.go).
		if path, err := newDirectPath(t.eng.batch, t.pc, t.secrets); err == nil {
			t.direct.Store(path)
			t.log.Debug().Str("srtp", path.profile.String()).Msg("trunk media sent directly")
		} else {
			t.log.Debug().Err(err).Msg("trunk media goes through pion's write path")
		}
		t.maybeUp()
	case webrtc.PeerConnectionStateDisconnected:
		t.mu.Lock()
		interrupted := t.connected && !t.stalled && !t.closed && !t.down
		t.stalled = t.stalled || interrupted
		t.mu.Unlock()
		if interrupted {
			t.log.Info().Msg("trunk interrupted: nothing from the far node")
			t.ev.Interrupted()
		}
	case webrtc.PeerConnectionStateFailed:
		t.fail(fmt.Errorf("%w: ice or dtls", ErrTrunkFailed))
	case webrtc.PeerConnectionStateClosed:
		t.fail(ErrTrunkPeerClosed)
	}
}

// maybeUp reports Up, and connects the export participant, once the
// connection is up and the control channel open.
func (t *Trunk) maybeUp() {
	t.mu.Lock()
	if t.up || t.closed || t.down || !t.connected || !t.ctrlOpen {
		t.mu.Unlock()
		return
	}
	t.up = true
	p := t.p
	t.mu.Unlock()
	if p != nil {
		p.Connected()
	}
	t.ev.Up()
}

// fail reports Down once, unless the trunk was closed.
func (t *Trunk) fail(err error) {
	t.mu.Lock()
	if t.closed || t.down {
		t.mu.Unlock()
		return
	}
	t.down = true
	p := t.p
	t.mu.Unlock()
	t.log.Info().Err(err).Msg("trunk down")
	if p != nil {
		p.Fail(media.ReasonConnectionTimeout)
	}
	t.ev.Down(err)
}

// onTrack tells the owner of a track the far node started sending.
func (t *Trunk) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	codec := remote.Codec()
	var levelID uint8
	for _, x := range receiver.GetParameters().HeaderExtensions {
		if x.URI == extAudioLevel {
			levelID = uint8(x.ID)
		}
	}
	var target atomic.Pointer[media.Layer]
	t.ev.Track(remote.ID(), media.IncomingStream{
		TrackID: remote.ID(),
		Codec: media.Codec{
			MimeType: codec.MimeType, ClockRate: codec.ClockRate, Channels: codec.Channels, SDPFmtpLine: codec.SDPFmtpLine,
		},
		SSRC: uint32(remote.SSRC()), AudioLevelExt: levelID,
		Mid:    receiverMid(t.pc, receiver),
		Source: t,
		Start: func(l *media.Layer) {
			if target.Swap(l) != nil {
				return // the reader runs: it feeds l from now on
			}
			if !t.goRun(func() { readLayers(&t.log, remote, &target) }) {
				l.End()
			}
		},
	})
}

// readLayers is readLayer for a trunk's stream, whose layer may be
// replaced while it runs (TrunkEvents.Track): each packet goes to the
// newest, which is ended when the stream ends.
func readLayers(log *zerolog.Logger, remote *webrtc.TrackRemote, target *atomic.Pointer[media.Layer]) {
	buf := make([]byte, receiveMTU)
	for {
		n, _, err := remote.Read(buf)
		if err != nil {
			l := target.Load()
			if !errors.Is(err, io.EOF) {
				log.Debug().Err(err).Uint32("ssrc", l.SSRC()).Msg("trunk track read ended")
			}
			l.End()
			return
		}
		target.Load().WriteRTP(buf[:n], time.Now().UnixNano())
	}
}

// RequestKeyframe implements media.TrackSource: a PLI to the far node,
// which asks its publisher (or answers from its own cache).
func (t *Trunk) RequestKeyframe(ssrc uint32) {
	_ = t.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
}

// Attach implements media.Transport for the export participant. The
// participant is connected when the trunk is up.
func (t *Trunk) Attach(p *media.Participant) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrTrunkClosed
	}
	t.p = p
	up := t.up
	t.mu.Unlock()
	if up {
		p.Connected()
	}
	return nil
}

// AddDownTrack implements media.Transport: the offerer adds a sendonly
// media section for the track (a new one: PeerConnection.AddTrack would
// take one of the answerer's receive slots); the answerer keeps it until
// the offerer offers a slot for it (Negotiate asks).
func (t *Trunk) AddDownTrack(d *media.DownTrack) error {
	lt := newLocalTrack(&t.sendConn, d)
	t.negMu.Lock()
	defer t.negMu.Unlock()
	if t.isClosed() {
		return media.ErrParticipantClosed
	}
	if len(t.pc.GetTransceivers())+len(t.pending) >= maxTrunkTransceivers {
		return ErrTrunkFull
	}
	if t.offerer {
		tr, err := t.pc.AddTransceiverFromTrack(lt, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return err
		}
		lt.sender = tr.Sender()
		if !t.goRun(lt.readRTCP) {
			return media.ErrParticipantClosed
		}
	} else {
		t.pending = append(t.pending, lt)
	}
	t.mu.Lock()
	t.tracks[d] = lt
	t.mu.Unlock()
	return nil
}

// RemoveDownTrack implements media.Transport.
func (t *Trunk) RemoveDownTrack(d *media.DownTrack) {
	t.mu.Lock()
	lt := t.tracks[d]
	delete(t.tracks, d)
	t.mu.Unlock()
	if lt == nil {
		return
	}
	t.negMu.Lock()
	defer t.negMu.Unlock()
	for i, p := range t.pending {
		if p == lt {
			t.pending = append(t.pending[:i], t.pending[i+1:]...)
			return
		}
	}
	if lt.sender != nil {
		_ = t.pc.RemoveTrack(lt.sender)
		t.needOffer = !t.offerer
	}
}

// SendData implements media.Transport: room data is not carried on a
// trunk (the owner relays what it must on the control channel).
func (t *Trunk) SendData(media.DataKind, []byte) {}

// SendSenderReports implements media.SenderReporter.
func (t *Trunk) SendSenderReports(now time.Time) {
	t.mu.Lock()
	tracks := make([]*localTrack, 0, len(t.tracks))
	for _, lt := range t.tracks {
		tracks = append(tracks, lt)
	}
	t.mu.Unlock()
	writeSenderReports(t.pc, tracks, now)
}

// Bytes returns the bytes the trunk sent to the far node and received
// from it, counted as UDP payloads (SRTP, SRTCP, DTLS and SCTP packets;
// not the ICE checks, a few bytes a second): the counters of pion's ICE
// connection, which see everything its write path sends (the answerer's
// media, RTCP and the data channels) and everything received, plus the
// media the offerer sends on the direct path (direct.go), which pion never
// sees. A packet queued in a send batch is counted when queued. After
// Close it returns the counts Close found.
func (t *Trunk) Bytes() (sent, received uint64) {
	t.mu.Lock()
	closed, final := t.closed, t.finalBytes
	t.mu.Unlock()
	if closed {
		return final[0], final[1]
	}
	return t.countBytes()
}

// countBytes reads the ICE transport's counters (atomics of its
// connection; not PeerConnection.GetStats, which reads fields pion's own
// close writes unlocked, and walks every stream) and the direct path's.
func (t *Trunk) countBytes() (sent, received uint64) {
	if dtls := t.pc.SCTP().Transport(); dtls != nil {
		if ice := dtls.ICETransport(); ice != nil {
			st := ice.Stats()
			sent, received = st.BytesSent, st.BytesReceived
		}
	}
	if d := t.direct.Load(); d != nil {
		sent += d.sent.Load()
	}
	return sent, received
}

// Close implements media.Transport: the connection closes, and Close
// returns once every goroutine the trunk started has stopped. Down is not
// reported.
func (t *Trunk) Close() {
	t.mu.Lock()
	first := !t.closed
	t.mu.Unlock()
	var final [2]uint64
	if first {
		final[0], final[1] = t.countBytes() // pion's counters go with its ICE connection
	}
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		t.finalBytes = final
		close(t.done)
	}
	t.mu.Unlock()
	_ = t.pc.Close()
	t.readers.Wait()
}
