package federation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/media"
)

// Conn is a trunk's peer connection (media/rtc.Trunk): it carries the
// control channel and the media both ways, and is the export
// participant's media.Transport.
type Conn interface {
	media.Transport
	// Start makes the first offer (the offerer only).
	Start() error
	// HandleDescription applies the far node's first offer or answer.
	HandleDescription(typ, sdp string) error
	// HandleCandidate adds a far node's ICE candidate.
	HandleCandidate(candidate, sdpMid string, sdpMLineIndex uint16) error
	// Send sends one control message.
	Send(b []byte) error
	// Bytes returns the bytes sent to the far node and received from it
	// on the wire so far (after Close, the final counts), for the audit
	// log; safe to call from any goroutine.
	Bytes() (sent, received uint64)
}

// ConnEvents is what a Conn reports to its link (media/rtc.TrunkEvents).
type ConnEvents interface {
	SendDescription(typ, sdp string)
	SendCandidate(candidate, sdpMid string, sdpMLineIndex uint16)
	Up()
	Down(err error)
	Interrupted()
	Resumed()
	Message(b []byte)
	Track(trackID string, s media.IncomingStream)
}

// NewConn makes a trunk connection reporting to ev.
type NewConn func(offerer bool, ev ConnEvents, log zerolog.Logger) (Conn, error)

// FrontEndCodec turns a track's front-end description (media.TrackInfo's
// FrontEnd) into bytes and back, so that it crosses a trunk untouched.
type FrontEndCodec interface {
	MarshalFrontEnd(v any) ([]byte, error)
	UnmarshalFrontEnd(b []byte) (any, error)
}

const (
	// demandEvery is how often a link compares what its node's
	// subscribers want of remote tracks with what it asked for.
	demandEvery = 100 * time.Millisecond
	// setUpTimeout ends a link that is not up by then.
	setUpTimeout = 30 * time.Second
	// maxQueued bounds what waits for a link's goroutine; a link that
	// falls that far behind is ended (and made again).
	maxQueued = 4096
	// maxProtocolErrors ends a link whose peer keeps sending bad messages.
	maxProtocolErrors = 3
)

// errLinkBehind ends a link whose queue overflowed.
var errLinkBehind = errors.New("federation: link fell behind")

// remote is a participant of the peer's node, present in this node's room.
type remote struct {
	sid      string // at the peer
	identity string
	p        *media.Participant
	tracks   map[string]*remoteTrack // by track sid at the peer
}

// remoteTrack is a track of a remote participant.
type remoteTrack struct {
	owner *remote
	kind  media.Kind
	muted bool
	// layers are the qualities its publisher announced (simulcast when
	// more than one).
	layers []media.VideoQuality
	up     *media.UpTrack // once its media arrived
	// streams are the streams it arrives on, by layer: one per simulcast
	// layer asked for, or one in all.
	streams [3]*media.Layer
	want    uint8 // the layers asked for, bit i for layer i
	asked   bool  // want was sent
}

// mask is what this node asks of the track when its subscribers want the
// layers in demand: each wanted layer, or the closest one the publisher
// sends (the highest below it, else the lowest); an audio track or a
// single-layer video track, bit 0 when anyone wants it. Audio is always
// asked for: it is cheap, and a remote track must keep arriving to stay
// published.
func (t *remoteTrack) mask(demand uint8) uint8 {
	if t.kind == media.KindAudio {
		return 1
	}
	if len(t.layers) < 2 {
		if demand != 0 {
			return 1
		}
		return 0
	}
	var out uint8
	for i := range 3 {
		if demand&(1<<i) == 0 {
			continue
		}
		best, lowest := -1, -1
		for _, q := range t.layers {
			if lowest < 0 || int(q) < lowest {
				lowest = int(q)
			}
			if int(q) <= i && int(q) > best {
				best = int(q)
			}
		}
		if best < 0 {
			best = lowest
		}
		out |= 1 << best
	}
	return out
}

// LinkInfo describes a link, for the debug listing and tests.
type LinkInfo struct {
	Peer      string `json:"peer"`
	RoomID    string `json:"room_id"`
	MediaRoom string `json:"media_room"`
	// MirrorRoom is the room standing here for the peer's transport
	// (M(this<-peer)), empty on the shared transport.
	MirrorRoom string `json:"mirror_room,omitempty"`
	CallID     string `json:"call_id"`
	Offerer    bool   `json:"offerer"`
	Up         bool   `json:"up"`
	// Interrupted: nothing arrives from the peer (a cut link, a dead
	// node); its participants are hidden until it resumes.
	Interrupted bool      `json:"interrupted,omitempty"`
	Since       time.Time `json:"since"`
	Remotes     int       `json:"remote_participants"`
	Exported    int       `json:"exported_tracks"`
	// Received are the peer's tracks arriving on the trunk.
	Received []TrackStat `json:"received"`
}

