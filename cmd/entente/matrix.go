package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/internal/config"
	"entente.dev/entente/media"
	lk "entente.dev/entente/media/livekit"
)

// sfuForMatrix adapts the SFU and the token minter to what the Matrix
// token service needs (bridge/matrix.SFU).
type sfuForMatrix struct {
	sfu    *media.SFU
	minter lk.Minter
}

func (a sfuForMatrix) MintToken(room, identity, name string, g matrix.Grant) (string, error) {
	m := a.minter
	if g.TTL > 0 {
		m.TTL = g.TTL
	}
	return m.Mint(room, identity, lk.MintOptions{
		Name: name, CanPublish: g.CanPublish, CanSubscribe: g.CanSubscribe,
		CanPublishData: g.CanPublishData, CanUpdateOwn: g.CanUpdateOwnMetadata, Attributes: g.Attributes,
	})
}

func (a sfuForMatrix) RoomExists(name string) bool { return a.sfu.RoomExists(name) }

func (a sfuForMatrix) EnsureRoom(name string) error {
	_, err := a.sfu.CreateRoom(name)
	return err
}

// The call guard forgets expired tokens of participants who left.
var _ matrix.ParticipantChecker = sfuForMatrix{}

func (a sfuForMatrix) HasParticipant(room, identity string) bool {
	return a.sfu.HasParticipant(room, identity)
}

func (a sfuForMatrix) RemoveParticipant(room, identity string) error {
	a.sfu.RemoveParticipant(room, identity, media.ReasonParticipantRemoved)
	return nil
}

// attrWebGuest marks tokens the join page hands to guests (POST /api/join).
const attrWebGuest = "entente_web_guest"

// webGuestMinter mints the join page's guest tokens, marked as such so
// that admission can keep them out of Matrix calls.
type webGuestMinter struct{ m lk.Minter }

func (w webGuestMinter) MintJoinToken(room, identity, name string) (string, error) {
	return w.m.Mint(room, identity, lk.MintOptions{
		Name: name, RoomCreate: true, CanPublish: true, CanSubscribe: true, CanPublishData: true,
		Attributes: map[string]string{attrWebGuest: "1"},
	})
}

// guestAdmitter refuses the join page's guest tokens when the node does not
// let guests in ([web] guests off, or the page off): a token minted while
// it did stays valid for livekit.token_ttl, across a restart too. Other
// grants go to next, when set.
type guestAdmitter struct {
	webGuests bool
	next      lk.Admitter
}

func (a guestAdmitter) Admit(ctx context.Context, g *lk.Grant) error {
	if g.Attributes[attrWebGuest] != "" && !a.webGuests {
		return fmt.Errorf("%w: guests may not join on this node", lk.ErrNotAdmitted)
	}
	if a.next == nil {
		return nil
	}
	return a.next.Admit(ctx, g)
}

// tokenAdmitter is what admission asks of the bridge: a re-check of the
// tokens it issued (bridge/matrix.Bridge.Admit).
type tokenAdmitter interface {
	Admit(ctx context.Context, attrs map[string]string) error
}

// matrixAdmitter decides at join time (media/livekit.Admitter). A Matrix
// call's LiveKit room is named by a hash only the token service computes,
// but a join-page guest may type any room name: guests of the join page
// never enter a room with a Matrix call's name (meeting guests get their
// tokens from the bridge, which checks its policy). Tokens the bridge
// issued are re-checked against the Matrix room's membership.
type matrixAdmitter struct{ bridge tokenAdmitter }

func (a matrixAdmitter) Admit(ctx context.Context, g *lk.Grant) error {
	if g.Attributes[attrWebGuest] != "" && matrix.IsCallRoomName(g.Room) {
		return fmt.Errorf("%w: join-page guests cannot enter a Matrix room's call; open its !meet link", lk.ErrNotAdmitted)
	}
	return a.bridge.Admit(ctx, g.Attributes)
}

// publicURL is server.public_url, or the URL of the address the node
// listens on.
func publicURL(cfg *config.Config, ln net.Listener) string {
	if cfg.Server.PublicURL != "" {
		return cfg.Server.PublicURL
	}
	return "http://" + ln.Addr().String()
}

// runRegister writes the application service registration the homeserver
// admin installs (bridge/matrix.RegistrationFor).
func runRegister(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente register", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: $"+configEnv+")")
	out := fs.String("out", "", "write the registration here (default: [matrix] registration)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.Matrix == nil {
		return errors.New("the configuration has no [matrix] section: see docs/matrix.md")
	}
	reg, err := matrix.RegistrationFor(cfg.Matrix)
	if err != nil {
		return err
	}
	path := *out
	if path == "" {
		path = cfg.Matrix.Registration
	}
	if path == "" {
		return errors.New("no output file: pass --out or set [matrix] registration")
	}
	if err := reg.Save(path); err != nil {
		return fmt.Errorf("write registration: %w", err)
	}
	fmt.Fprintf(stdout, "Wrote the application service registration to %s.\n"+
		"Install it on the homeserver (docs/matrix.md); it contains secrets.\n", path)
	return nil
}
