package media

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/internal/names"
)

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

// Participant is one member of a room with two peer connections, as LiveKit
// clients expect: the publisher (the client offers, we answer) and the
// subscriber (we offer, the client answers).
type Participant struct {
	room          *Room
	sid           string
	identity      string
	kind          livekit.ParticipantInfo_Kind
	perms         Permissions
	autoSubscribe bool
	sig           Signaller
	log           zerolog.Logger
	joinedAt      time.Time

	pub       *webrtc.PeerConnection
	sub       *webrtc.PeerConnection
	connected atomic.Bool // subscriber transport is up
	// secrets learns the subscriber connection's SRTP keys; direct, set
	// once it is connected, sends its RTP without pion (direct.go).
	secrets *dtlsSecrets
	direct  atomic.Pointer[directPath]

	mu       sync.Mutex
	name     string
	metadata string
	attrs    map[string]string
	// asserted are the attributes the token carried: its issuer vouches
	// for them (the Matrix bridge's matrix_user_id), so the participant
	// may neither change nor delete them.
	asserted  map[string]string
	updates   tokenBucket // paces UpdateMetadata
	version   uint32
	state     livekit.ParticipantInfo_State
	reason    livekit.DisconnectReason
	pending   map[string]*pendingTrack // by client track id (cid)
	orphans   []orphanTrack            // media that arrived before its add_track
	published map[string]*UpTrack      // by track sid
	downs     map[string]*DownTrack    // our subscriptions, by track sid
	closed    bool
	// started is set by Start, once the join answer has gone out. Until
	// then nothing is sent to the participant: clients drop offers and
	// updates that arrive before their JoinResponse (LIVEKIT.md section 2).
	started bool

	pubMu    sync.Mutex // serialises publisher negotiation
	pubCands []webrtc.ICECandidateInit
	pubAdded int // remote candidates given to pion

	negMu         sync.Mutex // serialises subscriber negotiation
	offerID       uint32
	offerInFlight bool
	renegotiate   bool
	subCands      []webrtc.ICECandidateInit
	subAdded      int

	dcMu       sync.Mutex
	dcReliable *webrtc.DataChannel
	dcLossy    *webrtc.DataChannel
}

type pendingTrack struct {
	cid  string
	info *livekit.TrackInfo
	up   *UpTrack
}

type orphanTrack struct {
	remote   *webrtc.TrackRemote
	receiver *webrtc.RTPReceiver
}

func newParticipant(r *Room, jp JoinParams) (*Participant, error) {
	p := &Participant{
		room: r, sid: newID("PA_"), identity: jp.Identity, kind: jp.Kind, perms: jp.Permissions,
		autoSubscribe: jp.AutoSubscribe, sig: jp.Signaller, joinedAt: time.Now(),
		name: jp.Name, metadata: jp.Metadata, attrs: copyAttrs(jp.Attributes), asserted: copyAttrs(jp.Attributes),
		updates: newTokenBucket(metadataBurst, metadataEvery),
		state:   livekit.ParticipantInfo_JOINING,
		pending: map[string]*pendingTrack{}, published: map[string]*UpTrack{}, downs: map[string]*DownTrack{},
	}
	p.log = r.log.With().Str("participant", p.identity).Str("participant_sid", p.sid).Logger()
	var err error
	if p.pub, err = r.sfu.eng.pub.NewPeerConnection(webrtc.Configuration{}); err != nil {
		return nil, fmt.Errorf("publisher peer connection: %w", err)
	}
	if p.sub, p.secrets, err = r.sfu.eng.newSubscriber(); err != nil {
		_ = p.pub.Close()
		return nil, fmt.Errorf("subscriber peer connection: %w", err)
	}
	p.pub.OnICECandidate(func(c *webrtc.ICECandidate) { p.trickle(c, livekit.SignalTarget_PUBLISHER) })
	p.sub.OnICECandidate(func(c *webrtc.ICECandidate) { p.trickle(c, livekit.SignalTarget_SUBSCRIBER) })
	p.pub.OnTrack(p.onTrack)
	p.pub.OnDataChannel(p.serveData)
	p.sub.OnConnectionStateChange(p.onSubscriberState)
	p.pub.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed {
			p.log.Info().Msg("publisher connection failed")
			r.removeParticipant(p, livekit.DisconnectReason_CONNECTION_TIMEOUT, true)
		}
	})
	// Data channels on the subscriber connection, which is primary: clients
	// adopt them by label (livekit/livekit transportmanager.go).
	ordered := false
	zero := uint16(0)
	if p.dcReliable, err = p.sub.CreateDataChannel("_reliable", &webrtc.DataChannelInit{}); err == nil {
		p.dcLossy, err = p.sub.CreateDataChannel("_lossy", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	}
	if err != nil {
		_ = p.pub.Close()
		_ = p.sub.Close()
		return nil, fmt.Errorf("data channels: %w", err)
	}
	p.serveData(p.dcReliable)
	p.serveData(p.dcLossy)
	return p, nil
}

