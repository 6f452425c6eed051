package media

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
)

const (
	// speakerInterval is how often active speakers are computed (LiveKit: ~400 ms).
	speakerInterval = 400 * time.Millisecond
	// reportEvery is how many speaker intervals pass between sender
	// reports (1.2 s; RFC 3550 suggests about 5 s for small sessions,
	// browsers want them sooner to start lip sync).
	reportEvery = 3
	// speakerThresholdDBov: louder than -35 dBov counts as speech
	// (livekit/livekit pkg/sfu/audio/audiolevel.go).
	speakerThresholdDBov = 35
	// speakerMinPackets is how many loud packets in a window make a speaker.
	speakerMinPackets = 2
)

// Room is one conference: its participants and what they publish. Changes
// to membership are made under mu, and announced after it is released.
type Room struct {
	sfu       *SFU
	name      string
	sid       string
	log       zerolog.Logger
	createdAt time.Time
	sif       []byte

	mu           sync.Mutex
	participants map[string]*Participant // by identity
	hadAnyone    bool
	emptySince   time.Time
	closed       bool

	stop chan struct{}
	done chan struct{}
}

func newRoom(s *SFU, name string) *Room {
	r := &Room{
		sfu: s, name: name, sid: newID("RM_"), createdAt: time.Now(),
		participants: map[string]*Participant{}, emptySince: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	r.sif = []byte(newID(""))
	r.log = s.log.With().Str("room", name).Str("room_sid", r.sid).Logger()
	go r.run()
	return r
}

// Name is the room's name.
func (r *Room) Name() string { return r.name }

// SID is the room's LiveKit sid.
func (r *Room) SID() string { return r.sid }

func (r *Room) proto() *livekit.Room {
	r.mu.Lock()
	n := len(r.participants)
	r.mu.Unlock()
	return &livekit.Room{
		Sid: r.sid, Name: r.name, CreationTime: r.createdAt.Unix(), CreationTimeMs: r.createdAt.UnixMilli(),
		EmptyTimeout: uint32(r.sfu.cfg.EmptyTimeout / time.Second), MaxParticipants: uint32(r.sfu.cfg.MaxParticipants),
		NumParticipants: uint32(n),
	}
}

// Join adds a participant. A participant already there with the same
// identity is evicted (LiveKit's DUPLICATE_IDENTITY). The caller sends the
// join answer, then calls Participant.Start.
func (r *Room) Join(jp JoinParams) (*Participant, *JoinInfo, error) {
	if jp.Transport == nil {
		return nil, nil, fmt.Errorf("join %s: no transport", jp.Identity)
	}
	p := newParticipant(r, jp)
	if err := jp.Transport.Attach(p); err != nil {
		jp.Transport.Close()
		return nil, nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		jp.Transport.Close()
		return nil, nil, ErrRoomClosed
	}
	old := r.participants[jp.Identity]
	if limit := r.sfu.cfg.MaxParticipants; limit > 0 && old == nil && len(r.participants) >= limit {
		r.mu.Unlock()
		jp.Transport.Close()
		return nil, nil, ErrRoomFull
	}
	r.participants[jp.Identity] = p
	r.hadAnyone = true
	others := make([]*Participant, 0, len(r.participants))
	for _, q := range r.participants {
		if q != p && q != old && !q.perms.Hidden {
			others = append(others, q)
		}
	}
	r.mu.Unlock()
	if old != nil {
		old.log.Info().Msg("replaced by a new session with the same identity")
		r.removeParticipant(old, livekit.DisconnectReason_DUPLICATE_IDENTITY, true)
	}
	info := &JoinInfo{Room: r.proto(), Participant: p.info(), SIFTrailer: append([]byte(nil), r.sif...)}
	for _, q := range others {
		info.Others = append(info.Others, q.info())
	}
	r.sfu.recordJoin(r, p)
	p.log.Info().Msg("participant joined")
	return p, info, nil
}

// removeParticipant takes p out of the room, closes it and tells the others.
func (r *Room) removeParticipant(p *Participant, reason livekit.DisconnectReason, sendLeave bool) {
	r.mu.Lock()
	if r.participants[p.identity] == p {
		delete(r.participants, p.identity)
		if len(r.participants) == 0 {
			r.emptySince = time.Now()
		}
	}
	r.mu.Unlock()
	if sendLeave {
		p.sig.SendLeave(reason, livekit.LeaveRequest_DISCONNECT)
	}
	if !p.close(reason) {
		return
	}
	r.broadcast(p, false)
	r.sfu.recordLeave(p)
	p.log.Info().Str("reason", reason.String()).Msg("participant left")
}

// RemoveParticipant removes the participant with this identity, if present.
func (r *Room) RemoveParticipant(identity string, reason livekit.DisconnectReason) bool {
	r.mu.Lock()
	p := r.participants[identity]
	r.mu.Unlock()
	if p == nil {
		return false
	}
	r.removeParticipant(p, reason, true)
	return true
}

// members returns a snapshot of the participants.
func (r *Room) members() []*Participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Participant, 0, len(r.participants))
	for _, p := range r.participants {
		out = append(out, p)
	}
	return out
}

