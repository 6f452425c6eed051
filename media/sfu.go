package media

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// History records rooms and who was in them. internal/store implements it;
// cmd/ wires it. Calls come from the SFU's history worker, never from the
// packet path.
type History interface {
	RoomOpened(ctx context.Context, name, sid string, at time.Time) error
	RoomClosed(ctx context.Context, sid string, at time.Time) error
	ParticipantJoined(ctx context.Context, roomName, roomSID, identity, participantSID string, at time.Time) error
	ParticipantLeft(ctx context.Context, participantSID string, at time.Time) error
}

// HistoryPruner is what a History may also do: delete the records of
// presences that ended before a cutoff. internal/store implements it.
type HistoryPruner interface {
	PruneCallHistory(ctx context.Context, before time.Time) (int64, error)
}

// historyQueue bounds the history events waiting to be written.
const historyQueue = 1024

// historyPruneInterval is how often history older than
// Config.HistoryRetention is deleted.
const historyPruneInterval = time.Hour

// SFU owns the node's rooms. The transports that carry its participants'
// media (media/rtc's WebRTC engine among them) are made and closed by
// whoever wires the node.
type SFU struct {
	cfg     Config
	log     zerolog.Logger
	history History
	hist    chan func(context.Context) error
	// rtxBufs holds packet buffers for answering NACKs (off the packet path).
	rtxBufs sync.Pool

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool

	// retired holds the counts of down tracks that have ended (Stats).
	retired struct{ packets, bytes, nacked, resent atomic.Uint64 }
}

// New makes an SFU with no rooms. Call Run to start its housekeeping,
// Close to stop it.
func New(cfg Config, log zerolog.Logger, history History) *SFU {
	s := &SFU{
		cfg: cfg, log: log, history: history,
		hist: make(chan func(context.Context) error, historyQueue), rooms: map[string]*Room{},
	}
	s.rtxBufs.New = func() any { b := make([]byte, MaxPacketSize); return &b }
	return s
}

// Run closes rooms that stay empty and writes history until ctx ends; then
// it closes every room. ctx is the node's lifecycle context.
func (s *SFU) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prune <-chan time.Time // nil: never
	pruner, _ := s.history.(HistoryPruner)
	if pruner != nil && s.cfg.HistoryRetention > 0 {
		// Once at start, so that a node restarted more often than hourly
		// prunes too, then every historyPruneInterval.
		s.pruneHistory(ctx, pruner, time.Now())
		pt := time.NewTicker(historyPruneInterval)
		defer pt.Stop()
		prune = pt.C
	}
	for {
		select {
		case <-ctx.Done():
			s.Close()
			s.drainHistory(context.WithoutCancel(ctx))
			return nil
		case f := <-s.hist:
			if err := f(ctx); err != nil {
				s.log.Warn().Err(err).Msg("recording call history failed")
			}
		case now := <-t.C:
			s.reap(now)
		case now := <-prune:
			s.pruneHistory(ctx, pruner, now)
		}
	}
}

// pruneHistory deletes the history of presences that ended longer than
// Config.HistoryRetention before now.
func (s *SFU) pruneHistory(ctx context.Context, p HistoryPruner, now time.Time) {
	n, err := p.PruneCallHistory(ctx, now.Add(-s.cfg.HistoryRetention))
	if err != nil {
		s.log.Warn().Err(err).Msg("pruning call history failed")
		return
	}
	if n > 0 {
		s.log.Info().Int64("records", n).Dur("retention", s.cfg.HistoryRetention).Msg("old call history deleted")
	}
}

func (s *SFU) drainHistory(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		select {
		case f := <-s.hist:
			if err := f(ctx); err != nil {
				s.log.Warn().Err(err).Msg("recording call history failed")
			}
		default:
			return
		}
	}
}

// reap closes rooms empty for longer than the empty timeout.
func (s *SFU) reap(now time.Time) {
	s.mu.Lock()
	var idle []*Room
	for name, r := range s.rooms {
		d, had := r.idleFor(now)
		limit := s.cfg.EmptyTimeout
		if had {
			limit = s.cfg.DepartureTimeout
		}
		if d > 0 && d >= limit {
			idle = append(idle, r)
			delete(s.rooms, name)
		}
	}
	s.mu.Unlock()
	for _, r := range idle {
		s.closeRoom(r, ReasonRoomClosed)
	}
}

