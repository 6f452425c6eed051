package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// Token forwarding, the redirect's node-to-node call (FEDERATION.md, "The
// redirect, exactly"): node B, asked for a token by a user of a peer that
// keeps its own token service URL, sends the request unchanged to the
// peer's bot as an org.entente.token.request to-device message; the peer
// answers org.entente.token.response with the status and body its token
// service would have answered, a token for its mirror room of B's
// transport. Like the call signalling, the messages go bot to bot, so the
// homeservers authenticate both ends.
const (
	EventTokenRequest  = "org.entente.token.request"
	EventTokenResponse = "org.entente.token.response"
)

const (
	// forwardWait is how long the asking node waits for the answer before
	// serving the user itself.
	forwardWait = 5 * time.Second
	// maxTokenBody bounds a forwarded request's body and an answer's.
	maxTokenBody = 16 << 10
	// tokenRate and tokenBurst bound the token requests exchanged with
	// one peer, each way.
	tokenRate  = 20
	tokenBurst = 40
	// maxPending bounds the requests waiting for an answer.
	maxPending = 1024
)

// Token endpoints a request may be forwarded for (bridge/matrix.PathSFUGet
// and PathGetToken).
const (
	EndpointSFUGet   = "/sfu/get"
	EndpointGetToken = "/get_token"
)

// Errors of ForwardToken.
var (
	// ErrNotForwarded: the server is not a peer with a token service URL
	// of its own; the asking node serves the user as it would anyway.
	ErrNotForwarded = errors.New("federation: not a peer that serves its own users")
	// ErrNoAnswer: the peer did not answer in time, or declined; the
	// asking node serves the user itself.
	ErrNoAnswer = errors.New("federation: the peer did not answer the token request")
)

// TokenIssuer answers token requests forwarded by peers
// (bridge/matrix.TokenService.IssueForwarded, wired by cmd): it checks the
// request as its own token service would, for its own users only, and
// issues a token for the mirror room that mirror names from the call's
// media room. It returns the HTTP status and body its token service would
// answer.
type TokenIssuer interface {
	IssueForwarded(ctx context.Context, endpoint string, body []byte, mirror func(mediaRoom string) string) (int, []byte)
}

// tokenRequest is an org.entente.token.request's content.
type tokenRequest struct {
	ReqID    string `json:"req_id"`
	Endpoint string `json:"endpoint"`
	// Body is the client's request body, unchanged.
	Body   string `json:"body"`
	RoomID string `json:"room_id"`
	// ServiceURL is the asking node's token service URL, MediaRoom the
	// call's media room there (R), for the record: the answering node
	// names its mirror room from its own configuration of the peer.
	ServiceURL string `json:"service_url"`
	MediaRoom  string `json:"media_room"`
}

// tokenResponse is an org.entente.token.response's content. Status 0
// declines: the asking node serves the user itself.
type tokenResponse struct {
	ReqID  string `json:"req_id"`
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
}

// parseTokenRequest decodes and bounds a peer's token request.
func parseTokenRequest(raw []byte) (*tokenRequest, error) {
	var r tokenRequest
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", EventTokenRequest, err)
	}
	switch {
	case r.ReqID == "" || len(r.ReqID) > maxIDLength:
		return nil, fmt.Errorf("%s: req_id missing or longer than %d bytes", EventTokenRequest, maxIDLength)
	case len(r.Body) > maxTokenBody:
		return nil, fmt.Errorf("%s: a body of %d bytes, more than %d", EventTokenRequest, len(r.Body), maxTokenBody)
	case len(r.Endpoint) > maxIDLength || len(r.RoomID) > maxIDLength || len(r.MediaRoom) > maxIDLength || len(r.ServiceURL) > 2048:
		return nil, fmt.Errorf("%s: a field over its bound", EventTokenRequest)
	}
	return &r, nil
}

// parseTokenResponse decodes and bounds a peer's token answer.
func parseTokenResponse(raw []byte) (*tokenResponse, error) {
	var r tokenResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", EventTokenResponse, err)
	}
	switch {
	case r.ReqID == "" || len(r.ReqID) > maxIDLength:
		return nil, fmt.Errorf("%s: req_id missing or longer than %d bytes", EventTokenResponse, maxIDLength)
	case len(r.Body) > maxTokenBody:
		return nil, fmt.Errorf("%s: a body of %d bytes, more than %d", EventTokenResponse, len(r.Body), maxTokenBody)
	case r.Status != 0 && (r.Status < 100 || r.Status > 599):
		return nil, fmt.Errorf("%s: status %d", EventTokenResponse, r.Status)
	}
	return &r, nil
}

