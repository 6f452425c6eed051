package media

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"entente.dev/entente/internal/names"
)

// Participant is one member of a room, whatever carries its media: what it
// publishes, what it receives, what the room knows of it. Its Transport
// (JoinParams.Transport) moves the packets.
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

	transport Transport
	connected atomic.Bool // the transport can send media (Connected)

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
	orphans   []IncomingStream         // media that arrived before its add_track
	published map[string]*UpTrack      // by track sid
	downs     map[string]*DownTrack    // our subscriptions, by track sid
	closed    bool
	// started is set by Start, once the join answer has gone out. Until
	// then nothing is sent to the participant: clients drop offers and
	// updates that arrive before their JoinResponse (LIVEKIT.md section 2).
	started bool
}

type pendingTrack struct {
	cid  string
	info *livekit.TrackInfo
	up   *UpTrack
}

func newParticipant(r *Room, jp JoinParams) *Participant {
	p := &Participant{
		room: r, sid: newID("PA_"), identity: jp.Identity, kind: jp.Kind, perms: jp.Permissions,
		autoSubscribe: jp.AutoSubscribe, sig: jp.Signaller, transport: jp.Transport, joinedAt: time.Now(),
		name: jp.Name, metadata: jp.Metadata, attrs: copyAttrs(jp.Attributes), asserted: copyAttrs(jp.Attributes),
		updates: newTokenBucket(metadataBurst, metadataEvery),
		state:   livekit.ParticipantInfo_JOINING,
		pending: map[string]*pendingTrack{}, published: map[string]*UpTrack{}, downs: map[string]*DownTrack{},
	}
	p.log = r.log.With().Str("participant", p.identity).Str("participant_sid", p.sid).Logger()
	return p
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

// Connected is called by the transport once it can send media to the
// participant (a LiveKit client's subscriber connection is up): the
// participant becomes active and every subscription asks for a keyframe.
// Packets forwarded before it are dropped.
func (p *Participant) Connected() {
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
		d.RequestKeyframe()
	}
}

// Fail is called by the transport when it cannot carry the participant's
// media any more (an ICE failure): the participant is removed and told so.
func (p *Participant) Fail(reason livekit.DisconnectReason) {
	p.room.removeParticipant(p, reason, true)
}

// RelayData is called by the transport with one data packet the
// participant sent on a channel of the given kind: the room relays it.
func (p *Participant) RelayData(kind livekit.DataPacket_Kind, data []byte) {
	p.room.relayData(p, kind, data)
}

// Log is the participant's logger.
func (p *Participant) Log() *zerolog.Logger { return &p.log }

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

// negotiate asks the transport to tell the far end about the
// subscriptions changed so far, once the participant may be sent
// signalling.
func (p *Participant) negotiate() {
	if p.isStarted() {
		p.transport.Negotiate()
	}
}

// Reconnect is called by the transport when a negotiation failed beyond
// repair: the client is asked to join again with a new session and this
// one is removed, as LiveKit does (livekit/livekit pkg/rtc/participant.go
// IssueFullReconnect).
func (p *Participant) Reconnect() {
	if p.isClosed() {
		return
	}
	p.log.Info().Msg("negotiation failed, asking the client for a full reconnect")
	p.sig.SendLeave(livekit.DisconnectReason_STATE_MISMATCH, livekit.LeaveRequest_RECONNECT)
	p.room.removeParticipant(p, livekit.DisconnectReason_STATE_MISMATCH, false)
}

// Started reports whether the participant may be sent signalling: its
// join answer has gone out and it has not left.
func (p *Participant) Started() bool { return p.isStarted() }

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
		p.Receive(o)
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

// Receive is called by the transport for each incoming stream. It maps
// the stream to the add-track request it belongs to: by track id (the
// client's cid), then by simulcast codec cid, then the first pending
// request of the same kind (livekit/livekit participant.go
// getPendingTrack). A stream that arrives before its request waits for
// it (bounded). Once matched, s.Start is called with the layer to feed.
func (p *Participant) Receive(s IncomingStream) {
	kind := KindOf(s.Codec.MimeType)
	lkKind := livekit.TrackType_AUDIO
	if kind == KindVideo {
		lkKind = livekit.TrackType_VIDEO
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	pt := p.pending[s.TrackID]
	if pt == nil {
		for _, x := range p.pending {
			if x.up == nil && x.info.Type == lkKind {
				pt = x
				break
			}
		}
	}
	if pt == nil {
		if len(p.orphans) < maxTracksPerParticipant {
			p.orphans = append(p.orphans, s)
		}
		p.mu.Unlock()
		return
	}
	fresh := pt.up == nil
	if fresh {
		pt.up = newUpTrack(pt.info.Sid, pt.cid, p, s.Codec, s.AudioLevelExt)
		pt.info.MimeType = s.Codec.MimeType
		pt.info.Mid = s.Mid
		p.published[pt.info.Sid] = pt.up
		p.version++
	}
	up := pt.up
	p.mu.Unlock()
	layer := int8(0)
	if s.RID != "" {
		layer = layerFromRID(s.RID)
	}
	l := up.addLayer(layer, s.SSRC, s.Source)
	if l == nil {
		return
	}
	if s.Start != nil {
		s.Start(l)
	}
	l.started()
	if fresh {
		p.log.Debug().Str("track", up.sid).Str("mime", up.mime).Msg("track published")
		p.room.trackPublished(p, up)
	}
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
	if err := p.transport.AddDownTrack(d); err != nil {
		p.log.Warn().Err(err).Str("track", up.sid).Msg("subscribe failed")
		return
	}
	p.mu.Lock()
	if p.closed || p.downs[up.sid] != nil {
		p.mu.Unlock()
		p.transport.RemoveDownTrack(d)
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
	if !closed {
		p.transport.RemoveDownTrack(d)
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
		if d == nil || d.up.kind != KindVideo {
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
// tracks' subscribers, then the transport. It returns false when the
// participant was already closed.
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
	p.transport.Close()
	return true
}