// TrackStat is one remote track as a link receives it.
type TrackStat struct {
	Sid  string `json:"sid"` // at the peer
	Kind string `json:"kind"`
	// Want is the layers asked for, bit i for layer i.
	Want uint8 `json:"want"`
	// Packets are the packets received, in all and per layer.
	Packets      uint64    `json:"packets"`
	LayerPackets [3]uint64 `json:"layer_packets"`
}

// side is one pair of rooms a link's trunk joins: the room standing here
// for one transport (the call's service URL) and its counterpart at the
// peer. On the shared transport a link has one side, the call's media
// room on both nodes. When the peer keeps its own token service URL it
// has two (FEDERATION.md, "The redirect, exactly"): this node's transport,
// R here and the peer's mirror room M(peer<-this) there; and the peer's
// transport, the mirror room M(this<-peer) here and R there. The link's
// goroutine owns it.
type side struct {
	// key names the transport in participant messages: the server name of
	// the node whose transport it is, "" on the shared transport.
	key  string
	name string // the room here
	// publishersOnly: only participants who publish are announced (both
	// sides of a redirect link: what lands at the peer, or here, is a
	// mirror room, which holds publishers only).
	publishersOnly bool
	room           *media.Room
	export         *media.Participant
	locals         map[string]*media.ParticipantInfo // this node's participants, by sid
}

// link is one trunk: this node and one peer, for one call. Its goroutine
// (run) owns its state; everything else posts to it.
type link struct {
	n       *Node
	peer    string
	cfg     Peer
	call    Call
	callID  string
	offerer bool
	log     zerolog.Logger
	since   time.Time

	mu     sync.Mutex
	queue  []func()
	ended  bool
	info   LinkInfo
	wake   chan struct{}
	stop   chan error // the reason the link ends
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	// The goroutine's own state.
	peerSession string
	conn        Conn
	sides       []*side // sides[0] is the call's media room here (R)
	up          bool
	interrupted bool
	// reoffer: the link ended because the peer asked for a new one; the
	// offerer offers again without waiting retryAfter.
	reoffer bool
	remotes map[string]*remote // by sid at the peer
	// streams are the peer's streams the trunk delivered, by track sid at
	// the peer: kept so that a track announced again (after an
	// interruption) gets them again.
	streams  map[string][]peerStream
	tracks   map[string]*remoteTrack // by track sid at the peer
	wanted   map[string]uint8        // local tracks the peer wants, by sid: the layers
	speaking map[string]float32      // local participants speaking now, by sid
	errors   int
	audit    *trunkAudit
}

func newLink(n *Node, peer string, call Call, callID string, offerer bool) *link {
	ctx, cancel := context.WithCancel(context.Background())
	l := &link{
		n: n, peer: peer, cfg: n.cfg.Peers[peer], call: call, callID: callID, offerer: offerer, since: time.Now(),
		wake: make(chan struct{}, 1), stop: make(chan error, 1), done: make(chan struct{}), ctx: ctx, cancel: cancel,
		remotes: map[string]*remote{}, tracks: map[string]*remoteTrack{}, streams: map[string][]peerStream{},
		wanted: map[string]uint8{}, speaking: map[string]float32{},
	}
	l.info = LinkInfo{Peer: peer, RoomID: call.RoomID, MediaRoom: call.MediaRoom, CallID: callID, Offerer: offerer, Since: l.since}
	if n.redirects(peer) {
		mirror := MirrorRoom(call.MediaRoom, l.cfg.URL)
		l.sides = []*side{
			{key: n.cfg.ServerName, name: call.MediaRoom, publishersOnly: true, locals: map[string]*media.ParticipantInfo{}},
			{key: peer, name: mirror, publishersOnly: true, locals: map[string]*media.ParticipantInfo{}},
		}
		l.info.MirrorRoom = mirror
	} else {
		l.sides = []*side{{name: call.MediaRoom, locals: map[string]*media.ParticipantInfo{}}}
	}
	lc := n.log.With().Str("peer", peer).Str("room_id", call.RoomID).Str("media_room", call.MediaRoom)
	if l.info.MirrorRoom != "" {
		lc = lc.Str("mirror_room", l.info.MirrorRoom)
	}
	l.log = lc.Str("call_id", callID).Bool("offerer", offerer).Logger()
	return l
}

// sideFor returns the side a peer's participant message names: the one
// with that key, else the call's media room (a peer on the shared
// transport sends no key).
func (l *link) sideFor(key string) *side {
	for _, s := range l.sides {
		if s.key == key {
			return s
		}
	}
	return l.sides[0]
}

// post queues f for the link's goroutine; it never blocks.
func (l *link) post(f func()) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	if len(l.queue) >= maxQueued {
		l.mu.Unlock()
		l.end(errLinkBehind)
		return
	}
	l.queue = append(l.queue, f)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// backedUp reports whether the link's queue is half full: data packets,