func copyAttrs(a map[string]string) map[string]string {
	out := make(map[string]string, len(a))
	for k, v := range a {
		out[k] = v
	}
	return out
}

// SID is the participant's LiveKit sid.
func (p *Participant) SID() string { return p.sid }

// Identity is the participant's identity from its token.
func (p *Participant) Identity() string { return p.identity }

// Room is the room the participant is in.
func (p *Participant) Room() *Room { return p.room }

func (p *Participant) trickle(c *webrtc.ICECandidate, target livekit.SignalTarget) {
	if c == nil {
		return
	}
	init := c.ToJSON()
	p.sig.SendCandidate(&init, target)
}

func (p *Participant) onSubscriberState(s webrtc.PeerConnectionState) {
	switch s {
	case webrtc.PeerConnectionStateConnected:
		if p.connected.Load() {
			return
		}
		// Before the first packet is forwarded, so that every packet of a
		// stream goes the same way and one SRTP context sees them all.
		if path, err := newDirectPath(p.room.sfu.eng.batch, p.sub, p.secrets); err == nil {
			p.direct.Store(path)
			p.log.Debug().Str("srtp", path.profile.String()).Msg("subscriber media sent directly")
		} else {
			p.log.Debug().Err(err).Msg("subscriber media goes through pion's write path")
		}
		if p.connected.Swap(true) {
			return
		}
		p.mu.Lock()
		if p.state == livekit.ParticipantInfo_JOINED || p.state == livekit.ParticipantInfo_JOINING {
			p.state = livekit.ParticipantInfo_ACTIVE
			p.version++
		}
		downs := p.downTracksLocked()
		p.mu.Unlock()
		p.room.broadcast(p, true)
		for _, d := range downs {
			d.requestKeyframe()
		}
	case webrtc.PeerConnectionStateFailed:
		p.log.Info().Msg("subscriber connection failed")
		p.room.removeParticipant(p, livekit.DisconnectReason_CONNECTION_TIMEOUT, true)
	}
}

// Start announces the participant, subscribes it to what the room already
// publishes and sends the first subscriber offer. Call it after the join
// response has been sent.
func (p *Participant) Start() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.state = livekit.ParticipantInfo_JOINED
	p.version++
	p.started = true
	p.mu.Unlock()
	// What changed in the room since the join answer's snapshot was taken
	// (tracks published meanwhile): send it before the first offer.
	var others []*livekit.ParticipantInfo
	for _, q := range p.room.members() {
		if q != p && !q.perms.Hidden {
			others = append(others, q.info())
		}
	}
	if len(others) > 0 {
		p.sig.SendParticipants(others)
	}
	p.room.broadcast(p, false)
	if p.autoSubscribe && p.perms.CanSubscribe {
		for _, up := range p.room.publishedTracks(p) {
			p.subscribe(up, false)
		}
	}
	p.negotiate()
}

// info returns a snapshot of the participant for signalling.
func (p *Participant) info() *livekit.ParticipantInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.infoLocked()
}

