package matrix

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/internal/store"
)

// CallGuard removes users from calls when they leave, are kicked from or are
// banned from the Matrix room the call belongs to, and devices whose call
// membership expired (homeservers without delayed events, like Dendrite,
// never end a crashed client's membership). It learns who holds which
// LiveKit identity from the token service (Issued) and what changed in Matrix
// from the application service (Applied).
type CallGuard struct {
	sfu SFU
	ttl time.Duration
	log zerolog.Logger
	now func() time.Time // time.Now; tests set a clock

	mu sync.Mutex
	// issued maps a Matrix room and user to the LiveKit participants the
	// token service admitted them as, with the device each was for.
	issued map[roomUser]map[lkParticipant]issuedToken
	n      int // entries in issued's inner maps
}

type roomUser struct{ roomID, userID string }

type lkParticipant struct{ room, identity string }

// issuedToken is one token the guard remembers.
type issuedToken struct {
	deviceID string
	// expires is when the token can no longer be used to join; its
	// participant may stay connected (and be refreshed) beyond it.
	expires time.Time
}

const (
	// maxIssued bounds the tokens the guard remembers. Each needs a valid
	// OpenID token of a room member, so the bound is reached only by abuse;
	// then the token that expired first is forgotten.
	maxIssued = 100_000
	// TxnRetention is how long appservice transaction IDs are kept. An ID
	// matters only between storing a transaction and the homeserver seeing
	// the answer: a lost answer makes it retry the same ID, with a backoff
	// capped at 512 s in Synapse (synapse/appservice/scheduler.py,
	// _Recoverer._backoff) and 64 s in Dendrite v0.13
	// (appservice/consumers/roomserver.go, backoffAndPause). A week covers
	// any retry by far; an ID older than that will not come back.
	TxnRetention = 7 * 24 * time.Hour
	// pruneInterval is how often the guard forgets tokens and the store
	// forgets transaction IDs.
	pruneInterval = time.Hour
)

// NewCallGuard returns a guard that disconnects through sfu and remembers
// tokens of lifetime ttl (DefaultTokenTTL when zero).
func NewCallGuard(sfu SFU, ttl time.Duration, log zerolog.Logger) *CallGuard {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	return &CallGuard{
		sfu:    sfu,
		ttl:    ttl,
		now:    time.Now,
		log:    log.With().Str("component", "call_guard").Logger(),
		issued: make(map[roomUser]map[lkParticipant]issuedToken),
	}
}

// Issued records that userID's device deviceID was given a token for LiveKit
// room room as identity, for Matrix room roomID. TokenServiceOptions.OnIssued
// takes it.
func (g *CallGuard) Issued(roomID, userID, deviceID, room, identity string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, p := roomUser{roomID, userID}, lkParticipant{room, identity}
	if _, ok := g.issued[k][p]; !ok {
		if g.n >= maxIssued {
			g.evictFirstExpiring()
		}
		g.n++
	}
	if g.issued[k] == nil {
		g.issued[k] = make(map[lkParticipant]issuedToken)
	}
	g.issued[k][p] = issuedToken{deviceID: deviceID, expires: g.now().Add(g.ttl)}
}

// evictFirstExpiring forgets the token that expires first, to stay within
// maxIssued. The caller holds g.mu.
func (g *CallGuard) evictFirstExpiring() {
	var (
		first   time.Time
		firstK  roomUser
		firstP  lkParticipant
		anySeen bool
	)
	for k, ps := range g.issued {
		for p, t := range ps {
			if !anySeen || t.expires.Before(first) {
				first, firstK, firstP, anySeen = t.expires, k, p, true
			}
		}
	}
	if anySeen {
		g.log.Warn().Str("room", firstP.room).Str("identity", firstP.identity).Msg("too many issued tokens tracked; forgetting one")
		g.forget(firstK, firstP)
	}
}

// forget drops one entry. The caller holds g.mu.
func (g *CallGuard) forget(k roomUser, p lkParticipant) {
	if _, ok := g.issued[k][p]; !ok {
		return
	}
	delete(g.issued[k], p)
	g.n--
	if len(g.issued[k]) == 0 {
		delete(g.issued, k)
	}
}

