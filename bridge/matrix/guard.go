package matrix

import (
	"context"
	"sync"

	"github.com/rs/zerolog"
)

// CallGuard removes users from calls when they leave, are kicked from or are
// banned from the Matrix room the call belongs to. It learns who holds which
// LiveKit identity from the token service (Issued) and what changed in Matrix
// from the application service (Applied).
type CallGuard struct {
	sfu SFU
	log zerolog.Logger

	mu sync.Mutex
	// issued maps a Matrix room and user to the LiveKit participants the
	// token service admitted them as.
	issued map[roomUser]map[lkParticipant]struct{}
}

type roomUser struct{ roomID, userID string }

type lkParticipant struct{ room, identity string }

// NewCallGuard returns a guard that disconnects through sfu.
func NewCallGuard(sfu SFU, log zerolog.Logger) *CallGuard {
	return &CallGuard{
		sfu:    sfu,
		log:    log.With().Str("component", "call_guard").Logger(),
		issued: make(map[roomUser]map[lkParticipant]struct{}),
	}
}

// Issued records that userID was given a token for LiveKit room room as
// identity, for Matrix room roomID. TokenServiceOptions.OnIssued takes it.
func (g *CallGuard) Issued(roomID, userID, room, identity string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := roomUser{roomID, userID}
	if g.issued[k] == nil {
		g.issued[k] = make(map[lkParticipant]struct{})
	}
	g.issued[k][lkParticipant{room, identity}] = struct{}{}
}

// Applied disconnects every participant of a user whose membership of the
// room became anything but "join" (leave, kick, ban) in fx.
// AppServiceOptions.OnApplied takes it.
func (g *CallGuard) Applied(ctx context.Context, fx TxnEffects) {
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		log = &g.log
	}
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
	// Disconnect outside the lock: the SFU may take its own locks.
	for _, p := range gone {
		if err := g.sfu.RemoveParticipant(p.room, p.identity); err != nil {
			log.Warn().Err(err).Str("room", p.room).Str("identity", p.identity).Msg("remove participant who left the Matrix room")
			continue
		}
		log.Info().Str("room", p.room).Str("identity", p.identity).Msg("removed participant who left the Matrix room")
	}
}
