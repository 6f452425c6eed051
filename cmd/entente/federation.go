package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/federation"
	"entente.dev/entente/internal/config"
	"entente.dev/entente/internal/store"
	"entente.dev/entente/media"
	"entente.dev/entente/media/livekit"
	"entente.dev/entente/media/rtc"
)

// newFederation assembles the node's links with its peers from
// [federation]: the bridge's bot carries their signalling, the store's
// call memberships say which calls span which servers, and the WebRTC
// engine makes the trunks.
func newFederation(cfg *config.Config, bridge *matrix.Bridge, st *store.Store, sfu *media.SFU, eng *rtc.Engine,
	log zerolog.Logger,
) (*federation.Node, error) {
	fc := federation.Config{ServerName: cfg.Matrix.ServerName, Bot: bridge.BotUserID(), Device: matrix.BotDeviceID,
		ServiceURL: bridge.ServiceURL(), Peers: map[string]federation.Peer{}}
	for name, p := range cfg.Federation.Peers {
		fc.Peers[name] = federation.Peer{Bot: p.Bot, Device: p.Device, URL: p.URL}
	}
	newConn := func(offerer bool, ev federation.ConnEvents, log zerolog.Logger) (federation.Conn, error) {
		return eng.NewTrunk(offerer, ev, log)
	}
	node, err := federation.New(fc, sfu, federationCalls{st: st, bridge: bridge}, bridge.BotSync(), newConn,
		livekit.FrontEndCodec{}, log.With().Str("component", "federation").Logger())
	if err != nil {
		return nil, err
	}
	// Peers' users asking this node's token service are forwarded to
	// their nodes (tokenForwarder); peers forward this node's users here.
	node.SetTokenIssuer(bridge.Tokens())
	node.SetAuditLog(auditLog{st: st})
	return node, nil
}

// tokenForwarder is the federation node as the token service's
// TokenForwarder, once there is one (the bridge is made first).
type tokenForwarder struct{ node **federation.Node }

func (f tokenForwarder) Forwards(server string) bool {
	n := *f.node
	return n != nil && n.Forwards(server)
}

func (f tokenForwarder) Forward(ctx context.Context, server, endpoint string, body []byte, roomID, mediaRoom string) (int, []byte, error) {
	n := *f.node
	if n == nil {
		return 0, nil, federation.ErrNotForwarded
	}
	return n.ForwardToken(ctx, server, endpoint, body, roomID, mediaRoom)
}

// The token service answers the peers' forwarded requests.
var _ federation.TokenIssuer = (*matrix.TokenService)(nil)

// toDeviceForFederation hands the bot's to-device messages to the
// federation node once there is one.
func toDeviceForFederation(node **federation.Node) func(matrix.ToDeviceEvent) {
	return func(ev matrix.ToDeviceEvent) {
		if n := *node; n != nil {
			n.HandleToDevice(federation.ToDevice{Sender: ev.Sender, Type: ev.Type, Content: ev.Content})
		}
	}
}

// federationCalls reads the calls that may span nodes from the call
// memberships the bridge stored.
type federationCalls struct {
	st     *store.Store
	bridge *matrix.Bridge
}

func (c federationCalls) ActiveCalls(ctx context.Context) ([]federation.Call, error) {
	rooms, err := c.st.MatrixCallRooms(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]federation.Call, 0, len(rooms))
	for _, room := range rooms {
		members, err := c.st.MatrixCallMembers(ctx, room)
		if err != nil {
			return nil, err
		}
		call := federation.Call{RoomID: room, MediaRoom: matrix.RoomAlias(room, matrix.LegacySlotID)}
		for _, m := range members {
			if !m.ExpiresAt.IsZero() && !m.ExpiresAt.After(now) {
				continue
			}
			if _, server, ok := strings.Cut(m.UserID, ":"); ok && !slices.Contains(call.Servers, server) {
				call.Servers = append(call.Servers, server)
			}
		}
		if len(call.Servers) > 0 {
			out = append(out, call)
		}
	}
	return out, nil
}

func (c federationCalls) Joined(ctx context.Context, roomID, userID string) (bool, error) {
	return c.bridge.IsJoined(ctx, roomID, userID)
}

// federationLinks serves the node's trunks as JSON, on the debug listener.
func federationLinks(node *federation.Node) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"trunks": node.Links()})
	}
}