func (p *Participant) infoLocked() *livekit.ParticipantInfo {
	tracks := make([]*livekit.TrackInfo, 0, len(p.published))
	for _, pt := range p.pending {
		if pt.up != nil {
			tracks = append(tracks, proto.Clone(pt.info).(*livekit.TrackInfo))
		}
	}
	return &livekit.ParticipantInfo{
		Sid: p.sid, Identity: p.identity, Name: p.name, Metadata: p.metadata, Attributes: copyAttrs(p.attrs),
		State: p.state, Tracks: tracks, Version: p.version, Permission: p.perms.proto(), Kind: p.kind,
		JoinedAt: p.joinedAt.Unix(), JoinedAtMs: p.joinedAt.UnixMilli(), IsPublisher: len(p.published) > 0,
		DisconnectReason: p.reason,
	}
}

func (p *Participant) downTracksLocked() []*DownTrack {
	out := make([]*DownTrack, 0, len(p.downs))
	for _, d := range p.downs {
		out = append(out, d)
	}
	return out
}

// HandleOffer applies the client's publisher offer and sends the answer.
func (p *Participant) HandleOffer(sd webrtc.SessionDescription, id uint32) error {
	err := p.handleOffer(sd, id)
	if err != nil && p.pub.SignalingState() != webrtc.SignalingStateStable {
		// pion changes the signalling state before it finishes checking an
		// offer and cannot roll it back: a bad offer leaves the publisher
		// connection unable to take any other.
		p.fullReconnect()
	}
	return err
}

func (p *Participant) handleOffer(sd webrtc.SessionDescription, id uint32) error {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	if sd.Type != webrtc.SDPTypeOffer {
		return fmt.Errorf("%w: expected an offer, got %s", ErrInvalidSDP, sd.Type)
	}
	if err := p.pub.SetRemoteDescription(sd); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSDP, err)
	}
	for _, c := range p.pubCands {
		_ = p.pub.AddICECandidate(c)
	}
	p.pubAdded += len(p.pubCands)
	p.pubCands = nil
	answer, err := p.pub.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSDP, err)
	}
	if err := p.pub.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSDP, err)
	}
	p.sig.SendAnswer(answer, id)
	return nil
}

