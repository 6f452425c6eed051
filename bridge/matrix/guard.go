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
	log zerolog.Logger

	mu sync.Mutex
	// issued maps a Matrix room and user to the LiveKit participants the
	// token service admitted them as, with the device each was for.
	issued map[roomUser]map[lkParticipant]string
}

type roomUser struct{ roomID, userID string }

type lkParticipant struct{ room, identity string }

// NewCallGuard returns a guard that disconnects through sfu.
func NewCallGuard(sfu SFU, log zerolog.Logger) *CallGuard {
	return &CallGuard{
		sfu:    sfu,
		log:    log.With().Str("component", "call_guard").Logger(),
		issued: make(map[roomUser]map[lkParticipant]string),
	}
}

// Issued records that userID's device deviceID was given a token for LiveKit
// room room as identity, for Matrix room roomID. TokenServiceOptions.OnIssued
// takes it.
func (g *CallGuard) Issued(roomID, userID, deviceID, room, identity string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := roomUser{roomID, userID}
	if g.issued[k] == nil {
		g.issued[k] = make(map[lkParticipant]string)
	}
	g.issued[k][lkParticipant{room, identity}] = deviceID
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
		for p, dev := range g.issued[k] {
			if dev == m.DeviceID {
				delete(g.issued[k], p)
				set[p] = struct{}{}
			}
		}
		if len(g.issued[k]) == 0 {
			delete(g.issued, k)
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

// RunExpiry ends expired call memberships every interval until ctx is done.
// The caller owns the goroutine it runs in.
func (g *CallGuard) RunExpiry(ctx context.Context, src ExpiredSource, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
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