// which a participant may send at will, are dropped then rather than
// fill it (a full queue ends the link).
func (l *link) backedUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue) > maxQueued/2
}

// end asks the link's goroutine to end it, for the reason given.
func (l *link) end(reason error) {
	select {
	case l.stop <- reason:
	default:
	}
}

// snapshot returns the link's description.
func (l *link) snapshot() LinkInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info
}

// run sets the trunk up and serves it until it ends; then it removes
// everything the link put into the room. first is the peer's invite (the
// answerer's) or nil (the offerer's).
func (l *link) run(first *callContent) {
	defer close(l.done)
	defer l.cancel()
	role := RoleAnswerer
	if l.offerer {
		role = RoleOfferer
	}
	l.audit = &trunkAudit{rec: l.n.openAudit(l.ctx, AuditEntry{Kind: AuditTrunk, Role: role, Peer: l.peer,
		RoomID: l.call.RoomID, MediaRoom: l.call.MediaRoom, CallID: l.callID}, l.log)}
	reason := l.serve(first)
	l.teardown(reason)
	l.audit.close(l.ctx, trunkOutcome(l.up, reason))
}

// trunkOutcome is how a trunk's audit record says it ended: "ok" for the
// ends of a call (hung up, the call no longer spanning both nodes, the
// node closing, a new trunk replacing it), "down" for a trunk that failed
// once up, "failed" for one that never came up.
func trunkOutcome(up bool, reason error) string {
	switch {
	case !up:
		return fmt.Sprintf("failed: %v", reason)
	case errors.Is(reason, errHungUp), errors.Is(reason, errClosing), errors.Is(reason, errGone), errors.Is(reason, errReplaced):
		return fmt.Sprintf("ok: %v", reason)
	}
	return fmt.Sprintf("down: %v", reason)
}

func (l *link) serve(first *callContent) error {
	if err := l.open(first); err != nil {
		return err
	}
	setUp := time.NewTimer(setUpTimeout)
	defer setUp.Stop()
	demand := time.NewTicker(demandEvery)
	defer demand.Stop()
	audit := time.NewTicker(l.n.auditEvery)
	defer audit.Stop()
	for {
		select {
		case err := <-l.stop:
			return err
		case <-l.wake:
			l.mu.Lock()
			fs := l.queue
			l.queue = nil
			l.mu.Unlock()
			for _, f := range fs {
				f()
			}
		case <-setUp.C:
			if !l.up {
				return fmt.Errorf("not up after %s", setUpTimeout)
			}
		case <-demand.C:
			l.updateDemand()
		case <-audit.C:
			l.audit.tick(l.ctx)
		}
	}
}

// open joins an export participant to each side's room, the first with
// the trunk as its transport, the others through a sharedTrunk, and
// starts the negotiation.
func (l *link) open(first *callContent) error {
	conn, err := l.n.newConn(l.offerer, (*connEvents)(l), l.log)
	if err != nil {
		return fmt.Errorf("trunk connection: %w", err)
	}
	l.conn = conn
	l.audit.conn = conn
	for i, s := range l.sides {
		room, err := l.n.sfu.CreateRoom(s.name)
		if err != nil {
			if i == 0 {
				conn.Close()
			}
			return fmt.Errorf("media room %s: %w", s.name, err)
		}
		s.room = room
		var transport media.Transport = conn
		if i > 0 {
			transport = &sharedTrunk{conn: conn}
		}
		export, _, err := room.Join(l.ctx, media.JoinParams{
			Identity: "entente-trunk:" + l.peer + ":" + l.callID, Name: l.peer, Kind: media.ParticipantBridge,
			Permissions: media.Permissions{CanSubscribe: true, Hidden: true},
			Signaller:   &exportSignaller{l: l, s: s}, Transport: transport,
		})
		if err != nil {
			return fmt.Errorf("export participant: %w", err) // Join closed the connection
		}
		s.export = export
		if err := export.Start(l.ctx); err != nil {
			return fmt.Errorf("export participant: %w", err)
		}
	}
	if l.offerer {
		return conn.Start()
	}
	l.peerSession = first.SenderSessionID
	return conn.HandleDescription(first.Offer.Type, first.Offer.SDP)
}