// HandleAnswer applies the client's answer to our subscriber offer.
func (p *Participant) HandleAnswer(sd webrtc.SessionDescription, id uint32) error {
	p.negMu.Lock()
	if sd.Type != webrtc.SDPTypeAnswer {
		p.negMu.Unlock()
		return fmt.Errorf("%w: expected an answer, got %s", ErrInvalidSDP, sd.Type)
	}
	if !p.offerInFlight || (id != 0 && id != p.offerID) {
		p.negMu.Unlock()
		return nil // a stale answer; the newest offer's answer follows
	}
	if err := checkAnswerSections(p.sub.PendingLocalDescription(), sd.SDP); err != nil {
		// Refused before pion sees it: the offer stays open for a good answer.
		p.negMu.Unlock()
		return fmt.Errorf("%w: %v", ErrInvalidSDP, err)
	}
	if err := p.sub.SetRemoteDescription(sd); err != nil {
		// As for offers: a bad answer that pion applied halfway leaves the
		// subscriber connection stable with our offer still in flight, so
		// no later offer could ever be sent.
		wedged := p.sub.SignalingState() != webrtc.SignalingStateHaveLocalOffer
		p.negMu.Unlock()
		if wedged {
			p.fullReconnect()
		}
		return fmt.Errorf("%w: %v", ErrInvalidSDP, err)
	}
	for _, c := range p.subCands {
		_ = p.sub.AddICECandidate(c)
	}
	p.subAdded += len(p.subCands)
	p.subCands = nil
	p.offerInFlight = false
	again := p.renegotiate
	p.renegotiate = false
	p.negMu.Unlock()
	if again {
		p.negotiate()
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
// Dictionary"). Errors wrap ErrInvalidCandidate.
func ParseCandidate(candidateInit string) (webrtc.ICECandidateInit, error) {
	var c webrtc.ICECandidateInit
	if len(candidateInit) > maxCandidateInit {
		return c, fmt.Errorf("%w: %d bytes", ErrInvalidCandidate, len(candidateInit))
	}
	if err := json.Unmarshal([]byte(candidateInit), &c); err != nil {
		return webrtc.ICECandidateInit{}, fmt.Errorf("%w: %v", ErrInvalidCandidate, err)
	}
	return c, nil
}

// HandleCandidate adds a remote ICE candidate to the named connection,
// queueing it (bounded) until that connection has a remote description.
// A candidate that cannot be added is refused with an error wrapping
// ErrInvalidCandidate and changes nothing.
func (p *Participant) HandleCandidate(c webrtc.ICECandidateInit, target livekit.SignalTarget) error {
	var mu *sync.Mutex
	var pc *webrtc.PeerConnection
	var queue *[]webrtc.ICECandidateInit
	var added *int
	if target == livekit.SignalTarget_SUBSCRIBER {
		mu, pc, queue, added = &p.negMu, p.sub, &p.subCands, &p.subAdded
	} else {
		mu, pc, queue, added = &p.pubMu, p.pub, &p.pubCands, &p.pubAdded
	}
	mu.Lock()
	defer mu.Unlock()
	if pc.RemoteDescription() == nil {
		// Check now what pion checks when the queue is flushed
		// (PeerConnection.AddICECandidate), so that a refusal is heard of
		// and takes no place in the queue; like pion, drop without an error
		// a candidate of a type or network it does not know.
		if line := strings.TrimPrefix(c.Candidate, "candidate:"); line != "" {
			if _, err := ice.UnmarshalCandidate(line); errors.Is(err, ice.ErrUnknownCandidateTyp) || errors.Is(err, ice.ErrDetermineNetworkType) {
				return nil
			} else if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidCandidate, err)
			}
		}
		if len(*queue) < maxPendingCandidates {
			*queue = append(*queue, c)
		}
		return nil
	}
	if *added >= maxRemoteCandidates && c.Candidate != "" {
		return fmt.Errorf("%w: over %d candidates", ErrInvalidCandidate, maxRemoteCandidates)
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidCandidate, err)
	}
	if c.Candidate != "" {
		*added++
	}
	return nil
}

// negotiate sends a new subscriber offer, or marks one as needed when an
// offer is already waiting for its answer (one offer in flight at a time).
func (p *Participant) negotiate() {
	p.negMu.Lock()
	if !p.isStarted() {
		p.negMu.Unlock()
		return
	}
	if p.offerInFlight {
		p.renegotiate = true
		p.negMu.Unlock()
		return
	}
	offer, err := p.sub.CreateOffer(nil)
	if err == nil {
		err = p.sub.SetLocalDescription(offer)
	}
	if err != nil {
		p.negMu.Unlock()
		p.log.Warn().Err(err).Msg("subscriber offer failed")
		return
	}
	p.offerID++
	p.offerInFlight = true
	id := p.offerID
	mids := map[string]string{}
	for _, t := range p.sub.GetTransceivers() {
		// Read the sender's track once: a subscription ending on another
		// goroutine (a publisher's track closing) can clear it in between.
		if s := t.Sender(); s != nil && t.Mid() != "" {
			if tr := s.Track(); tr != nil {
				mids[t.Mid()] = tr.ID()
			}
		}
	}
	p.negMu.Unlock()
	p.sig.SendOffer(offer, id, mids)
}

// fullReconnect asks the client to join again with a new session and
// removes this one, as LiveKit does when a negotiation fails
// (livekit/livekit pkg/rtc/participant.go IssueFullReconnect).
func (p *Participant) fullReconnect() {
	if p.isClosed() {
		return
	}
	p.log.Info().Msg("negotiation failed, asking the client for a full reconnect")
	p.sig.SendLeave(livekit.DisconnectReason_STATE_MISMATCH, livekit.LeaveRequest_RECONNECT)
	p.room.removeParticipant(p, livekit.DisconnectReason_STATE_MISMATCH, false)
}

// isStarted reports whether the participant may be sent signalling.
func (p *Participant) isStarted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started && !p.closed
}

