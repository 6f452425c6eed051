package media

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/internal/names"
)

// Participant is one member of a room, whatever carries its media: what it
// publishes, what it receives, what the room knows of it. Its Transport
// (JoinParams.Transport) moves the packets.
//
// Its state is the room's: only the room's goroutine reads or changes it
// (Room.do, Room.post), so it has no lock of its own. Its methods are
// called from outside, by the front end (Start, AddTrack, SetMuted,
// UpdateSubscription, UpdateTrackSettings, UpdateMetadata, Leave,
// Disconnect), which waits for them to be applied, and by the transport
// (Receive, Connected, Fail, Reconnect, RelayData), which does not.
type Participant struct {
	room          *Room
	sid           string
	identity      string
	kind          ParticipantKind
	perms         Permissions
	autoSubscribe bool
	sig           Signaller
	log           zerolog.Logger
	joinedAt      time.Time
	transport     Transport
	origin        string
	// remoteLevel is what a remote participant's node says of its
	// speaking (ReportSpeaking): math.Float32bits of the level, 0 silent.
	remoteLevel atomic.Uint32
	// asserted are the attributes the token carried: its issuer vouches
	// for them (the Matrix bridge's matrix_user_id), so the participant
	// may neither change nor delete them.
	asserted map[string]string

	connected atomic.Bool // the transport can send media (Connected)
	// started is set by Start, once the join answer has gone out. Until
	// then nothing is sent to the participant: clients drop offers and
	// updates that arrive before their JoinResponse (LIVEKIT.md section 2).
	started atomic.Bool
	closed  atomic.Bool

	// The room's goroutine alone touches what follows.
	name      string
	metadata  string
	attrs     map[string]string
	updates   tokenBucket // paces UpdateMetadata
	version   uint32
	state     ParticipantState
	reason    DisconnectReason
	pending   map[string]*pendingTrack // by client track id (cid)
	orphans   []IncomingStream         // media that arrived before its add_track
	published map[string]*UpTrack      // by track sid
	downs     map[string]*DownTrack    // our subscriptions, by track sid
}

type pendingTrack struct {
	cid  string
	info *TrackInfo
	up   *UpTrack
}