func (s *SFU) closeRoom(r *Room, reason DisconnectReason) {
	r.close(reason)
	sid := r.sid
	s.record(func(ctx context.Context) error { return s.history.RoomClosed(ctx, sid, time.Now()) })
}

// Room returns the named room, creating it when create is set and the
// configuration allows it.
func (s *SFU) Room(name string, create bool) (*Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if r := s.rooms[name]; r != nil {
		return r, nil
	}
	if !create || !s.cfg.AutoCreate {
		return nil, ErrRoomNotFound
	}
	r := newRoom(s, name)
	s.rooms[name] = r
	sid, at := r.sid, r.createdAt
	s.record(func(ctx context.Context) error { return s.history.RoomOpened(ctx, name, sid, at) })
	r.log.Info().Msg("room created")
	return r, nil
}

// CreateRoom creates the named room if it does not exist, whatever
// AutoCreate says (for services that pre-create rooms).
func (s *SFU) CreateRoom(name string) (*Room, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if r := s.rooms[name]; r != nil {
		s.mu.Unlock()
		return r, nil
	}
	r := newRoom(s, name)
	s.rooms[name] = r
	s.mu.Unlock()
	sid, at := r.sid, r.createdAt
	s.record(func(ctx context.Context) error { return s.history.RoomOpened(ctx, name, sid, at) })
	return r, nil
}

// AutoCreate reports whether valid tokens may create the rooms they name.
func (s *SFU) AutoCreate() bool { return s.cfg.AutoCreate }

// RoomExists reports whether a room with this name is open.
func (s *SFU) RoomExists(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[name] != nil
}

// RoomFull reports whether identity would be refused from the named room
// for its participant limit: the room exists, holds Config.MaxParticipants
// and identity is not one of them (a participant joining again replaces
// itself).
func (s *SFU) RoomFull(room, identity string) bool {
	limit := s.cfg.MaxParticipants
	if limit <= 0 {
		return false
	}
	n, present, ok := s.occupancy(room, identity)
	return ok && !present && n >= limit
}

// HasParticipant reports whether identity is in the named room.
func (s *SFU) HasParticipant(room, identity string) bool {
	_, present, _ := s.occupancy(room, identity)
	return present
}

// occupancy reads, under the room's lock, how many participants the named
// room holds and whether identity is one of them; ok is false when there
// is no such room.
func (s *SFU) occupancy(room, identity string) (n int, present, ok bool) {
	s.mu.Lock()
	r := s.rooms[room]
	s.mu.Unlock()
	if r == nil {
		return 0, false, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.participants), r.participants[identity] != nil, true
}

// RemoveParticipant removes identity from the named room.
func (s *SFU) RemoveParticipant(room, identity string, reason DisconnectReason) bool {
	s.mu.Lock()
	r := s.rooms[room]
	s.mu.Unlock()
	return r != nil && r.RemoveParticipant(identity, reason)
}

// Close closes every room. It is safe to call twice.
func (s *SFU) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.rooms = map[string]*Room{}
	s.mu.Unlock()
	for _, r := range rooms {
		s.closeRoom(r, ReasonServerShutdown)
	}
}

func (s *SFU) recordJoin(r *Room, p *Participant) {
	name, rsid, id, psid, at := r.name, r.sid, p.identity, p.sid, p.joinedAt
	s.record(func(ctx context.Context) error { return s.history.ParticipantJoined(ctx, name, rsid, id, psid, at) })
}

func (s *SFU) recordLeave(p *Participant) {
	psid := p.sid
	s.record(func(ctx context.Context) error { return s.history.ParticipantLeft(ctx, psid, time.Now()) })
}

// record queues a history write; when the queue is full the event is
// dropped and logged rather than stalling a room.
func (s *SFU) record(f func(context.Context) error) {
	if s.history == nil {
		return
	}
	select {
	case s.hist <- f:
	default:
		s.log.Warn().Msg("call history queue full, dropping an event")
	}
}