func (p *Participant) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// AddTrack registers a track the client is about to publish and confirms it.
func (p *Participant) AddTrack(req *livekit.AddTrackRequest) error {
	if !p.perms.CanPublish || !p.perms.allowsSource(req.Source) {
		return fmt.Errorf("%w: publish %s", ErrPermissionDenied, req.Source)
	}
	if req.Cid == "" {
		return fmt.Errorf("add track: empty cid")
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrParticipantClosed
	}
	if pt, ok := p.pending[req.Cid]; ok {
		info := proto.Clone(pt.info).(*livekit.TrackInfo)
		p.mu.Unlock()
		p.sig.SendTrackPublished(req.Cid, info)
		return nil
	}
	if len(p.pending) >= maxTracksPerParticipant {
		p.mu.Unlock()
		return fmt.Errorf("add track: too many tracks")
	}
	info := trackInfoFromRequest(req)
	pt := &pendingTrack{cid: req.Cid, info: info}
	for _, sc := range req.SimulcastCodecs {
		if sc.Cid != "" && sc.Cid != req.Cid {
			p.pending[sc.Cid] = pt
		}
	}
	p.pending[req.Cid] = pt
	reply := proto.Clone(info).(*livekit.TrackInfo)
	orphans := p.orphans
	p.orphans = nil
	p.mu.Unlock()
	p.sig.SendTrackPublished(req.Cid, reply)
	for _, o := range orphans {
		p.onTrack(o.remote, o.receiver)
	}
	return nil
}

const maxTracksPerParticipant = 32

func trackInfoFromRequest(req *livekit.AddTrackRequest) *livekit.TrackInfo {
	kind := "A"
	if req.Type == livekit.TrackType_VIDEO {
		kind = "V"
	}
	info := &livekit.TrackInfo{
		Sid: newID("TR_" + kind), Type: req.Type, Name: req.Name, Muted: req.Muted,
		Width: req.Width, Height: req.Height, Simulcast: len(req.Layers) > 1, DisableDtx: req.DisableDtx,
		Source: req.Source, Layers: req.Layers, Stereo: req.Stereo, DisableRed: req.DisableRed,
		Encryption: req.Encryption, Stream: req.Stream, AudioFeatures: req.AudioFeatures,
	}
	for _, sc := range req.SimulcastCodecs {
		if sc.Codec == "" {
			continue
		}
		info.Codecs = append(info.Codecs, &livekit.SimulcastCodecInfo{
			MimeType: "video/" + sc.Codec, Cid: sc.Cid, Layers: req.Layers,
			VideoLayerMode: livekit.VideoLayer_ONE_SPATIAL_LAYER_PER_STREAM,
		})
	}
	return info
}

// onTrack maps incoming media to the add_track request it belongs to: by
// msid track id (the client's cid), then by simulcast codec cid, then the
// first pending request of the same kind (livekit/livekit participant.go
// getPendingTrack).
func (p *Participant) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	kind := livekit.TrackType_AUDIO
	if remote.Kind() == webrtc.RTPCodecTypeVideo {
		kind = livekit.TrackType_VIDEO
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	pt := p.pending[remote.ID()]
	if pt == nil {
		for _, x := range p.pending {
			if x.up == nil && x.info.Type == kind {
				pt = x
				break
			}
		}
	}
	if pt == nil {
		if len(p.orphans) < maxTracksPerParticipant {
			p.orphans = append(p.orphans, orphanTrack{remote, receiver})
		}
		p.mu.Unlock()
		return
	}
	fresh := pt.up == nil
	if fresh {
		codec := remote.Codec()
		var levelID uint8
		for _, x := range receiver.GetParameters().HeaderExtensions {
			if x.URI == extAudioLevel {
				levelID = uint8(x.ID)
			}
		}
		pt.up = newUpTrack(pt.info.Sid, pt.cid, p, codec, remote.Kind(), levelID)
		pt.up.batch = p.room.sfu.eng.batch
		pt.info.MimeType = codec.MimeType
		pt.info.Mid = receiverMid(p.pub, receiver)
		p.published[pt.info.Sid] = pt.up
		p.version++
	}
	up := pt.up
	p.mu.Unlock()
	layer := int8(0)
	if remote.RID() != "" {
		layer = layerFromRID(remote.RID())
	}
	up.addLayer(layer, remote)
	if fresh {
		p.log.Debug().Str("track", up.sid).Str("mime", up.mime).Msg("track published")
		p.room.trackPublished(p, up)
	}
}