func newParticipant(r *Room, jp JoinParams) *Participant {
	p := &Participant{
		room: r, sid: newID("PA_"), identity: jp.Identity, kind: jp.Kind, perms: jp.Permissions,
		autoSubscribe: jp.AutoSubscribe, sig: jp.Signaller, transport: jp.Transport, joinedAt: time.Now(), origin: jp.Origin,
		name: jp.Name, metadata: jp.Metadata, attrs: copyAttrs(jp.Attributes), asserted: copyAttrs(jp.Attributes),
		updates: newTokenBucket(metadataBurst, metadataEvery),
		state:   StateJoining,
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

// SID is the participant's session id, as LiveKit forms it ("PA_...").
func (p *Participant) SID() string { return p.sid }

// Kind is what the participant is (a client, an agent, ...).
func (p *Participant) Kind() ParticipantKind { return p.kind }

// Identity is the participant's identity from its token.
func (p *Participant) Identity() string { return p.identity }

// Origin is the server name of the node the participant joined at, empty
// for the node's own participants (JoinParams.Origin).
func (p *Participant) Origin() string { return p.origin }

// ReportSpeaking sets a remote participant's speaking level as its own
// node measured it (0: silent); the room merges it into its speaker
// changes at its next tick. Ignored for the node's own participants,
// whose level the room measures itself.
func (p *Participant) ReportSpeaking(level float32) {
	if p.origin == "" {
		return
	}
	if !(level > 0) || level > 1 {
		level = 0 // NaN, negative or out of range: silent
	}
	p.remoteLevel.Store(math.Float32bits(level))
}

// Room is the room the participant is in.
func (p *Participant) Room() *Room { return p.room }

// Log is the participant's logger.
func (p *Participant) Log() *zerolog.Logger { return &p.log }

// Started reports whether the participant may be sent signalling: its
// join answer has gone out and it has not left.
func (p *Participant) Started() bool { return p.started.Load() && !p.closed.Load() }

// Connected is called by the transport once it can send media to the
// participant (a LiveKit client's subscriber connection is up): the
// participant becomes active and every subscription asks for a keyframe.
// Packets forwarded before it are dropped.
func (p *Participant) Connected() {
	if p.connected.Swap(true) {
		return
	}
	p.room.post(func() {
		if p.closed.Load() {
			return
		}
		if p.state == StateJoined || p.state == StateJoining {
			p.state = StateActive
			p.version++
		}
		p.room.broadcast(p, true)
		for _, d := range p.downs {
			d.RequestKeyframe()
		}
	})
}

// Fail is called by the transport when it cannot carry the participant's
// media any more (an ICE failure): the participant is removed and told so.
func (p *Participant) Fail(reason DisconnectReason) {
	p.room.post(func() { p.room.remove(p, reason, true) })
}

// Reconnect is called by the transport when a negotiation failed beyond
// repair: the client is asked to join again with a new session and this
// one is removed, as LiveKit does (livekit/livekit pkg/rtc/participant.go
// IssueFullReconnect). It returns once the participant is out of the
// room; the transport calls it from the front end's goroutine, never from
// the room's.
func (p *Participant) Reconnect() {
	_ = p.room.do(context.Background(), func() {
		if p.closed.Load() {
			return
		}
		p.log.Info().Msg("negotiation failed, asking the client for a full reconnect")
		p.sig.SendLeave(ReasonStateMismatch, LeaveReconnect)
		p.room.remove(p, ReasonStateMismatch, false)
	})
}

// RelayData is called by the transport with one data packet the
// participant sent on a channel of the given kind, as it is to be relayed
// (the transport has read it and stamped its sender), and the identities
// it is addressed to (none: everyone). The room relays it on the caller's
// goroutine.
func (p *Participant) RelayData(kind DataKind, data []byte, dests []string) {
	p.room.relayData(p, kind, data, dests)
}

// Start announces the participant, subscribes it to what the room already
// publishes and sends the first subscriber offer. Call it after the join
// response has been sent.
func (p *Participant) Start(ctx context.Context) error {
	return p.room.do(ctx, func() {
		if p.closed.Load() {
			return
		}
		p.state = StateJoined
		p.version++
		p.started.Store(true)
		// What changed in the room since the join answer's snapshot was
		// taken (tracks published meanwhile): sent before the first offer.
		var others []*ParticipantInfo
		for _, q := range p.room.participants {
			if q != p && !q.perms.Hidden {
				others = append(others, q.info())
			}
		}
		if len(others) > 0 {
			p.sig.SendParticipants(others)
		}
		if speaking := p.room.speakers(); len(speaking) > 0 && p.perms.CanSubscribe {
			p.sig.SendSpeakers(speaking)
		}
		p.room.broadcast(p, false)
		if p.autoSubscribe && p.perms.CanSubscribe {
			for _, up := range p.room.publishedTracks(p) {
				p.subscribe(up)
			}
		}
		p.negotiate()
	})
}

// info returns a snapshot of the participant for signalling. Room
// goroutine only.
func (p *Participant) info() *ParticipantInfo {
	tracks := make([]*TrackInfo, 0, len(p.published))
	for _, pt := range p.pending {
		if pt.up != nil {
			tracks = append(tracks, pt.info.Clone())
		}
	}
	perms := p.perms
	perms.Sources = append([]Source(nil), p.perms.Sources...)
	return &ParticipantInfo{
		Sid: p.sid, Identity: p.identity, Name: p.name, Metadata: p.metadata, Attributes: copyAttrs(p.attrs),
		State: p.state, Tracks: tracks, Version: p.version, Permissions: perms, Kind: p.kind,
		JoinedAt: p.joinedAt, IsPublisher: len(p.published) > 0, DisconnectReason: p.reason, Origin: p.origin,
	}
}

// negotiate asks the transport to tell the far end about the
// subscriptions changed so far, once the participant may be sent
// signalling. Room goroutine only.
func (p *Participant) negotiate() {
	if p.Started() {
		p.transport.Negotiate()
	}
}

// AddTrack registers a track the client is about to publish and confirms it.
func (p *Participant) AddTrack(ctx context.Context, req *AddTrackRequest) error {
	if !p.perms.CanPublish || !p.perms.allowsSource(req.Source) {
		return fmt.Errorf("%w: publish %s", ErrPermissionDenied, req.Source)
	}
	if req.Cid == "" {
		return fmt.Errorf("add track: empty cid")
	}
	var err error
	if derr := p.room.do(ctx, func() { err = p.addTrack(req) }); derr != nil {
		return derr
	}
	return err
}

func (p *Participant) addTrack(req *AddTrackRequest) error {
	if p.closed.Load() {
		return ErrParticipantClosed
	}
	if pt, ok := p.pending[req.Cid]; ok {
		p.sig.SendTrackPublished(req.Cid, pt.info.Clone())
		return nil
	}
	if len(p.pending) >= maxTracksPerParticipant {
		return fmt.Errorf("add track: too many tracks")
	}
	info := trackInfoFromRequest(req)
	pt := &pendingTrack{cid: req.Cid, info: info}
	for _, cid := range req.SimulcastCids {
		if cid != "" && cid != req.Cid {
			p.pending[cid] = pt
		}
	}
	p.pending[req.Cid] = pt
	p.sig.SendTrackPublished(req.Cid, info.Clone())
	orphans := p.orphans
	p.orphans = nil
	for _, o := range orphans {
		p.receive(o)
	}
	return nil
}

const maxTracksPerParticipant = 32

func trackInfoFromRequest(req *AddTrackRequest) *TrackInfo {
	kind := "A"
	if req.Kind == KindVideo {
		kind = "V"
	}
	return &TrackInfo{
		Sid: newID("TR_" + kind), Kind: req.Kind, Source: req.Source, Name: req.Name, Muted: req.Muted,
		Width: req.Width, Height: req.Height, Layers: append([]VideoLayer(nil), req.Layers...), FrontEnd: req.FrontEnd,
	}
}

// Receive is called by the transport for each incoming stream. It maps
// the stream to the add-track request it belongs to: by track id (the
// client's cid), then by simulcast codec cid, then the first pending
// request of the same kind (livekit/livekit participant.go
// getPendingTrack). A stream that arrives before its request waits for
// it (bounded). Once matched, s.Start is called, on the room's goroutine,
// with the layer to feed.
func (p *Participant) Receive(s IncomingStream) {
	p.room.post(func() { p.receive(s) })
}

func (p *Participant) receive(s IncomingStream) {
	if p.closed.Load() {
		return
	}
	kind := KindOf(s.Codec.MimeType)
	pt := p.pending[s.TrackID]
	if pt == nil {
		for _, x := range p.pending {
			if x.up == nil && x.info.Kind == kind {
				pt = x
				break
			}
		}
	}
	if pt == nil {
		if len(p.orphans) < maxTracksPerParticipant {
			p.orphans = append(p.orphans, s)
		}
		return
	}
	fresh := pt.up == nil
	if fresh {
		pt.up = newUpTrack(pt.info.Sid, pt.cid, p, s.Codec, s.AudioLevelExt)
		pt.up.layered = s.RID != "" || len(pt.info.Layers) > 1
		pt.info.MimeType = s.Codec.MimeType
		pt.info.Mid = s.Mid
		p.published[pt.info.Sid] = pt.up
		p.version++
	}
	up := pt.up
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

// trackEnded is called once when a published track's media ends, on any
// goroutine.
func (p *Participant) trackEnded(up *UpTrack) {
	p.room.post(func() {
		if p.published[up.sid] != up {
			return
		}
		delete(p.published, up.sid)
		for cid, pt := range p.pending {
			if pt.up == up {
				delete(p.pending, cid)
			}
		}
		p.version++
		p.room.trackUnpublished(p, up, !p.closed.Load())
	})
}

// SetMuted mutes or unmutes one of the participant's tracks.
func (p *Participant) SetMuted(ctx context.Context, sid string, muted bool) error {
	var err error
	if derr := p.room.do(ctx, func() {
		var info *TrackInfo
		for _, pt := range p.pending {
			if pt.info.Sid == sid {
				info = pt.info
				break
			}
		}
		if info == nil {
			err = ErrTrackNotFound
			return
		}
		if info.Muted == muted {
			return
		}
		info.Muted = muted
		p.version++
		if p.published[sid] != nil {
			p.room.broadcast(p, true)
		}
	}); derr != nil {
		return derr
	}
	return err
}

// subscribe starts sending up to this participant. Room goroutine only;
// the caller negotiates.
func (p *Participant) subscribe(up *UpTrack) {
	if p.closed.Load() || !p.started.Load() || p.downs[up.sid] != nil {
		return
	}
	d := newDownTrack(up, p)
	if err := p.transport.AddDownTrack(d); err != nil {
		p.log.Warn().Err(err).Str("track", up.sid).Msg("subscribe failed")
		return
	}
	p.downs[up.sid] = d
	up.addDown(d)
}

// unsubscribe stops sending the track sid (or the pinned layer of
// PinnedID's key) to this participant. Room goroutine only; the caller
// negotiates.
func (p *Participant) unsubscribe(key string) {
	d := p.downs[key]
	if d == nil {
		return
	}
	delete(p.downs, key)
	d.up.removeDown(d)
	if !p.closed.Load() {
		p.transport.RemoveDownTrack(d)
	}
}

// SetLayers is how a bridge participant (a federation trunk's export
// participant) subscribes to a simulcast track: one down track per layer
// in the mask (bit i: layer i), each carrying only its layer, so that every
// layer wanted crosses once and the far node switches between them for
// its own subscribers. A layer left out of the mask is paused, not
// removed: its stream stays negotiated and resumes on a keyframe. A
// track that is not simulcast gets one ordinary down track, paused when
// the mask is 0.
func (p *Participant) SetLayers(ctx context.Context, sid string, mask uint8) error {
	if !p.perms.CanSubscribe {
		return nil
	}
	return p.room.do(ctx, func() {
		up := p.room.findTrack(sid)
		if up == nil || up.pub == p || p.closed.Load() || !p.started.Load() {
			return
		}
		if !up.simulcast() {
			p.subscribe(up)
			if d := p.downs[sid]; d != nil {
				d.setTarget(maxLayers-1, mask == 0)
			}
			p.negotiate()
			return
		}
		for layer := int8(0); layer < maxLayers; layer++ {
			want := mask&(1<<layer) != 0
			key := PinnedID(sid, VideoQuality(layer))
			d := p.downs[key]
			if d == nil && want {
				d = newPinnedDownTrack(up, p, layer)
				if err := p.transport.AddDownTrack(d); err != nil {
					p.log.Warn().Err(err).Str("track", key).Msg("subscribe failed")
					continue
				}
				p.downs[key] = d
				up.addDown(d)
			}
			if d != nil {
				d.setTarget(layer, !want)
			}
		}
		p.negotiate()
	})
}

// UpdateSubscription subscribes to or unsubscribes from tracks by sid.
func (p *Participant) UpdateSubscription(ctx context.Context, sids []string, subscribe bool) error {
	if subscribe && !p.perms.CanSubscribe {
		return nil
	}
	return p.room.do(ctx, func() {
		for _, sid := range sids {
			if subscribe {
				if up := p.room.findTrack(sid); up != nil && up.pub != p {
					p.subscribe(up)
				}
			} else {
				p.unsubscribe(sid)
			}
		}
		p.negotiate()
	})
}

// UpdateTrackSettings applies what a subscriber asks of tracks it shows:
// disabled (hidden tile), a quality, or the size it renders them at.
func (p *Participant) UpdateTrackSettings(ctx context.Context, s *TrackSettings) error {
	return p.room.do(ctx, func() {
		for _, sid := range s.TrackSids {
			d := p.downs[sid]
			if d == nil || d.up.kind != KindVideo {
				continue
			}
			layer := qualityToLayer(s.Quality)
			if s.Width > 0 || s.Height > 0 {
				layer = d.up.pub.layerForSize(sid, s.Width, s.Height)
			}
			d.setTarget(layer, s.Disabled)
		}
	})
}

// layerForSize picks the smallest layer at least as large as the rendered
// size (livekit/livekit mediatrackreceiver.go GetQualityForDimension).
func (p *Participant) layerForSize(sid string, w, h uint32) int8 {
	up := p.published[sid]
	if up == nil {
		return maxLayers - 1
	}
	var layers []VideoLayer
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
func (p *Participant) UpdateMetadata(ctx context.Context, name, metadata string, attrs map[string]string) error {
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
	var err error
	if derr := p.room.do(ctx, func() { err = p.updateMetadata(name, metadata, attrs) }); derr != nil {
		return derr
	}
	return err
}

func (p *Participant) updateMetadata(name, metadata string, attrs map[string]string) error {
	if p.closed.Load() {
		return ErrParticipantClosed
	}
	for k, v := range attrs {
		if asserted, ok := p.asserted[k]; ok && v != asserted {
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
			return fmt.Errorf("%w: more than %d attributes", ErrLimitExceeded, maxAttributes)
		}
		size := 0
		for k, v := range next {
			size += len(k) + len(v)
			changed = changed || p.attrs[k] != v
		}
		if size > maxAttributesBytes {
			return fmt.Errorf("%w: attributes over %d bytes", ErrLimitExceeded, maxAttributesBytes)
		}
		changed = changed || len(next) != len(p.attrs)
	}
	if !p.updates.take(time.Now()) {
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
		p.room.broadcast(p, true)
	}
	return nil
}

// tokenBucket allows burst events at once and one more per every; it is
// not safe for concurrent use (the room's goroutine alone uses it).
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

// Leave is called when the client says it leaves. It returns once the
// participant is out of the room; its transport closes after.
func (p *Participant) Leave() {
	_ = p.room.do(context.Background(), func() {
		p.room.remove(p, ReasonClientInitiated, false)
	})
}

// Disconnect removes this participant, whose signal transport is gone,
// from its room. It names the session, never the identity: after a second
// join with the same identity replaced this one (DUPLICATE_IDENTITY), the
// old transport's end must not remove the new session (livekit/livekit
// roommanager.go removes the participant whose session ended, checking its
// sid). No leave is sent: there is no transport to carry it.
func (p *Participant) Disconnect(reason DisconnectReason) {
	_ = p.room.do(context.Background(), func() { p.room.remove(p, reason, false) })
}

// close marks the participant gone and ends its subscriptions and its
// tracks' subscribers; Room.remove closes its transport after. It returns
// false when the participant was already closed. Room goroutine only.
func (p *Participant) close(reason DisconnectReason) bool {
	if p.closed.Swap(true) {
		return false
	}
	p.state = StateDisconnected
	p.reason = reason
	p.version++
	for _, d := range p.downs {
		d.up.removeDown(d)
	}
	p.downs = map[string]*DownTrack{}
	for _, up := range p.published {
		for _, d := range up.downTracks() {
			d.sub.unsubscribe(d.key)
			d.sub.negotiate()
		}
	}
	return true
}
