package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"entente.dev/entente/media"
)

// Call is a Matrix call that may span nodes: a room whose MatrixRTC
// session has members now.
type Call struct {
	RoomID string
	// MediaRoom is the call's media room name, the same on every node
	// (bridge/matrix.RoomAlias of the room and slot): the trunk's conf_id.
	MediaRoom string
	// Servers are the server names of the call's members.
	Servers []string
}

// Calls is what the node knows of Matrix (bridge/matrix and the store,
// wired by cmd).
type Calls interface {
	// ActiveCalls returns the calls that have members now.
	ActiveCalls(ctx context.Context) ([]Call, error)
	// Joined reports whether userID is joined to roomID now.
	Joined(ctx context.Context, roomID, userID string) (bool, error)
}

// Signal sends to-device messages from this node's bot device.
type Signal interface {
	SendToDevice(ctx context.Context, userID, deviceID, eventType string, content any) error
}

// ToDevice is a to-device message the bot's device received.
type ToDevice struct {
	Sender, Type string
	Content      json.RawMessage
}

const (
	// reconcileEvery is how often the node compares the calls with its links.
	reconcileEvery = time.Second
	// lingerFor keeps a link whose call no longer spans both nodes, in
	// case the condition comes back (a member's device rejoining).
	lingerFor = 10 * time.Second
	// retryAfter is how long the offerer waits after a link failed.
	retryAfter = 3 * time.Second
	// requestAfter is how long the answering node waits for an offer
	// before asking for one (EventTrunkRequest), and then between asks.
	requestAfter = 2 * time.Second
	// inboxSize bounds the to-device messages waiting for the node.
	inboxSize = 256
	// sendTimeout bounds one to-device send.
	sendTimeout = 10 * time.Second
)

var errReplaced = errors.New("replaced by a new trunk")

// Node is this node's side of every trunk with its peers.
type Node struct {
	cfg      Config
	sfu      *media.SFU
	calls    Calls
	signal   Signal
	newConn  NewConn
	frontEnd FrontEndCodec
	log      zerolog.Logger
	session  string
	inbox    chan ToDevice
	issuer   TokenIssuer
	audit    AuditLog
	// auditEvery is how often a trunk's audit record gets its counts
	// (auditEvery the constant; tests shorten it).
	auditEvery time.Duration

	mu     sync.Mutex
	links  map[string]*link     // by linkKey
	failed map[string]time.Time // when a link last ended, by linkKey
	gone   map[string]time.Time // since when a link's call no longer spans both nodes
	// unlinked is since when a call that spans this node and a peer that
	// offers to it has had no link, and asked when this node last asked
	// for one, by linkKey.
	unlinked, asked map[string]time.Time
	// pending are the token requests forwarded to peers, by req_id.
	pending map[string]pendingToken
	// outLimits and inLimits bound the token requests sent to and taken
	// from each peer.
	outLimits, inLimits map[string]*rate.Limiter
	wg                  sync.WaitGroup
}

// New returns a node; Run serves it.
func New(cfg Config, sfu *media.SFU, calls Calls, signal Signal, newConn NewConn, frontEnd FrontEndCodec, log zerolog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Node{
		cfg: cfg, sfu: sfu, calls: calls, signal: signal, newConn: newConn, frontEnd: frontEnd,
		log: log.With().Str("component", "federation").Logger(), session: hex.EncodeToString(b[:]),
		inbox: make(chan ToDevice, inboxSize), links: map[string]*link{}, failed: map[string]time.Time{}, gone: map[string]time.Time{},
		unlinked: map[string]time.Time{}, asked: map[string]time.Time{},
		pending: map[string]pendingToken{}, outLimits: map[string]*rate.Limiter{}, inLimits: map[string]*rate.Limiter{},
		auditEvery: auditEvery,
	}, nil
}

// redirects reports whether links with peer carry two room pairs
// (Config.Redirects).
func (n *Node) redirects(peer string) bool { return n.cfg.Redirects(peer) }

func linkKey(peer, mediaRoom string) string { return peer + "\x00" + mediaRoom }