func receiverMid(pc *webrtc.PeerConnection, r *webrtc.RTPReceiver) string {
	for _, t := range pc.GetTransceivers() {
		if t.Receiver() == r {
			return t.Mid()
		}
	}
	return ""
}

// trackEnded is called once when a published track's media ends.
func (p *Participant) trackEnded(up *UpTrack) {
	p.mu.Lock()
	if p.published[up.sid] != up {
		p.mu.Unlock()
		return
	}
	delete(p.published, up.sid)
	for cid, pt := range p.pending {
		if pt.up == up {
			delete(p.pending, cid)
		}
	}
	p.version++
	closed := p.closed
	p.mu.Unlock()
	p.room.trackUnpublished(p, up, !closed)
}

// SetMuted mutes or unmutes one of the participant's tracks.
func (p *Participant) SetMuted(sid string, muted bool) error {
	p.mu.Lock()
	var info *livekit.TrackInfo
	for _, pt := range p.pending {
		if pt.info.Sid == sid {
			info = pt.info
			break
		}
	}
	if info == nil {
		p.mu.Unlock()
		return ErrTrackNotFound
	}
	changed := info.Muted != muted
	info.Muted = muted
	published := p.published[sid] != nil
	if changed {
		p.version++
	}
	p.mu.Unlock()
	if changed && published {
		p.room.broadcast(p, true)
	}
	return nil
}

// subscribe starts sending up to this participant.
func (p *Participant) subscribe(up *UpTrack, negotiate bool) {
	p.mu.Lock()
	skip := p.closed || !p.started || p.downs[up.sid] != nil
	p.mu.Unlock()
	if skip {
		return
	}
	d := newDownTrack(up, p)
	sender, err := p.sub.AddTrack(d)
	if err != nil {
		p.log.Warn().Err(err).Str("track", up.sid).Msg("subscribe failed")
		return
	}
	d.sender = sender
	go d.readRTCP()
	p.mu.Lock()
	if p.closed || p.downs[up.sid] != nil {
		p.mu.Unlock()
		_ = p.sub.RemoveTrack(sender)
		return
	}
	p.downs[up.sid] = d
	p.mu.Unlock()
	up.addDown(d)
	if negotiate {
		p.negotiate()
	}
}

// unsubscribe stops sending the track sid to this participant.
func (p *Participant) unsubscribe(sid string, negotiate bool) {
	p.mu.Lock()
	d := p.downs[sid]
	delete(p.downs, sid)
	closed := p.closed
	p.mu.Unlock()
	if d == nil {
		return
	}
	d.up.removeDown(d)
	if !closed && d.sender != nil {
		_ = p.sub.RemoveTrack(d.sender)
		if negotiate {
			p.negotiate()
		}
	}
}

// UpdateSubscription subscribes to or unsubscribes from tracks by sid.
func (p *Participant) UpdateSubscription(sids []string, subscribe bool) {
	if subscribe && !p.perms.CanSubscribe {
		return
	}
	for _, sid := range sids {
		if subscribe {
			if up := p.room.findTrack(sid); up != nil && up.pub != p {
				p.subscribe(up, true)
			}
		} else {
			p.unsubscribe(sid, true)
		}
	}
}

// UpdateTrackSettings applies what a subscriber asks of tracks it shows:
// disabled (hidden tile), a quality, or the size it renders them at.
func (p *Participant) UpdateTrackSettings(s *livekit.UpdateTrackSettings) {
	for _, sid := range s.TrackSids {
		p.mu.Lock()
		d := p.downs[sid]
		p.mu.Unlock()
		if d == nil || d.up.kind != webrtc.RTPCodecTypeVideo {
			continue
		}
		layer := qualityToLayer(s.Quality)
		if s.Width > 0 || s.Height > 0 {
			layer = d.up.pub.layerForSize(sid, s.Width, s.Height)
		}
		d.setTarget(layer, s.Disabled)
	}
}