// Prune forgets the tokens that expired before now and whose participant is
// no longer connected: such a token can neither admit anyone nor name
// someone to disconnect. A participant still connected keeps its entry
// however old its token, so that leaving the Matrix room still ends its
// call. Without a ParticipantChecker, expired tokens are kept (maxIssued
// bounds them).
func (g *CallGuard) Prune(now time.Time) {
	pc, ok := g.sfu.(ParticipantChecker)
	if !ok {
		return
	}
	type entry struct {
		k roomUser
		p lkParticipant
		t issuedToken
	}
	var expired []entry
	g.mu.Lock()
	for k, ps := range g.issued {
		for p, t := range ps {
			if t.expires.Before(now) {
				expired = append(expired, entry{k, p, t})
			}
		}
	}
	g.mu.Unlock()
	// The SFU takes its own locks: asked outside g.mu.
	gone := expired[:0]
	for _, e := range expired {
		if !pc.HasParticipant(e.p.room, e.p.identity) {
			gone = append(gone, e)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range gone {
		if g.issued[e.k][e.p] == e.t { // not issued again meanwhile
			g.forget(e.k, e.p)
		}
	}
}

// Applied disconnects every participant of a user whose membership of the
// room became anything but "join" (leave, kick, ban) in fx.
// AppServiceOptions.OnApplied takes it.
func (g *CallGuard) Applied(ctx context.Context, fx TxnEffects) {
	var gone []lkParticipant
	g.mu.Lock()
	for _, m := range fx.Memberships {
		if m.Membership == "join" {
			continue
		}
		k := roomUser{m.RoomID, m.UserID}
		for p := range g.issued[k] {
			gone = append(gone, p)
		}
		g.n -= len(g.issued[k])
		delete(g.issued, k)
	}
	g.mu.Unlock()
	g.remove(ctx, gone, "left the Matrix room")
}

// Expired disconnects the devices whose call memberships ended by expiry:
// the legacy identity "@user:server:DEVICE" in the room's legacy LiveKit
// room, and whatever else the token service admitted for that device.
func (g *CallGuard) Expired(ctx context.Context, members []store.MatrixCallMember) {
	set := make(map[lkParticipant]struct{})
	g.mu.Lock()
	for _, m := range members {
		set[lkParticipant{RoomAlias(m.RoomID, LegacySlotID), LegacyIdentity(m.UserID, m.DeviceID)}] = struct{}{}
		k := roomUser{m.RoomID, m.UserID}
		for p, t := range g.issued[k] {
			if t.deviceID == m.DeviceID {
				g.forget(k, p)
				set[p] = struct{}{}
			}
		}
	}
	g.mu.Unlock()
	gone := make([]lkParticipant, 0, len(set))
	for p := range set {
		gone = append(gone, p)
	}
	g.remove(ctx, gone, "call membership expired")
}

// ExpiredSource ends expired call memberships; *store.Store implements it.
type ExpiredSource interface {
	EndExpiredMatrixCallMembers(ctx context.Context, now time.Time) ([]store.MatrixCallMember, error)
}

// TxnPruner forgets old appservice transaction IDs; *store.Store
// implements it.
type TxnPruner interface {
	PruneAppserviceTxns(ctx context.Context, before time.Time) (int64, error)
}

// RunExpiry is the bridge's housekeeping loop: it ends expired call
// memberships every interval, and every pruneInterval (and once at start)
// forgets expired tokens (Prune) and, when src is also a TxnPruner,
// transaction IDs older than TxnRetention, until ctx is done. The caller
// owns the goroutine it runs in.
func (g *CallGuard) RunExpiry(ctx context.Context, src ExpiredSource, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	txns, _ := src.(TxnPruner)
	lastPrune := g.now()
	g.prune(ctx, txns, lastPrune)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(lastPrune) >= pruneInterval {
				g.prune(ctx, txns, now)
				lastPrune = now
			}
			ended, err := src.EndExpiredMatrixCallMembers(ctx, now)
			if err != nil {
				g.log.Warn().Err(err).Msg("end expired call memberships")
				continue
			}
			if len(ended) > 0 {
				g.Expired(ctx, ended)
			}
		}
	}
}

// prune runs Prune and forgets old transaction IDs when txns is set.
func (g *CallGuard) prune(ctx context.Context, txns TxnPruner, now time.Time) {
	g.Prune(now)
	if txns == nil {
		return
	}
	n, err := txns.PruneAppserviceTxns(ctx, now.Add(-TxnRetention))
	if err != nil {
		g.log.Warn().Err(err).Msg("prune appservice transaction ids")
		return
	}
	if n > 0 {
		g.log.Debug().Int64("txns", n).Msg("old appservice transaction ids forgotten")
	}
}

// remove disconnects outside the lock: the SFU may take its own locks.
func (g *CallGuard) remove(ctx context.Context, gone []lkParticipant, why string) {
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		log = &g.log
	}
	for _, p := range gone {
		if err := g.sfu.RemoveParticipant(p.room, p.identity); err != nil {
			log.Warn().Err(err).Str("room", p.room).Str("identity", p.identity).Str("reason", why).Msg("remove participant")
			continue
		}
		log.Info().Str("room", p.room).Str("identity", p.identity).Str("reason", why).Msg("removed participant")
	}
}