// teardown says goodbye, removes the remote participants and the export
// participant (which closes the trunk connection).
func (l *link) teardown(reason error) {
	l.mu.Lock()
	l.ended = true
	l.queue = nil
	l.mu.Unlock()
	ev := l.log.Info()
	if reason != nil && !errors.Is(reason, errHungUp) && !errors.Is(reason, errClosing) {
		ev = l.log.Warn()
	}
	ev.AnErr("reason", reason).Int("remote_participants", len(l.remotes)).Msg("federation trunk ended")
	if l.up && l.conn != nil {
		if b, err := encodeMessage(&message{T: msgBye, Reason: fmt.Sprint(reason)}); err == nil {
			_ = l.conn.Send(b)
		}
	}
	for _, r := range l.remotes {
		r.p.Leave()
	}
	for i := len(l.sides) - 1; i > 0; i-- {
		if e := l.sides[i].export; e != nil {
			e.Leave()
		}
	}
	if e := l.sides[0].export; e != nil {
		e.Leave() // the room closes the connection
	} else if l.conn != nil && l.sides[0].room == nil {
		l.conn.Close()
	}
	if !errors.Is(reason, errHungUp) {
		l.n.sendCall(context.Background(), l, EventHangup, &callContent{Reason: hangupReason(reason)})
	}
}

var (
	errHungUp  = errors.New("the peer hung up")
	errClosing = errors.New("the node is closing")
	errGone    = errors.New("the call no longer spans both nodes")
)

func hangupReason(err error) string {
	switch {
	case errors.Is(err, errGone), errors.Is(err, errClosing):
		return reasonUserHangup
	case errors.Is(err, errReplaced):
		return reasonReplaced
	}
	return reasonICEFailed
}

// send sends one control message once the trunk is up.
func (l *link) send(m *message) {
	if !l.up {
		return
	}
	b, err := encodeMessage(m)
	if err == nil {
		err = l.conn.Send(b)
	}
	if err != nil {
		l.log.Warn().Err(err).Str("message", m.T).Msg("federation message not sent")
		l.end(fmt.Errorf("control channel: %w", err))
	}
}

// becameUp announces this node's participants to the peer.
func (l *link) becameUp() {
	if l.up {
		return
	}
	l.up = true
	l.mu.Lock()
	l.info.Up = true
	l.mu.Unlock()
	l.log.Info().Dur("set_up", time.Since(l.since)).Msg("federation trunk up")
	for _, s := range l.sides[1:] {
		if s.export != nil {
			s.export.Connected() // the trunk connected the first side's itself
		}
	}
	l.announce()
}

// interrupt hides the peer's participants while nothing arrives from it:
// to this node's people they leave, as they would if the peer's node had
// gone (they can no longer be seen or heard). The trunk, its tracks and
// what the peer asked for stay, for when it resumes.
func (l *link) interrupt() {
	if l.interrupted {
		return
	}
	l.interrupted = true
	l.mu.Lock()
	l.info.Interrupted = true
	l.mu.Unlock()
	l.log.Warn().Int("remote_participants", len(l.remotes)).Msg("federation trunk interrupted: the peer's participants are hidden")
	for _, r := range l.remotes {
		l.removeRemote(r)
	}
}

// resume announces this node's participants again once the peer's packets
// arrive again; the peer, which hid them too, brings them back, and does
// the same for its own here.
func (l *link) resume() {
	if !l.interrupted {
		return
	}
	l.interrupted = false
	l.mu.Lock()
	l.info.Interrupted = false
	l.mu.Unlock()
	l.log.Info().Msg("federation trunk resumed")
	l.announce()
}

// announce tells the peer who this node's participants are, and who of
// them speaks.
func (l *link) announce() {
	l.send(&message{T: msgHello, Versions: []int{protoVersion}, Server: l.n.cfg.ServerName})
	for _, s := range l.sides {
		for _, info := range s.locals {
			l.send(&message{T: msgParticipant, Participant: l.participantMessage(s, info)})
		}
	}
	if len(l.speaking) > 0 {
		out := make([]speakerMessage, 0, len(l.speaking))
		for sid, level := range l.speaking {
			out = append(out, speakerMessage{Sid: sid, Level: level})
		}
		l.send(&message{T: msgSpeakers, Speakers: out})
	}
}

// localChanged records a participant of a side's room as the room
// announced it to the export participant, and tells the peer.
func (l *link) localChanged(s *side, info *media.ParticipantInfo) {
	if s.export == nil || info.Sid == s.export.SID() || info.Origin != "" || info.Permissions.Hidden {
		return // ourselves, a remote participant (never sent on), or hidden
	}
	if info.State == media.StateDisconnected {
		if _, ok := s.locals[info.Sid]; ok {
			delete(s.locals, info.Sid)
			delete(l.speaking, info.Sid)
			for _, t := range info.Tracks {
				delete(l.wanted, t.Sid)
			}
			l.send(&message{T: msgLeave, Sid: info.Sid})
		}
		return
	}
	old, known := s.locals[info.Sid]
	if known && old.Version > info.Version {
		return
	}
	if !known && s.publishersOnly && len(info.Tracks) == 0 {
		return // a subscribe-only participant is never copied into a mirror room
	}
	s.locals[info.Sid] = info
	l.send(&message{T: msgParticipant, Participant: l.participantMessage(s, info)})
}