// layerForSize picks the smallest layer at least as large as the rendered
// size (livekit/livekit mediatrackreceiver.go GetQualityForDimension).
func (p *Participant) layerForSize(sid string, w, h uint32) int8 {
	p.mu.Lock()
	defer p.mu.Unlock()
	up := p.published[sid]
	if up == nil {
		return maxLayers - 1
	}
	var layers []*livekit.VideoLayer
	for _, pt := range p.pending {
		if pt.up == up {
			layers = pt.info.Layers
			break
		}
	}
	want := max(w, h)
	best := int8(maxLayers - 1)
	found := false
	for _, l := range layers {
		idx := qualityToLayer(l.Quality)
		if max(l.Width, l.Height) >= want && (!found || idx < best) {
			best, found = idx, true
		}
	}
	return best
}

// Limits on what a participant may set about itself, in bytes: LiveKit's
// defaults (livekit/livekit pkg/config/config.go DefaultConfig.Limit:
// MaxParticipantNameLength 256, MaxMetadataSize and MaxAttributesSize
// 64000, the latter over keys and values together), which pkg/rtc
// participant.go checkMetadataLimits applies to update_metadata. LiveKit
// bounds only the update; here the attributes as they would be after it
// are bounded, and their number and key length too, so that no sequence
// of updates grows them.
const (
	maxNameBytes       = 256
	maxMetadataBytes   = 64000
	maxAttributesBytes = 64000
	maxAttributes      = 128
	maxAttributeKey    = 256
)

// A participant may change its metadata metadataBurst times at once and
// then once per metadataEvery: each change is broadcast to the whole room,
// so an unbounded rate would let one participant flood everyone's signal
// connection. LiveKit coalesces updates instead (pkg/rtc participant.go
// marks the participant dirty); a bucket is simpler and keeps each
// accepted update visible.
const (
	metadataBurst = 10
	metadataEvery = time.Second
)