// offers reports whether this node offers to peer: the one whose bot's
// user ID sorts lower does (MSC3401's rule for a full mesh), so two nodes
// never both offer.
func (n *Node) offers(peer string) bool { return n.cfg.Bot < n.cfg.Peers[peer].Bot }

// HandleToDevice takes a to-device message the bot received; it never
// blocks (a full inbox drops it: the offerer retries).
func (n *Node) HandleToDevice(m ToDevice) {
	select {
	case n.inbox <- m:
	default:
		n.log.Warn().Str("sender", m.Sender).Str("type", m.Type).Msg("federation inbox full: message dropped")
	}
}

// Links describes the node's trunks.
func (n *Node) Links() []LinkInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]LinkInfo, 0, len(n.links))
	for _, l := range n.links {
		out = append(out, l.snapshot())
	}
	slices.SortFunc(out, func(a, b LinkInfo) int { return cmpString(a.Peer+a.MediaRoom, b.Peer+b.MediaRoom) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Run links and unlinks until ctx is done, then ends every trunk and
// returns once their goroutines have stopped.
func (n *Node) Run(ctx context.Context) error {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	n.log.Info().Int("peers", len(n.cfg.Peers)).Msg("federation running")
	for {
		select {
		case <-ctx.Done():
			n.closeAll()
			return nil
		case m := <-n.inbox:
			n.receive(ctx, m)
		case <-tick.C:
			n.reconcile(ctx)
		}
	}
}

func (n *Node) closeAll() {
	n.mu.Lock()
	for _, l := range n.links {
		l.end(errClosing)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// start runs a new link; it replaces any link for the same peer and call.
func (n *Node) start(l *link, first *callContent) {
	key := linkKey(l.peer, l.call.MediaRoom)
	n.mu.Lock()
	old := n.links[key]
	n.links[key] = l
	delete(n.gone, key)
	n.mu.Unlock()
	if old != nil {
		old.end(errReplaced)
		<-old.done
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		l.run(first)
		n.mu.Lock()
		if n.links[key] == l {
			delete(n.links, key)
			if !l.reoffer {
				n.failed[key] = time.Now()
			}
		}
		n.mu.Unlock()
	}()
}

// reconcile makes the links this node offers for calls that span it and
// a peer, and ends links whose call has stopped spanning both.
func (n *Node) reconcile(ctx context.Context) {
	calls, err := n.calls.ActiveCalls(ctx)
	if err != nil {
		n.log.Warn().Err(err).Msg("federation: active calls")
		return
	}
	now := time.Now()
	spans := map[string]bool{}
	for _, c := range calls {
		if !slices.Contains(c.Servers, n.cfg.ServerName) {
			continue
		}
		for _, peer := range c.Servers {
			if _, ok := n.cfg.Peers[peer]; !ok {
				continue // off the allow-list (or our own server): never linked
			}
			key := linkKey(peer, c.MediaRoom)
			spans[key] = true
			if !n.offers(peer) {
				n.maybeAsk(ctx, peer, c, key, now)
				continue
			}
			n.mu.Lock()
			_, linked := n.links[key]
			recent := now.Sub(n.failed[key]) < retryAfter
			n.mu.Unlock()
			if linked || recent {
				continue
			}
			if err := n.bothJoined(ctx, c.RoomID, peer); err != nil {
				n.log.Debug().Err(err).Str("peer", peer).Str("room_id", c.RoomID).Msg("no trunk")
				n.mu.Lock()
				n.failed[key] = now
				n.mu.Unlock()
				continue
			}
			l := newLink(n, peer, c, newCallID(), true)
			l.log.Info().Msg("federation trunk offered")
			n.start(l, nil)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for key := range n.unlinked {
		if !spans[key] {
			delete(n.unlinked, key)
			delete(n.asked, key)
		}
	}
	for key, l := range n.links {
		if spans[key] {
			delete(n.gone, key)
			continue
		}
		since, ok := n.gone[key]
		if !ok {
			n.gone[key] = now
		} else if now.Sub(since) > lingerFor {
			l.end(errGone)
			delete(n.gone, key)
		}
	}
}

// maybeAsk asks peer, which offers to this node, for a trunk for call c
// when none has come for requestAfter (this node started, or restarted
// while the peer's old trunk still waits for it; the peer's trunk ended;
// the invite was lost), and again every requestAfter until one comes.
func (n *Node) maybeAsk(ctx context.Context, peer string, c Call, key string, now time.Time) {
	n.mu.Lock()
	if _, linked := n.links[key]; linked {
		delete(n.unlinked, key)
		n.mu.Unlock()
		return
	}
	since, ok := n.unlinked[key]
	if !ok {
		n.unlinked[key] = now
		n.mu.Unlock()
		return
	}
	due := now.Sub(since) >= requestAfter && now.Sub(n.asked[key]) >= requestAfter
	if due {
		n.asked[key] = now
	}
	n.mu.Unlock()
	if !due {
		return
	}
	if err := n.bothJoined(ctx, c.RoomID, peer); err != nil {
		return
	}
	n.log.Info().Str("peer", peer).Str("room_id", c.RoomID).Str("media_room", c.MediaRoom).Msg("federation: asking the peer for a trunk")
	n.send(ctx, peer, EventTrunkRequest, &callContent{CallID: newCallID(), ConfID: c.MediaRoom,
		Trunk: &trunkInfo{Version: 1, RoomID: c.RoomID, TS: now.UnixMilli()}})
}

// trunkRequested takes a peer's request for a trunk (EventTrunkRequest):
// a link of this node's for that call with another session of the peer's,
// or not up, is replaced at once; none waits for the next reconcile.
func (n *Node) trunkRequested(peer string, c *callContent) {
	if !n.offers(peer) {
		n.log.Debug().Str("peer", peer).Msg("federation: trunk request from a peer this node does not offer to")
		return
	}
	key := linkKey(peer, c.ConfID)
	n.mu.Lock()
	l := n.links[key]
	delete(n.failed, key)
	n.mu.Unlock()
	if l == nil {
		return // the next reconcile offers, if the call spans both nodes
	}
	l.post(func() {
		switch {
		case l.up && !l.interrupted && l.peerSession == c.SenderSessionID:
			return // a request that crossed our invite
		case !l.up && time.Since(l.since) < setUpTimeout/3:
			return // being set up: the request crossed the invite
		}
		l.reoffer = true
		l.end(fmt.Errorf("%w: the peer asked for a new trunk (session %s)", errReplaced, c.SenderSessionID))
	})
}

// bothJoined checks that both bots are in the room.
func (n *Node) bothJoined(ctx context.Context, roomID, peer string) error {
	for _, bot := range []string{n.cfg.Bot, n.cfg.Peers[peer].Bot} {
		ok, err := n.calls.Joined(ctx, roomID, bot)
		if err != nil {
			return fmt.Errorf("membership of %s: %w", bot, err)
		}
		if !ok {
			return fmt.Errorf("%s is not in the room", bot)
		}
	}
	return nil
}

func newCallID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// receive handles one to-device message: only from a peer's own bot.
func (n *Node) receive(ctx context.Context, m ToDevice) {
	peer := serverOf(m.Sender)
	cfg, ok := n.cfg.Peers[peer]
	if !ok || cfg.Bot != m.Sender {
		n.log.Warn().Str("sender", m.Sender).Str("type", m.Type).Msg("federation: message from a server or user not on the peer list refused")
		return
	}
	switch m.Type {
	case EventTokenRequest:
		n.tokenRequested(ctx, peer, m.Content)
		return
	case EventTokenResponse:
		n.tokenAnswered(peer, m.Content)
		return
	}
	c, err := parseCall(m.Type, m.Content, time.Now())
	if err != nil {
		n.log.Warn().Err(err).Str("peer", peer).Msg("federation: bad call signalling")
		return
	}
	switch m.Type {
	case EventInvite:
		n.invited(ctx, peer, c)
		return
	case EventTrunkRequest:
		n.trunkRequested(peer, c)
		return
	}
	n.mu.Lock()
	l := n.links[linkKey(peer, c.ConfID)]
	n.mu.Unlock()
	if l == nil || l.callID != c.CallID {
		n.log.Debug().Str("peer", peer).Str("type", m.Type).Str("call_id", c.CallID).Msg("federation: signalling for no current trunk")
		return
	}
	switch m.Type {
	case EventAnswer:
		l.post(func() {
			if !l.offerer || l.peerSession != "" {
				return
			}
			l.peerSession = c.SenderSessionID
			if err := l.conn.HandleDescription(c.Answer.Type, c.Answer.SDP); err != nil {
				l.end(fmt.Errorf("answer: %w", err))
			}
		})
	case EventCandidates:
		l.post(func() {
			for _, x := range c.Candidates {
				if err := l.conn.HandleCandidate(x.Candidate, x.SDPMid, x.SDPMLineIndex); err != nil {
					l.log.Debug().Err(err).Msg("peer's candidate")
				}
			}
		})
	case EventHangup:
		l.end(fmt.Errorf("%w: %s", errHungUp, c.Reason))
	}
}

// invited answers a peer's invite when the call spans both nodes and
// both bots are in its room; otherwise it refuses it, and says why.
func (n *Node) invited(ctx context.Context, peer string, c *callContent) {
	refuse := func(why error) {
		log := n.log.With().Str("peer", peer).Str("room_id", c.Trunk.RoomID).Str("media_room", c.ConfID).Logger()
		log.Warn().Err(why).Msg("federation trunk refused")
		rec := n.openAudit(ctx, AuditEntry{Kind: AuditTrunk, Role: RoleAnswerer, Peer: peer, RoomID: c.Trunk.RoomID,
			MediaRoom: c.ConfID, CallID: c.CallID}, log)
		rec.close(ctx, 0, 0, "refused: "+why.Error())
		n.reply(ctx, peer, c, EventHangup, &callContent{Reason: reasonRefused})
	}
	if n.offers(peer) {
		refuse(errors.New("this node offers to that peer, not the other way round"))
		return
	}
	calls, err := n.calls.ActiveCalls(ctx)
	if err != nil {
		refuse(err)
		return
	}
	var call *Call
	for i := range calls {
		if calls[i].RoomID == c.Trunk.RoomID && calls[i].MediaRoom == c.ConfID {
			call = &calls[i]
		}
	}
	switch {
	case call == nil:
		refuse(errors.New("no call in that room here"))
		return
	case !slices.Contains(call.Servers, peer) || !slices.Contains(call.Servers, n.cfg.ServerName):
		refuse(errors.New("the call has no members of both servers"))
		return
	}
	if err := n.bothJoined(ctx, call.RoomID, peer); err != nil {
		refuse(err)
		return
	}
	l := newLink(n, peer, *call, c.CallID, false)
	l.log.Info().Msg("federation trunk answered")
	n.start(l, c)
}

// sendCall sends one m.call.* message of l to its peer.
func (n *Node) sendCall(ctx context.Context, l *link, event string, content *callContent) {
	content.CallID, content.ConfID = l.callID, l.call.MediaRoom
	content.DestSessionID = l.peerSession
	n.send(ctx, l.peer, event, content)
}

// reply answers a message that made no link.
func (n *Node) reply(ctx context.Context, peer string, to *callContent, event string, content *callContent) {
	content.CallID, content.ConfID, content.DestSessionID = to.CallID, to.ConfID, to.SenderSessionID
	n.send(ctx, peer, event, content)
}

func (n *Node) send(ctx context.Context, peer, event string, content *callContent) {
	cfg := n.cfg.Peers[peer]
	content.PartyID, content.Version, content.DeviceID = n.cfg.Device, "1", n.cfg.Device
	content.SenderSessionID = n.session
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
	defer cancel()
	if err := n.signal.SendToDevice(ctx, cfg.Bot, cfg.Device, event, content); err != nil {
		n.log.Warn().Err(err).Str("peer", peer).Str("type", event).Msg("federation: call signalling not sent")
	}
}