// broadcast sends p's current info to the other participants, and to p
// itself when self is set. Hidden participants are announced to nobody else.
func (r *Room) broadcast(p *Participant, self bool) {
	info := p.info()
	for _, q := range r.members() {
		if q == p && !self {
			continue
		}
		if !q.isStarted() || (q != p && p.perms.Hidden) {
			continue
		}
		q.sig.SendParticipants([]*livekit.ParticipantInfo{proto.Clone(info).(*livekit.ParticipantInfo)})
	}
}

// publishedTracks returns every track published in the room by others than except.
func (r *Room) publishedTracks(except *Participant) []*UpTrack {
	var out []*UpTrack
	for _, q := range r.members() {
		if q == except {
			continue
		}
		q.mu.Lock()
		for _, up := range q.published {
			out = append(out, up)
		}
		q.mu.Unlock()
	}
	return out
}

func (r *Room) findTrack(sid string) *UpTrack {
	for _, q := range r.members() {
		q.mu.Lock()
		up := q.published[sid]
		q.mu.Unlock()
		if up != nil {
			return up
		}
	}
	return nil
}

// trackPublished announces a new track (participant update first, then the
// subscriber offers that carry it, so clients know the owner before the
// track: LIVEKIT.md section 3) and subscribes everyone who auto-subscribes.
func (r *Room) trackPublished(pub *Participant, up *UpTrack) {
	r.broadcast(pub, true)
	for _, q := range r.members() {
		if q != pub && q.autoSubscribe && q.perms.CanSubscribe {
			q.subscribe(up, true)
		}
	}
}

// trackUnpublished removes a track from every subscriber and, when the
// publisher stays, announces its new state.
func (r *Room) trackUnpublished(pub *Participant, up *UpTrack, announce bool) {
	for _, d := range up.downTracks() {
		d.sub.unsubscribe(up.sid, true)
	}
	if announce {
		r.broadcast(pub, true)
	}
}

// relayData forwards one DataPacket from a participant to the others
// (livekit/livekit participant.go handleReceivedDataMessage): the sender's
// identity is stamped on it, destinations are honoured, nothing is echoed.
func (r *Room) relayData(from *Participant, kind livekit.DataPacket_Kind, data []byte) {
	if !from.perms.CanPublishData {
		return
	}
	out, dests, err := relayedData(from, kind, data)
	if err != nil {
		from.log.Debug().Err(err).Msg("dropping a data packet")
		return
	}
	for _, q := range r.members() {
		if q == from || !q.isStarted() || (len(dests) > 0 && !contains(dests, q.identity)) {
			continue
		}
		q.transport.SendData(kind, out)
	}
}

// MaxDataMessage is the largest DataPacket the room relays: LiveKit's limit.
const MaxDataMessage = 64 * 1024