type tokenAnswer struct {
	status int
	body   []byte
}

// SetTokenIssuer sets what answers the peers' forwarded token requests;
// call it before Run. Without one, forwarded requests are declined.
func (n *Node) SetTokenIssuer(t TokenIssuer) { n.issuer = t }

// Forwards reports whether a token request of a user of server goes to
// that server's node (Config.Redirects).
func (n *Node) Forwards(server string) bool { return n.redirects(server) }

// limiter returns the token request budget of peer, one way.
func (n *Node) limiter(m map[string]*rate.Limiter, peer string) *rate.Limiter {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := m[peer]
	if l == nil {
		l = rate.NewLimiter(tokenRate, tokenBurst)
		m[peer] = l
	}
	return l
}

// ForwardToken sends a token request of a user of server to that
// server's node and returns its answer: the HTTP status and body to give
// the user unchanged. ErrNotForwarded: server is not such a peer;
// ErrNoAnswer: no answer within forwardWait (or ctx's end), or the peer
// declined. roomID and mediaRoom are the Matrix room and the call's media
// room (R) here.
func (n *Node) ForwardToken(ctx context.Context, server, endpoint string, body []byte, roomID, mediaRoom string) (int, []byte, error) {
	if !n.redirects(server) {
		return 0, nil, ErrNotForwarded
	}
	if len(body) > maxTokenBody {
		return 0, nil, fmt.Errorf("%w: a body of %d bytes, more than %d", ErrNoAnswer, len(body), maxTokenBody)
	}
	if !n.limiter(n.outLimits, server).Allow() {
		return 0, nil, fmt.Errorf("%w: too many requests to that peer", ErrNoAnswer)
	}
	req := tokenRequest{ReqID: newCallID(), Endpoint: endpoint, Body: string(body), RoomID: roomID,
		ServiceURL: n.cfg.ServiceURL, MediaRoom: mediaRoom}
	ch := make(chan tokenAnswer, 1)
	n.mu.Lock()
	if len(n.pending) >= maxPending {
		n.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: too many requests waiting", ErrNoAnswer)
	}
	n.pending[req.ReqID] = pendingToken{peer: server, ch: ch}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.pending, req.ReqID)
		n.mu.Unlock()
	}()
	// The record holds the sizes of the request and the answer, never
	// their bodies: they carry an OpenID token and a LiveKit token.
	log := n.log.With().Str("peer", server).Str("room_id", roomID).Str("req_id", req.ReqID).Logger()
	rec := n.openAudit(ctx, AuditEntry{Kind: AuditToken, Role: RoleForwarded, Peer: server, RoomID: roomID,
		MediaRoom: mediaRoom, CallID: req.ReqID}, log)
	ctx, cancel := context.WithTimeout(ctx, forwardWait)
	defer cancel()
	peer := n.cfg.Peers[server]
	if err := n.signal.SendToDevice(ctx, peer.Bot, peer.Device, EventTokenRequest, &req); err != nil {
		rec.close(ctx, 0, 0, "no answer: the request was not sent")
		return 0, nil, fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	select {
	case a := <-ch:
		if a.status == 0 {
			rec.close(ctx, uint64(len(body)), uint64(len(a.body)), "declined by the peer")
			return 0, nil, fmt.Errorf("%w: the peer declined", ErrNoAnswer)
		}
		rec.close(ctx, uint64(len(body)), uint64(len(a.body)), tokenOutcome(a.status))
		return a.status, a.body, nil
	case <-ctx.Done():
		rec.close(ctx, uint64(len(body)), 0, "no answer: "+ctx.Err().Error())
		return 0, nil, fmt.Errorf("%w: %w", ErrNoAnswer, ctx.Err())
	}
}

// pendingToken is a forwarded request waiting for its answer.
type pendingToken struct {
	peer string
	ch   chan tokenAnswer
}