func (l *link) participantMessage(s *side, info *media.ParticipantInfo) *participantMessage {
	pm := &participantMessage{
		Sid: info.Sid, Identity: info.Identity, Name: info.Name, Metadata: info.Metadata, Attributes: info.Attributes,
		Kind: int32(info.Kind), JoinedAt: info.JoinedAt.UnixMilli(), Room: s.key,
	}
	for _, t := range info.Tracks {
		tm := trackMessage{Sid: t.Sid, Kind: uint8(t.Kind), Source: int32(t.Source), Name: t.Name, Muted: t.Muted,
			MimeType: t.MimeType, Width: t.Width, Height: t.Height}
		for _, x := range t.Layers {
			tm.Layers = append(tm.Layers, layerMessage{Quality: x.Quality, Width: x.Width, Height: x.Height})
		}
		if t.FrontEnd != nil && l.n.frontEnd != nil {
			b, err := l.n.frontEnd.MarshalFrontEnd(t.FrontEnd)
			if err != nil || len(b) > maxFrontEnd {
				l.log.Warn().Err(err).Str("track", t.Sid).Msg("track description not carried")
			} else {
				tm.FrontEnd = b
			}
		}
		pm.Tracks = append(pm.Tracks, tm)
		if len(pm.Tracks) == maxTracksPerRemote {
			break
		}
	}
	return pm
}

// localSpeakers tells the peer who of this node's participants speaks
// (the room sends changes only: the link keeps who speaks now, for when
// the trunk comes up).
func (l *link) localSpeakers(sd *side, speakers []media.SpeakerInfo) {
	var out []speakerMessage
	for _, s := range speakers {
		if _, ok := sd.locals[s.Sid]; ok {
			level := s.Level
			if !s.Active {
				level = 0
				delete(l.speaking, s.Sid)
			} else {
				l.speaking[s.Sid] = level
			}
			out = append(out, speakerMessage{Sid: s.Sid, Level: level})
		}
	}
	if len(out) > 0 {
		l.send(&message{T: msgSpeakers, Speakers: out})
	}
}

// handle applies one message from the peer.
func (l *link) handle(b []byte) {
	m, err := decodeMessage(b)
	if err != nil {
		l.errors++
		l.log.Warn().Err(err).Int("errors", l.errors).Msg("bad federation message")
		if l.errors >= maxProtocolErrors {
			l.end(fmt.Errorf("%d bad messages", l.errors))
		}
		return
	}
	switch m.T {
	case msgHello:
		ok := false
		for _, v := range m.Versions {
			ok = ok || v == protoVersion
		}
		if !ok || m.Server != l.peer {
			l.end(fmt.Errorf("hello from %q speaking %v", m.Server, m.Versions))
		}
	case msgParticipant:
		l.remoteChanged(m.Participant)
	case msgLeave:
		if r := l.remotes[m.Sid]; r != nil {
			for sid := range r.tracks {
				delete(l.streams, sid) // gone for good: never announced again
			}
			l.removeRemote(r)
		}
	case msgWant:
		l.peerWants(m.Sid, *m.Layers)
	case msgSpeakers:
		for _, s := range m.Speakers {
			if r := l.remotes[s.Sid]; r != nil {
				r.p.ReportSpeaking(s.Level)
			}
		}
	case msgBye:
		l.end(fmt.Errorf("%w: %s", errHungUp, m.Reason))
	case msgData:
		// The peer's node checked that its participant may send data;
		// the room here delivers to the destinations among its own.
		if r := l.remotes[m.Sid]; r != nil {
			r.p.RelayData(m.Kind, m.Data, m.Dests)
		}
	}
}

// admissible checks that a remote participant does not pass for someone
// of this node's server (or of another peer's: each node speaks for its
// own people) and does not take a local participant's place.
func (l *link) admissible(s *side, pm *participantMessage) error {
	for _, user := range []string{pm.Attributes["matrix_user_id"], identityUser(pm.Identity)} {
		if user == "" {
			continue
		}
		server := serverOf(user)
		if server == "" || server == l.n.cfg.ServerName {
			return fmt.Errorf("identity %q claims a user of this node's server", pm.Identity)
		}
		if _, isPeer := l.n.cfg.Peers[server]; isPeer && server != l.peer {
			return fmt.Errorf("identity %q claims a user of another peer, %s", pm.Identity, server)
		}
	}
	if l.n.sfu.HasParticipant(s.name, pm.Identity) {
		return fmt.Errorf("identity %q is already in the room", pm.Identity)
	}
	if len(l.remotes) >= maxRemoteParticipants {
		return fmt.Errorf("more than %d remote participants", maxRemoteParticipants)
	}
	return nil
}

