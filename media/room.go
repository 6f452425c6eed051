package media

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"
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

// Room is one conference: its participants and what they publish.
//
// One goroutine owns it (run): joins, leaves, publications, subscriptions,
// negotiation triggers, mutes and metadata are applied there one at a time,
// in the order they were asked for, and announced after they are applied.
// Front ends wait for what they ask (do); transports do not (post). The
// room's goroutine never waits for a participant or a transport: it calls
// only what returns at once (Signaller and Transport methods), and a
// removed participant's transport is closed on a goroutine of its own. The
// packet path does not go through it.
type Room struct {
	sfu       *SFU
	name      string
	sid       string
	log       zerolog.Logger
	createdAt time.Time
	sif       []byte

	// The queue of operations for the room's goroutine. It never blocks
	// who posts: transports post from their own goroutines, and the room's
	// goroutine may post to itself (a track that ends as it starts).
	qmu   sync.Mutex
	queue []func()
	wake  chan struct{}

	// mu guards what is read outside the room's goroutine (occupancy
	// checks, data relay); the room's goroutine alone writes it.
	mu           sync.Mutex
	participants map[string]*Participant // by identity
	hadAnyone    bool
	emptySince   time.Time

	// The room's goroutine only: closed, and the participants speaking now
	// (by sid, with their level), as last announced.
	closed   bool
	speaking map[string]float32
	// quality is the last connection quality assessment, by sid.
	quality map[string]ConnQualityInfo

	// closers are the goroutines closing removed participants' transports.
	closers  sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func newRoom(s *SFU, name string) *Room {
	r := &Room{
		sfu: s, name: name, sid: newID("RM_"), createdAt: time.Now(),
		participants: map[string]*Participant{}, emptySince: time.Now(), speaking: map[string]float32{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
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

// post queues f for the room's goroutine and returns at once. What is
// posted after the room closed is never run.
func (r *Room) post(f func()) {
	select {
	case <-r.done:
		return // nobody would run it; a closed room's queue must not grow
	default:
	}
	r.qmu.Lock()
	r.queue = append(r.queue, f)
	r.qmu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// do runs f on the room's goroutine and returns once it ran. ctx bounds
// only the wait for the room to take it: once taken, f runs to its end
// (it never waits), so what it writes is the caller's to read. It returns
// ErrRoomClosed when the room closed first. It must not be called from
// the room's goroutine.
func (r *Room) do(ctx context.Context, f func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ran := make(chan struct{})
	r.post(func() {
		f()
		close(ran)
	})
	select {
	case <-ran:
		return nil
	case <-r.done:
		select {
		case <-ran:
			return nil
		default:
			return ErrRoomClosed
		}
	}
}

// run is the room's goroutine: the queued operations, and every
// speakerInterval the speakers, sender reports and layer upkeep. It stops
// when the room closes.
func (r *Room) run() {
	defer close(r.done)
	t := time.NewTicker(speakerInterval)
	defer t.Stop()
	for tick := 1; ; {
		select {
		case <-r.stop:
			return
		case <-r.wake:
			r.qmu.Lock()
			ops := r.queue
			r.queue = nil
			r.qmu.Unlock()
			for _, f := range ops {
				f()
			}
		case <-t.C:
			r.speaking = r.updateSpeakers(r.speaking)
			if tick%reportEvery == 0 {
				r.sendReports(time.Now())
			}
			if tick%qualityEvery == 0 {
				r.quality = r.updateQuality(r.quality)
			}
			tick++
			for _, q := range r.participants {
				for _, d := range q.downs {
					if d.up.kind == KindVideo {
						d.retarget()
					}
				}
			}
		}
	}
}

// info is the room for signalling. Room goroutine only.
func (r *Room) info() *RoomInfo {
	return &RoomInfo{
		Sid: r.sid, Name: r.name, CreatedAt: r.createdAt, EmptyTimeout: r.sfu.cfg.EmptyTimeout,
		MaxParticipants: r.sfu.cfg.MaxParticipants, NumParticipants: len(r.participants),
	}
}

// Join adds a participant and attaches its transport. A participant
// already there with the same identity is evicted (LiveKit's
// DUPLICATE_IDENTITY). The caller sends the join answer, then calls
// Participant.Start. A refused join closes the transport.
func (r *Room) Join(ctx context.Context, jp JoinParams) (*Participant, *JoinInfo, error) {
	if jp.Transport == nil {
		return nil, nil, fmt.Errorf("join %s: no transport", jp.Identity)
	}
	p := newParticipant(r, jp)
	if err := jp.Transport.Attach(p); err != nil {
		jp.Transport.Close()
		return nil, nil, err
	}
	var info *JoinInfo
	var err error
	if derr := r.do(ctx, func() { info, err = r.join(p) }); derr != nil {
		err = derr
	}
	if err != nil {
		jp.Transport.Close()
		return nil, nil, err
	}
	r.sfu.recordJoin(r, p)
	ev := p.log.Info()
	if p.origin != "" {
		ev = ev.Str("origin", p.origin) // a peer node's participant, not a client of this node
	}
	ev.Msg("participant joined")
	return p, info, nil
}

func (r *Room) join(p *Participant) (*JoinInfo, error) {
	if r.closed {
		return nil, ErrRoomClosed
	}
	old := r.participants[p.identity]
	if limit := r.sfu.cfg.MaxParticipants; limit > 0 && old == nil && len(r.participants) >= limit {
		return nil, ErrRoomFull
	}
	if old != nil {
		old.log.Info().Msg("replaced by a new session with the same identity")
		r.remove(old, ReasonDuplicateIdentity, true)
	}
	r.mu.Lock()
	r.participants[p.identity] = p
	r.hadAnyone = true
	r.mu.Unlock()
	info := &JoinInfo{Room: r.info(), Participant: p.info(), SIFTrailer: append([]byte(nil), r.sif...)}
	for _, q := range r.participants {
		if q != p && !q.perms.Hidden {
			info.Others = append(info.Others, q.info())
		}
	}
	return info, nil
}

// remove takes p out of the room, tells the others, and closes its
// transport on a goroutine of its own. Room goroutine only.
func (r *Room) remove(p *Participant, reason DisconnectReason, sendLeave bool) {
	r.mu.Lock()
	if r.participants[p.identity] == p {
		delete(r.participants, p.identity)
		if len(r.participants) == 0 {
			r.emptySince = time.Now()
		}
	}
	r.mu.Unlock()
	if !p.close(reason) {
		return
	}
	if sendLeave {
		action := LeaveDisconnect
		if reason == ReasonServerShutdown {
			// The node is stopping (a restart, an upgrade): the client
			// should join again, which it does once the node is back
			// (LiveKit's LeaveRequest.can_reconnect: "server-restart,
			// clients should attempt full-reconnect sequence").
			action = LeaveReconnect
		}
		p.sig.SendLeave(reason, action)
	}
	r.broadcast(p, false)
	r.closers.Add(1)
	go func() {
		defer r.closers.Done()
		p.transport.Close()
	}()
	r.sfu.recordLeave(p)
	p.log.Info().Str("reason", reason.String()).Msg("participant left")
}

// RemoveParticipant removes the participant with this identity, if
// present, and tells it so.
func (r *Room) RemoveParticipant(identity string, reason DisconnectReason) bool {
	found := false
	_ = r.do(context.Background(), func() {
		if p := r.participants[identity]; p != nil {
			found = true
			r.remove(p, reason, true)
		}
	})
	return found
}

// members returns a snapshot of the participants, for readers outside the
// room's goroutine.
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
// itself when self is set. Hidden participants are announced to nobody
// else. Room goroutine only.
func (r *Room) broadcast(p *Participant, self bool) {
	info := p.info()
	for _, q := range r.participants {
		if q == p && !self {
			continue
		}
		if !q.Started() || (q != p && p.perms.Hidden) {
			continue
		}
		q.sig.SendParticipants([]*ParticipantInfo{info.Clone()})
	}
}

// publishedTracks returns every track published in the room by others
// than except. Room goroutine only.
func (r *Room) publishedTracks(except *Participant) []*UpTrack {
	var out []*UpTrack
	for _, q := range r.participants {
		if q == except {
			continue
		}
		for _, up := range q.published {
			out = append(out, up)
		}
	}
	return out
}

// findTrack is the published track sid. Room goroutine only.
func (r *Room) findTrack(sid string) *UpTrack {
	for _, q := range r.participants {
		if up := q.published[sid]; up != nil {
			return up
		}
	}
	return nil
}

// trackPublished announces a new track (participant update first, then the
// subscriber offers that carry it, so clients know the owner before the
// track: LIVEKIT.md section 3) and subscribes everyone who auto-subscribes.
// Room goroutine only.
func (r *Room) trackPublished(pub *Participant, up *UpTrack) {
	r.broadcast(pub, true)
	for _, q := range r.participants {
		if q != pub && q.autoSubscribe && q.perms.CanSubscribe {
			q.subscribe(up)
			q.negotiate()
		}
	}
}

// trackUnpublished removes a track from every subscriber and, when the
// publisher stays, announces its new state. Room goroutine only.
func (r *Room) trackUnpublished(pub *Participant, up *UpTrack, announce bool) {
	for _, d := range up.downTracks() {
		d.sub.unsubscribe(d.key)
		d.sub.negotiate()
	}
	if announce {
		r.broadcast(pub, true)
	}
}

// relayData forwards one data packet from a participant to the others
// (livekit/livekit participant.go handleReceivedDataMessage): to dests
// only when there are any, never back to the sender. The sender's
// transport has stamped it (media/rtc relayedData). It runs on the
// sender's transport's goroutine, with a snapshot of the members.
func (r *Room) relayData(from *Participant, kind DataKind, data []byte, dests []string) {
	if !from.perms.CanPublishData {
		return
	}
	if len(data) == 0 || len(data) > MaxDataMessage {
		from.log.Debug().Int("bytes", len(data)).Msg("dropping a data packet")
		return
	}
	for _, q := range r.members() {
		if q == from || !q.Started() {
			continue
		}
		if o, ok := q.sig.(DataObserver); ok {
			o.ObserveData(from, kind, data, dests)
			continue
		}
		if len(dests) > 0 && !contains(dests, q.identity) {
			continue
		}
		q.transport.SendData(kind, data)
	}
}

// MaxDataMessage is the largest data packet the room relays: LiveKit's
// limit on a DataPacket.
const MaxDataMessage = 64 * 1024

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sendReports has every transport that can send RTCP sender reports for
// the tracks it receives (SenderReporter), so that the subscriber can
// synchronise a publisher's audio and video. The reports come from here
// rather than from pion's report interceptor, which takes a lock and
// updates counters on every packet and runs a ticker goroutine per
// connection. Room goroutine only.
func (r *Room) sendReports(now time.Time) {
	for _, q := range r.participants {
		if sr, ok := q.transport.(SenderReporter); ok {
			sr.SendSenderReports(now)
		}
	}
}

// updateSpeakers computes who is speaking from the audio level windows and
// sends the changes (LiveKit's SpeakersChanged carries changes only).
func (r *Room) updateSpeakers(prev map[string]float32) map[string]float32 {
	now := make(map[string]float32, len(prev))
	for _, q := range r.participants {
		if q.origin != "" {
			if level := math.Float32frombits(q.remoteLevel.Load()); level > 0 {
				now[q.sid] = level
			}
			continue
		}
		for _, up := range q.published {
			if up.audioLevelID == 0 {
				continue
			}
			loud, minDBov := up.takeLevel()
			if loud >= speakerMinPackets {
				level := float32(math.Pow(10, -float64(minDBov)/20))
				if level > now[q.sid] {
					now[q.sid] = level
				}
			}
		}
	}
	var changes []SpeakerInfo
	for sid, level := range now {
		if _, was := prev[sid]; !was {
			changes = append(changes, SpeakerInfo{Sid: sid, Level: level, Active: true})
		}
	}
	for sid := range prev {
		if _, is := now[sid]; !is {
			changes = append(changes, SpeakerInfo{Sid: sid, Level: 0, Active: false})
		}
	}
	if len(changes) > 0 {
		for _, q := range r.participants {
			if q.perms.CanSubscribe && q.Started() {
				q.sig.SendSpeakers(append([]SpeakerInfo(nil), changes...))
			}
		}
	}
	return now
}

// speakers is who speaks now, for a newcomer: SpeakersChanged carries
// changes only, so someone speaking since before it joined would never be
// announced to it. Room goroutine only.
func (r *Room) speakers() []SpeakerInfo {
	out := make([]SpeakerInfo, 0, len(r.speaking))
	for sid, level := range r.speaking {
		out = append(out, SpeakerInfo{Sid: sid, Level: level, Active: true})
	}
	return out
}

// close removes everyone, stops the room's goroutine and waits until every
// removed participant's transport is closed.
func (r *Room) close(reason DisconnectReason) {
	_ = r.do(context.Background(), func() {
		if r.closed {
			return
		}
		r.closed = true
		for _, p := range r.participants {
			r.remove(p, reason, true)
		}
	})
	r.stopOnce.Do(func() { close(r.stop) })
	<-r.done
	r.closers.Wait()
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