// relayedData decodes one DataPacket that from sent on a channel of the
// given kind and returns the packet as the room relays it (on a channel of
// the same kind) and the identities it is addressed to (none: everyone).
func relayedData(from *Participant, kind livekit.DataPacket_Kind, data []byte) ([]byte, []string, error) {
	if len(data) == 0 || len(data) > MaxDataMessage {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrInvalidDataPacket, len(data))
	}
	var pkt livekit.DataPacket
	// Only what the node can read is relayed: it cannot stamp the sender on
	// a payload it does not know, and a field it does not know may be read
	// by a client as one it does, such as the identity field sent again
	// with another wire type, which Go keeps as unknown and a JavaScript
	// decoder may take as the sender's identity.
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &pkt); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidDataPacket, err)
	}
	// Payloads that speak for other participants are not relayed, as in
	// livekit/livekit handleReceivedDataMessage: transcriptions come from
	// agents only; metrics are not forwarded as data; speaker updates are
	// the node's to send, over signalling.
	switch pkt.Value.(type) {
	case nil:
		return nil, nil, fmt.Errorf("%w: no payload the node knows", ErrInvalidDataPacket)
	case *livekit.DataPacket_Speaker, *livekit.DataPacket_Metrics:
		return nil, nil, fmt.Errorf("%w: %T is not relayed", ErrInvalidDataPacket, pkt.Value)
	case *livekit.DataPacket_Transcription:
		if from.kind != livekit.ParticipantInfo_AGENT {
			return nil, nil, fmt.Errorf("%w: transcription from a participant that is not an agent", ErrInvalidDataPacket)
		}
	}
	pkt.Kind = kind
	pkt.ParticipantIdentity = from.identity
	pkt.ParticipantSid = from.sid
	dests := pkt.DestinationIdentities
	if u := pkt.GetUser(); u != nil {
		u.ParticipantIdentity = from.identity
		u.ParticipantSid = from.sid
		if len(dests) == 0 {
			dests = u.DestinationIdentities
		}
	}
	out, err := proto.Marshal(&pkt)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidDataPacket, err)
	}
	return out, dests, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// run is the room's worker: active speakers and layer upkeep, off the
// packet path. It stops when the room closes.
func (r *Room) run() {
	defer close(r.done)
	t := time.NewTicker(speakerInterval)
	defer t.Stop()
	prev := map[string]float32{}
	for tick := 1; ; tick++ {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		prev = r.updateSpeakers(prev)
		if tick%reportEvery == 0 {
			r.sendReports(time.Now())
		}
		for _, q := range r.members() {
			q.mu.Lock()
			downs := q.downTracksLocked()
			q.mu.Unlock()
			for _, d := range downs {
				if d.up.kind == KindVideo {
					d.retarget()
				}
			}
		}
	}
}

// sendReports has every transport that can send RTCP sender reports for
// the tracks it receives (SenderReporter), so that the subscriber can
// synchronise a publisher's audio and video. The reports come from here
// rather than from pion's report interceptor, which takes a lock and
// updates counters on every packet and runs a ticker goroutine per
// connection.
func (r *Room) sendReports(now time.Time) {
	for _, q := range r.members() {
		if sr, ok := q.transport.(SenderReporter); ok {
			sr.SendSenderReports(now)
		}
	}
}

// updateSpeakers computes who is speaking from the audio level windows and
// sends the changes (LiveKit's SpeakersChanged carries changes only).
func (r *Room) updateSpeakers(prev map[string]float32) map[string]float32 {
	members := r.members()
	now := make(map[string]float32, len(prev))
	for _, q := range members {
		q.mu.Lock()
		ups := make([]*UpTrack, 0, len(q.published))
		for _, up := range q.published {
			if up.audioLevelID != 0 {
				ups = append(ups, up)
			}
		}
		q.mu.Unlock()
		for _, up := range ups {
			loud, minDBov := up.takeLevel()
			if loud >= speakerMinPackets {
				level := float32(math.Pow(10, -float64(minDBov)/20))
				if level > now[q.sid] {
					now[q.sid] = level
				}
			}
		}
	}
	var changes []*livekit.SpeakerInfo
	for sid, level := range now {
		if _, was := prev[sid]; !was {
			changes = append(changes, &livekit.SpeakerInfo{Sid: sid, Level: level, Active: true})
		}
	}
	for sid := range prev {
		if _, is := now[sid]; !is {
			changes = append(changes, &livekit.SpeakerInfo{Sid: sid, Level: 0, Active: false})
		}
	}
	if len(changes) > 0 {
		for _, q := range members {
			if q.perms.CanSubscribe && q.isStarted() {
				out := make([]*livekit.SpeakerInfo, len(changes))
				for i, c := range changes {
					out[i] = proto.Clone(c).(*livekit.SpeakerInfo)
				}
				q.sig.SendSpeakers(out)
			}
		}
	}
	return now
}

// close removes everyone and stops the worker.
func (r *Room) close(reason livekit.DisconnectReason) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	for _, p := range r.members() {
		r.removeParticipant(p, reason, true)
	}
	close(r.stop)
	<-r.done
	r.log.Info().Msg("room closed")
}

// idleFor reports how long the room has been empty (0 when it is not).
func (r *Room) idleFor(now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.participants) > 0 {
		return 0, r.hadAnyone
	}
	return now.Sub(r.emptySince), r.hadAnyone
}