// identityUser is the Matrix user of an identity of the form
// @user:server:DEVICE (the /sfu/get form), "" for other identities.
func identityUser(identity string) string {
	if len(identity) < 4 || identity[0] != '@' {
		return ""
	}
	for i := len(identity) - 1; i > 0; i-- {
		if identity[i] == ':' {
			return identity[:i]
		}
	}
	return ""
}

// remoteChanged adds or updates a participant of the peer's node.
func (l *link) remoteChanged(pm *participantMessage) {
	r := l.remotes[pm.Sid]
	if r == nil {
		s := l.sideFor(pm.Room)
		if err := l.admissible(s, pm); err != nil {
			l.log.Warn().Err(err).Str("participant_sid", pm.Sid).Str("room", s.name).Msg("remote participant refused")
			return
		}
		p, _, err := s.room.Join(l.ctx, media.JoinParams{
			Identity: pm.Identity, Name: pm.Name, Metadata: pm.Metadata, Attributes: pm.Attributes,
			Kind: media.ParticipantKind(pm.Kind), Permissions: media.Permissions{CanPublish: true, CanPublishData: true},
			Signaller: nopSignaller{}, Transport: &remoteTransport{}, Origin: l.peer,
		})
		if err != nil {
			l.log.Warn().Err(err).Str("identity", pm.Identity).Msg("remote participant not joined")
			return
		}
		if err := p.Start(l.ctx); err != nil {
			l.log.Warn().Err(err).Str("identity", pm.Identity).Msg("remote participant not started")
			return
		}
		p.Connected() // its media comes on the trunk, which is up
		r = &remote{sid: pm.Sid, identity: pm.Identity, p: p, tracks: map[string]*remoteTrack{}}
		l.remotes[pm.Sid] = r
		l.setRemotes()
		l.log.Info().Str("identity", pm.Identity).Str("room", s.name).Msg("remote participant joined")
	} else if pm.Identity != r.identity {
		l.log.Warn().Str("identity", pm.Identity).Msg("remote participant changed identity: ignored")
		return
	} else if err := r.p.UpdateMetadata(l.ctx, pm.Name, pm.Metadata, pm.Attributes); err != nil {
		l.log.Debug().Err(err).Msg("remote participant's metadata")
	}
	for _, tm := range pm.Tracks {
		t := r.tracks[tm.Sid]
		if t == nil {
			if _, taken := l.tracks[tm.Sid]; taken {
				continue
			}
			t = &remoteTrack{owner: r, kind: media.Kind(tm.Kind), muted: tm.Muted}
			for _, x := range tm.Layers {
				t.layers = append(t.layers, x.Quality)
			}
			req := &media.AddTrackRequest{Cid: tm.Sid, Kind: t.kind, Source: media.Source(tm.Source), Name: tm.Name,
				Muted: tm.Muted, Width: tm.Width, Height: tm.Height}
			for _, x := range tm.Layers {
				req.Layers = append(req.Layers, media.VideoLayer{Quality: x.Quality, Width: x.Width, Height: x.Height})
			}
			if len(tm.FrontEnd) > 0 && l.n.frontEnd != nil {
				fe, err := l.n.frontEnd.UnmarshalFrontEnd(tm.FrontEnd)
				if err != nil {
					l.log.Warn().Err(err).Str("track", tm.Sid).Msg("remote track's description unreadable")
				}
				req.FrontEnd = fe
			}
			if err := r.p.AddTrack(l.ctx, req); err != nil {
				l.log.Warn().Err(err).Str("track", tm.Sid).Msg("remote track refused")
				continue
			}
			r.tracks[tm.Sid] = t
			l.tracks[tm.Sid] = t
			for _, ps := range l.streams[tm.Sid] {
				l.bindStream(t, ps) // the track came back after an interruption
			}
			// Until its media arrives nobody here can subscribe to it, so
			// it is asked for at its lowest layer; demand rules after that.
			l.ask(tm.Sid, t, t.mask(1))
			continue
		}
		if t.muted != tm.Muted && t.up != nil {
			t.muted = tm.Muted
			if err := r.p.SetMuted(l.ctx, t.up.SID(), tm.Muted); err != nil {
				l.log.Debug().Err(err).Msg("remote track's mute")
			}
		}
	}
}

func (l *link) removeRemote(r *remote) {
	for sid := range r.tracks {
		delete(l.tracks, sid)
	}
	delete(l.remotes, r.sid)
	l.setRemotes()
	r.p.Leave()
	l.log.Info().Str("identity", r.identity).Msg("remote participant left")
}

func (l *link) setRemotes() {
	l.mu.Lock()
	l.info.Remotes = len(l.remotes)
	l.mu.Unlock()
}

// ask tells the peer which layers of one of its tracks this node wants.
func (l *link) ask(sid string, t *remoteTrack, mask uint8) {
	if t.asked && t.want == mask {
		return
	}
	t.want, t.asked = mask, true
	l.send(&message{T: msgWant, Sid: sid, Layers: &mask})
}