// UpdateMetadata applies the participant's own change of its name,
// metadata or attributes (an empty name or metadata, or a nil map, leaves
// that part as it is; an empty attribute value deletes the key, as
// LiveKit's SetAttributes does). The front end has checked the grant.
// It refuses, changing nothing: an update over the rate
// (ErrRateLimited) or over a size limit (ErrLimitExceeded), a name that
// is not printable (ErrInvalidName), and any change to an attribute the
// token asserted (ErrAttributeProtected). The room sees a change only
// when something changed.
func (p *Participant) UpdateMetadata(name, metadata string, attrs map[string]string) error {
	if name != "" && (len(name) > maxNameBytes || !names.Printable(name, maxNameBytes)) {
		return fmt.Errorf("%w: at most %d bytes of printable UTF-8", ErrInvalidName, maxNameBytes)
	}
	if len(metadata) > maxMetadataBytes {
		return fmt.Errorf("%w: metadata over %d bytes", ErrLimitExceeded, maxMetadataBytes)
	}
	if len(attrs) > maxAttributes {
		return fmt.Errorf("%w: more than %d attributes", ErrLimitExceeded, maxAttributes)
	}
	for k := range attrs {
		if len(k) > maxAttributeKey {
			return fmt.Errorf("%w: attribute key over %d bytes", ErrLimitExceeded, maxAttributeKey)
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrParticipantClosed
	}
	for k, v := range attrs {
		if asserted, ok := p.asserted[k]; ok && v != asserted {
			p.mu.Unlock()
			return fmt.Errorf("%w: %q", ErrAttributeProtected, k)
		}
	}
	next, changed := p.attrs, false
	if len(attrs) > 0 {
		next = copyAttrs(p.attrs)
		for k, v := range attrs {
			if v == "" {
				delete(next, k)
			} else {
				next[k] = v
			}
		}
		if len(next) > maxAttributes {
			p.mu.Unlock()
			return fmt.Errorf("%w: more than %d attributes", ErrLimitExceeded, maxAttributes)
		}
		size := 0
		for k, v := range next {
			size += len(k) + len(v)
			changed = changed || p.attrs[k] != v
		}
		if size > maxAttributesBytes {
			p.mu.Unlock()
			return fmt.Errorf("%w: attributes over %d bytes", ErrLimitExceeded, maxAttributesBytes)
		}
		changed = changed || len(next) != len(p.attrs)
	}
	if !p.updates.take(time.Now()) {
		p.mu.Unlock()
		return ErrRateLimited
	}
	if name != "" && name != p.name {
		p.name, changed = name, true
	}
	if metadata != "" && metadata != p.metadata {
		p.metadata, changed = metadata, true
	}
	p.attrs = next
	if changed {
		p.version++
	}
	p.mu.Unlock()
	if changed {
		p.room.broadcast(p, true)
	}
	return nil
}

// tokenBucket allows burst events at once and one more per every; it is
// not safe for concurrent use (the participant's mu guards it).
type tokenBucket struct {
	burst  int
	every  time.Duration
	tokens float64
	at     time.Time
}

func newTokenBucket(burst int, every time.Duration) tokenBucket {
	return tokenBucket{burst: burst, every: every, tokens: float64(burst)}
}

// take spends one token, if there is one at now.
func (b *tokenBucket) take(now time.Time) bool {
	if !b.at.IsZero() && now.After(b.at) {
		b.tokens = min(float64(b.burst), b.tokens+float64(now.Sub(b.at))/float64(b.every))
	}
	if b.at.IsZero() || now.After(b.at) {
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// writeRTCP sends RTCP to the publisher (keyframe requests).
func (p *Participant) writeRTCP(pkts []rtcp.Packet) {
	_ = p.pub.WriteRTCP(pkts)
}

// sendData sends one DataPacket on the subscriber connection's channel of
// the given kind, dropping it when the channel is backed up.
func (p *Participant) sendData(kind livekit.DataPacket_Kind, data []byte) {
	dc := p.dcLossy
	if kind == livekit.DataPacket_RELIABLE {
		dc = p.dcReliable
	}
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen || dc.BufferedAmount() > maxDataBuffered {
		return
	}
	_ = dc.Send(data)
}

const maxDataBuffered = 1 << 20

// Leave is called when the client says it leaves.
func (p *Participant) Leave() {
	p.room.removeParticipant(p, livekit.DisconnectReason_CLIENT_INITIATED, false)
}

// Disconnect removes this participant, whose signal transport is gone,
// from its room. It names the session, never the identity: after a second
// join with the same identity replaced this one (DUPLICATE_IDENTITY), the
// old transport's end must not remove the new session (livekit/livekit
// roommanager.go removes the participant whose session ended, checking its
// sid). No leave is sent: there is no transport to carry it.
func (p *Participant) Disconnect(reason livekit.DisconnectReason) {
	p.room.removeParticipant(p, reason, false)
}

// close tears the participant down: our subscriptions, our published
// tracks' subscribers, then both peer connections. It returns false when
// the participant was already closed.
func (p *Participant) close(reason livekit.DisconnectReason) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.closed = true
	p.state = livekit.ParticipantInfo_DISCONNECTED
	p.reason = reason
	p.version++
	ups := make([]*UpTrack, 0, len(p.published))
	for _, up := range p.published {
		ups = append(ups, up)
	}
	downs := p.downTracksLocked()
	p.downs = map[string]*DownTrack{}
	p.mu.Unlock()
	for _, d := range downs {
		d.up.removeDown(d)
	}
	for _, up := range ups {
		for _, d := range up.downTracks() {
			d.sub.unsubscribe(up.sid, true)
		}
	}
	_ = p.pub.Close()
	_ = p.sub.Close()
	for _, up := range ups {
		up.readers.Wait()
	}
	for _, d := range downs {
		<-d.done
	}
	return true
}