// tokenAnswered hands a peer's answer to the request waiting for it; an
// answer to no request of this node to that peer is dropped.
func (n *Node) tokenAnswered(peer string, raw json.RawMessage) {
	r, err := parseTokenResponse(raw)
	if err != nil {
		n.log.Warn().Err(err).Str("peer", peer).Msg("federation: bad token response dropped")
		return
	}
	n.mu.Lock()
	p, ok := n.pending[r.ReqID]
	n.mu.Unlock()
	if !ok || p.peer != peer {
		n.log.Debug().Str("peer", peer).Msg("federation: token response to no waiting request dropped")
		return
	}
	select {
	case p.ch <- tokenAnswer{status: r.Status, body: []byte(r.Body)}:
	default:
	}
}

// tokenRequested answers a peer's forwarded token request, off the
// node's goroutine (the issuer asks the homeserver).
func (n *Node) tokenRequested(ctx context.Context, peer string, raw json.RawMessage) {
	r, err := parseTokenRequest(raw)
	if err != nil {
		n.log.Warn().Err(err).Str("peer", peer).Msg("federation: bad token request dropped")
		return
	}
	log := n.log.With().Str("peer", peer).Str("room_id", r.RoomID).Str("endpoint", r.Endpoint).Str("req_id", r.ReqID).Logger()
	if !n.limiter(n.inLimits, peer).Allow() {
		// Logged, not recorded: the limit also bounds the audit log.
		log.Warn().Msg("federation: forwarded token request declined: too many requests from that peer")
		n.sendToken(ctx, peer, &tokenResponse{ReqID: r.ReqID})
		return
	}
	// The record holds the sizes of the request and the answer, never
	// their bodies: they carry an OpenID token and a LiveKit token.
	rec := n.openAudit(ctx, AuditEntry{Kind: AuditToken, Role: RoleAnswered, Peer: peer, RoomID: r.RoomID,
		MediaRoom: r.MediaRoom, CallID: r.ReqID}, log)
	decline := func(why string) {
		log.Warn().Msg("federation: forwarded token request declined: " + why)
		rec.close(ctx, 0, uint64(len(r.Body)), "declined: "+why)
		n.sendToken(ctx, peer, &tokenResponse{ReqID: r.ReqID})
	}
	switch {
	case !n.redirects(peer):
		decline("the peer shares this node's transport (no url configured for it)")
		return
	case r.Endpoint != EndpointSFUGet && r.Endpoint != EndpointGetToken:
		decline("unknown endpoint")
		return
	case n.issuer == nil:
		decline("this node issues no tokens")
		return
	}
	if r.ServiceURL != n.cfg.Peers[peer].URL {
		log.Warn().Str("service_url", r.ServiceURL).Str("configured_url", n.cfg.Peers[peer].URL).
			Msg("federation: forwarded token request names another service URL than the one configured: the configured one names the mirror room")
	}
	url := n.cfg.Peers[peer].URL
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(ctx, forwardWait)
		defer cancel()
		status, body := n.issuer.IssueForwarded(ctx, r.Endpoint, []byte(r.Body),
			func(mediaRoom string) string { return MirrorRoom(mediaRoom, url) })
		if len(body) > maxTokenBody {
			log.Error().Int("bytes", len(body)).Msg("federation: token answer too long")
			status, body = 0, nil
		}
		log.Info().Int("status", status).Msg("federation: forwarded token request answered")
		n.sendToken(ctx, peer, &tokenResponse{ReqID: r.ReqID, Status: status, Body: string(body)})
		outcome := tokenOutcome(status)
		if status == 0 {
			outcome = "declined: answer too long"
		}
		rec.close(ctx, uint64(len(body)), uint64(len(r.Body)), outcome)
	}()
}

// tokenOutcome is how a token request's audit record says it was
// answered: "ok" with a token, "refused" when the token service said no
// (the user unknown, not in the room…).
func tokenOutcome(status int) string {
	if status >= 200 && status < 300 {
		return fmt.Sprintf("ok: status %d", status)
	}
	return fmt.Sprintf("refused: status %d", status)
}

func (n *Node) sendToken(ctx context.Context, peer string, content *tokenResponse) {
	cfg := n.cfg.Peers[peer]
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
	defer cancel()
	if err := n.signal.SendToDevice(ctx, cfg.Bot, cfg.Device, EventTokenResponse, content); err != nil {
		n.log.Warn().Err(err).Str("peer", peer).Msg("federation: token response not sent")
	}
}