// updateDemand asks for each remote track the layers this node's
// subscribers want of it now (UpTrack.DemandMask).
func (l *link) updateDemand() {
	stats := make([]TrackStat, 0, len(l.tracks))
	defer func() {
		l.mu.Lock()
		l.info.Received = stats
		l.mu.Unlock()
	}()
	for sid, t := range l.tracks {
		if t.up == nil {
			continue
		}
		l.ask(sid, t, t.mask(t.up.DemandMask()))
		st := TrackStat{Sid: sid, Kind: t.kind.String(), Want: t.want}
		for i, s := range t.streams {
			if s != nil {
				st.LayerPackets[i] = s.Packets()
				st.Packets += st.LayerPackets[i]
			}
		}
		stats = append(stats, st)
	}
}

// peerStream is one of the peer's streams as the trunk delivered it.
type peerStream struct {
	layer int
	s     media.IncomingStream
}

// maxStreams bounds the streams a link keeps (the trunk's transceivers
// are bounded too).
const maxStreams = 512

// remoteTrackArrived hands the peer's stream of a track to its participant,
// and keeps it for the track's next participant (after an interruption).
func (l *link) remoteTrackArrived(trackID string, s media.IncomingStream) {
	layer := 0
	if sid, q, ok := media.ParsePinnedID(trackID); ok {
		// One simulcast layer of the track, as a stream of its own.
		trackID, layer = sid, int(q)
		s.RID = simulcastRIDs[q]
	}
	s.TrackID = trackID
	ps := peerStream{layer: layer, s: s}
	if n := len(l.streams); n < maxStreams {
		l.streams[trackID] = append(l.streams[trackID], ps)
	}
	t := l.tracks[trackID]
	if t == nil {
		l.log.Debug().Str("track", trackID).Msg("stream of an unannounced track")
		return
	}
	l.bindStream(t, ps)
}

// bindStream makes ps the stream of one layer of t.
func (l *link) bindStream(t *remoteTrack, ps peerStream) {
	s, start, layer := ps.s, ps.s.Start, ps.layer
	s.Start = func(stream *media.Layer) {
		l.post(func() {
			if l.tracks[s.TrackID] != t {
				return // hidden meanwhile
			}
			t.up, t.streams[layer] = stream.Track(), stream
			if t.muted {
				_ = t.owner.p.SetMuted(l.ctx, t.up.SID(), true)
			}
		})
		start(stream)
	}
	t.owner.p.Receive(s)
}

// simulcastRIDs are the RIDs LiveKit's simulcast layers use, by quality
// (livekit/livekit pkg/sfu/buffer/videolayerutils.go): the core maps them
// back to layers.
var simulcastRIDs = [...]string{"q", "h", "f"}

// peerWants has the export participant of the track's room send the
// layers of a local track the peer asks for (Participant.SetLayers: one
// stream per simulcast layer, the others paused). Only this node's own
// participants' tracks are exported.
func (l *link) peerWants(sid string, mask uint8) {
	s := l.localTrackSide(sid)
	if s == nil {
		l.log.Debug().Str("track", sid).Msg("peer wants a track that is not ours")
		return
	}
	if prev, ok := l.wanted[sid]; ok && prev == mask {
		return
	}
	l.wanted[sid] = mask
	if err := s.export.SetLayers(l.ctx, sid, mask); err != nil {
		l.log.Warn().Err(err).Str("track", sid).Msg("export subscription")
	}
	l.mu.Lock()
	l.info.Exported = len(l.wanted)
	l.mu.Unlock()
}

// localTrackSide returns the side whose announced local participant
// publishes the track, nil when none does.
func (l *link) localTrackSide(sid string) *side {
	for _, s := range l.sides {
		for _, info := range s.locals {
			for _, t := range info.Tracks {
				if t.Sid == sid {
					return s
				}
			}
		}
	}
	return nil
}

// connEvents is the link as its connection's ConnEvents: everything is
// posted to the link's goroutine, but for the track handover, which the
// core serialises itself.
type connEvents link

func (c *connEvents) SendDescription(typ, sdp string) {
	l := (*link)(c)
	l.post(func() {
		content := &callContent{}
		event := EventAnswer
		if typ == "offer" {
			event = EventInvite
			content.Offer = &description{Type: typ, SDP: sdp}
			content.Invitee = l.cfg.Bot
			content.Lifetime = inviteLifetime.Milliseconds()
			content.Trunk = &trunkInfo{Version: 1, RoomID: l.call.RoomID, TS: time.Now().UnixMilli()}
		} else {
			content.Answer = &description{Type: typ, SDP: sdp}
		}
		l.n.sendCall(l.ctx, l, event, content)
	})
}

func (c *connEvents) SendCandidate(cand, sdpMid string, sdpMLineIndex uint16) {
	l := (*link)(c)
	l.post(func() {
		l.n.sendCall(l.ctx, l, EventCandidates, &callContent{
			Candidates: []candidate{{Candidate: cand, SDPMid: sdpMid, SDPMLineIndex: sdpMLineIndex}}})
	})
}

func (c *connEvents) Up() { l := (*link)(c); l.post(l.becameUp) }

func (c *connEvents) Down(err error) { (*link)(c).end(fmt.Errorf("trunk down: %w", err)) }

func (c *connEvents) Interrupted() { l := (*link)(c); l.post(l.interrupt) }

func (c *connEvents) Resumed() { l := (*link)(c); l.post(l.resume) }

func (c *connEvents) Message(b []byte) { l := (*link)(c); l.post(func() { l.handle(b) }) }

func (c *connEvents) Track(trackID string, s media.IncomingStream) {
	l := (*link)(c)
	l.post(func() { l.remoteTrackArrived(trackID, s) })
}

// exportSignaller is a side's export participant's Signaller: what the
// room says of its participants, posted to the link's goroutine.
type exportSignaller struct {
	l *link
	s *side
}

func (e *exportSignaller) SendParticipants(infos []*media.ParticipantInfo) {
	e.l.post(func() {
		for _, info := range infos {
			e.l.localChanged(e.s, info)
		}
	})
}

func (e *exportSignaller) SendTrackPublished(string, *media.TrackInfo) {}

func (e *exportSignaller) SendSpeakers(speakers []media.SpeakerInfo) {
	e.l.post(func() { e.l.localSpeakers(e.s, speakers) })
}

// ObserveData carries a data packet of one of this node's participants in
// the room to the peer (media.DataObserver), whatever its destinations: the
// peer's room delivers it to those among its participants. Packets of
// remote participants are never sent on, and a packet that does not fit a
// control message, or meets a backed-up channel, is dropped.
func (e *exportSignaller) ObserveData(from *media.Participant, kind media.DataKind, data []byte, dests []string) {
	if from.Origin() != "" || len(data) > maxData || e.l.backedUp() {
		return
	}
	sid := from.SID()
	m := &message{T: msgData, Sid: sid, Kind: kind, Data: append([]byte(nil), data...), Dests: append([]string(nil), dests...)}
	l, side := e.l, e.s
	l.post(func() {
		if _, announced := side.locals[sid]; !announced || !l.up {
			return
		}
		b, err := encodeMessage(m)
		if err == nil {
			err = l.conn.Send(b)
		}
		if err != nil {
			l.log.Debug().Err(err).Msg("data packet not carried to the peer")
		}
	})
}

func (e *exportSignaller) SendLeave(reason media.DisconnectReason, _ media.LeaveAction) {
	e.l.end(fmt.Errorf("%w: removed from the room %s (%s)", errClosing, e.s.name, reason))
}

// sharedTrunk is the export participant's Transport on a link's second
// side: the same trunk carries its down tracks (track sids are unique
// across rooms), and the first side's export participant owns the
// connection, so closing this one closes nothing. The link calls
// Connected on its participant when the trunk comes up.
type sharedTrunk struct{ conn Conn }

func (t *sharedTrunk) Attach(*media.Participant) error       { return nil }
func (t *sharedTrunk) AddDownTrack(d *media.DownTrack) error { return t.conn.AddDownTrack(d) }
func (t *sharedTrunk) RemoveDownTrack(d *media.DownTrack)    { t.conn.RemoveDownTrack(d) }
func (t *sharedTrunk) Negotiate()                            { t.conn.Negotiate() }
func (t *sharedTrunk) SendData(media.DataKind, []byte)       {}
func (t *sharedTrunk) Close()                                {}

// nopSignaller is a remote participant's Signaller: it subscribes to
// nothing here, so the room has nothing to tell it.
type nopSignaller struct{}

func (nopSignaller) SendParticipants([]*media.ParticipantInfo)           {}
func (nopSignaller) SendTrackPublished(string, *media.TrackInfo)         {}
func (nopSignaller) SendSpeakers([]media.SpeakerInfo)                    {}
func (nopSignaller) SendLeave(media.DisconnectReason, media.LeaveAction) {}

// remoteTransport is a remote participant's Transport: its media arrives
// on the trunk (handed over by the link), and it subscribes to nothing.
type remoteTransport struct{}

func (*remoteTransport) Attach(*media.Participant) error { return nil }
func (*remoteTransport) AddDownTrack(*media.DownTrack) error {
	return errors.New("a remote participant does not subscribe")
}
func (*remoteTransport) RemoveDownTrack(*media.DownTrack) {}
func (*remoteTransport) Negotiate()                       {}
func (*remoteTransport) SendData(media.DataKind, []byte)  {}
func (*remoteTransport) Close()                           {}
