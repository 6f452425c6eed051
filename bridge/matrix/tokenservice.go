package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/federation"
)

// Paths served by TokenService, relative to the token service's base URL
// (the livekit_service_url that clients discover).
const (
	PathGetToken = "/get_token"
	PathSFUGet   = "/sfu/get"
	PathHealthz  = "/healthz"
)

// Values of TokenServiceOptions.UnknownMembership (config
// matrix.unknown_membership): what the token service does when it cannot
// know whether a user is joined to a room.
const (
	// UnknownMembershipRefuse refuses the token.
	UnknownMembershipRefuse = "refuse"
	// UnknownMembershipServeLocal serves users of the node's own
	// homeserver, verified by OpenID, as lk-jwt-service serves its
	// full-access users; their tokens carry AttrMembershipUnverified.
	// Users of other homeservers are still refused.
	UnknownMembershipServeLocal = "serve_local"
)

// DefaultRecordCatchUp is how long a "not joined" answer from the node's
// record waits for transactions on their way (Dendrite was seen sending a
// transaction up to 3 s after the event).
const DefaultRecordCatchUp = 4 * time.Second

// MembershipRecord is the node's own record of Matrix rooms, kept from the
// application service's transactions (*store.Store implements it).
type MembershipRecord interface {
	// MatrixRecordedMembership returns userID's last recorded membership
	// of roomID ("" if none) and whether the node saw the room's creation,
	// which makes the record complete.
	MatrixRecordedMembership(ctx context.Context, roomID, userID string) (membership string, roomSeen bool, err error)
}

// UnverifiedMarker is what a MembershipRecord may also do (*store.Store
// does): mark in the call history the presences a token issued without a
// verified membership admits (UnknownMembershipServeLocal).
type UnverifiedMarker interface {
	MarkUnverifiedToken(ctx context.Context, room, identity, matrixRoomID, userID string, issued, expires time.Time) error
}

// DefaultTokenTTL is the lifetime of issued tokens, as lk-jwt-service's
// getJoinToken (SetValidFor(time.Hour)).
const DefaultTokenTTL = time.Hour

// TokenServiceOptions configures a TokenService.
type TokenServiceOptions struct {
	// SFU mints tokens and manages rooms. Required.
	SFU SFU
	// OpenID verifies OpenID tokens. Required (usually a *FederationOpenID).
	OpenID OpenIDVerifier
	// Membership checks Matrix room membership. Required.
	Membership MembershipChecker
	// ServerName is the local homeserver's server name. Its users may
	// create calls (LiveKit rooms) on this node.
	ServerName string
	// Allow lists other homeservers whose users may join calls that already
	// exist on this node; "*" allows every homeserver. Users of any other
	// homeserver are refused before their homeserver is contacted.
	Allow []string
	// URL is the SFU websocket base answered to clients ("wss://rtc.example").
	URL string
	// TokenTTL is the issued tokens' lifetime; DefaultTokenTTL when zero.
	TokenTTL time.Duration
	// OnIssued, when set, is told of every token issued (usually
	// CallGuard.Issued), so that users leaving the Matrix room can be
	// removed from the call.
	OnIssued func(roomID, userID, deviceID, room, identity string)
	// BotUserID is the node's bot, named in refusals that ask people to
	// invite it. Optional.
	BotUserID string
	// Record is the node's record of rooms from the application service
	// (usually the *store.Store), asked when the bot is not in a room and
	// cannot join it. Optional.
	Record MembershipRecord
	// RecordCatchUp is how long a "not joined" answer from Record waits
	// for transactions on their way; DefaultRecordCatchUp when zero.
	RecordCatchUp time.Duration
	// Users checks the access tokens of MSC4195's homeserver get_token
	// (PathLiveKitGetToken); nil leaves that endpoint unserved (404).
	Users UserAuthenticator
	// UnknownMembership decides when membership cannot be known:
	// UnknownMembershipRefuse (the default when empty) or
	// UnknownMembershipServeLocal.
	UnknownMembership string
	// Federation, with SigningKey, serves MSC4195's server-server
	// get_token (PathFederationLiveKitGetToken: other homeservers' keys
	// are fetched with it) and lets local users ask other homeservers for
	// tokens on their SFUs. SigningKey is the homeserver's own
	// (LoadSigningKey): the node asks in its name. Without Federation the
	// endpoint is not served; without SigningKey other homeservers are not
	// asked (502).
	Federation *FederationOpenID
	SigningKey *federation.SigningKey
	// Forwarder, when set, sends the token requests of users of peer
	// nodes that keep their own token service URL to those nodes (the
	// redirect, FEDERATION.md). Optional.
	Forwarder TokenForwarder
	// Log receives one line per request; nothing secret is logged.
	Log zerolog.Logger
}

// TokenForwarder sends a token request to the node of the requesting
// user's homeserver (federation.Node, wired by cmd): the redirect of
// FEDERATION.md. The token service does not spend the user's OpenID token
// (clients use it once): the user's own node verifies it.
type TokenForwarder interface {
	// Forwards reports whether the users of server are served by their
	// own node.
	Forwards(server string) bool
	// Forward sends the request (the endpoint's path and the body,
	// unchanged) and returns the node's answer, to give the user
	// unchanged. roomID is the Matrix room and mediaRoom the call's
	// media room here. An error means no answer: the token service then
	// serves the user itself.
	Forward(ctx context.Context, server, endpoint string, body []byte, roomID, mediaRoom string) (status int, answer []byte, err error)
}

// TokenService is the MatrixRTC token service (MSC4195), answering Element
// clients as element-hq/lk-jwt-service does: POST /get_token, the legacy
// POST /sfu/get and GET /healthz, with CORS for browsers and Matrix-style
// JSON errors. Beyond lk-jwt-service, it issues a token only to a user joined
// to the Matrix room, and only to homeservers its policy allows.
type TokenService struct {
	sfu        SFU
	openID     OpenIDVerifier
	membership MembershipChecker
	serverName string
	allowAll   bool
	allow      []string
	url        string
	ttl        time.Duration
	onIssued   func(roomID, userID, deviceID, room, identity string)
	bot        string
	record     MembershipRecord
	// recordCatchUp: see TokenServiceOptions.RecordCatchUp.
	recordCatchUp time.Duration
	unknown       string
	users         UserAuthenticator
	forwarder     TokenForwarder
	fed           *FederationOpenID
	keys          *keyCache
	signer        *federation.SigningKey
	log           zerolog.Logger
}

// NewTokenService checks opts and returns the service.
func NewTokenService(opts TokenServiceOptions) (*TokenService, error) {
	var errs []error
	if opts.SFU == nil || opts.OpenID == nil || opts.Membership == nil {
		errs = append(errs, errors.New("SFU, OpenID and Membership are required"))
	}
	if _, err := ParseServerName(opts.ServerName); err != nil {
		errs = append(errs, fmt.Errorf("server name: %w", err))
	}
	for _, a := range opts.Allow {
		if a == "*" {
			continue
		}
		if _, err := ParseServerName(a); err != nil {
			errs = append(errs, fmt.Errorf("allow: %w", err))
		}
	}
	if err := checkLiveKitURL(opts.URL); err != nil {
		errs = append(errs, err)
	}
	if opts.TokenTTL < 0 || opts.RecordCatchUp < 0 {
		errs = append(errs, errors.New("negative token TTL or record catch-up"))
	}
	switch opts.UnknownMembership {
	case "", UnknownMembershipRefuse, UnknownMembershipServeLocal:
	default:
		errs = append(errs, fmt.Errorf("unknown membership policy %q", opts.UnknownMembership))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: token service: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	ttl := opts.TokenTTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	catchUp := opts.RecordCatchUp
	if catchUp == 0 {
		catchUp = DefaultRecordCatchUp
	}
	unknown := opts.UnknownMembership
	if unknown == "" {
		unknown = UnknownMembershipRefuse
	}
	var keys *keyCache
	if opts.Federation != nil {
		keys = &keyCache{fed: opts.Federation, m: map[string]serverKeys{}}
	}
	return &TokenService{
		fed:           opts.Federation,
		keys:          keys,
		signer:        opts.SigningKey,
		sfu:           opts.SFU,
		openID:        opts.OpenID,
		membership:    opts.Membership,
		serverName:    opts.ServerName,
		allowAll:      slices.Contains(opts.Allow, "*"),
		allow:         slices.Clone(opts.Allow),
		url:           opts.URL,
		ttl:           ttl,
		onIssued:      opts.OnIssued,
		bot:           opts.BotUserID,
		record:        opts.Record,
		recordCatchUp: catchUp,
		unknown:       unknown,
		users:         opts.Users,
		forwarder:     opts.Forwarder,
		log:           opts.Log.With().Str("component", "token_service").Logger(),
	}, nil
}

// ServeHTTP serves PathGetToken, PathSFUGet, PathHealthz and, with
// TokenServiceOptions.Users, PathLiveKitGetToken(Unstable), and with
// TokenServiceOptions.Federation PathFederationLiveKitGetToken(Unstable); any other path
// gets 404 M_UNRECOGNIZED. Mount it at the service's base URL (strip any
// prefix first).
func (s *TokenService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case PathHealthz:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
	case PathGetToken, PathSFUGet, PathLiveKitGetToken, PathLiveKitGetTokenUnstable:
		s.serveToken(w, r)
	case PathFederationLiveKitGetToken, PathFederationLiveKitGetTokenUnstable:
		s.serveFederationToken(w, r)
	default:
		writeError(w, &apiError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED", Message: "Unrecognized request"})
	}
}

// serveToken applies CORS (any origin: Element Call runs on its own origin
// and fetches the service directly), answers preflights, and dispatches.
func (s *TokenService) serveToken(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Content-Length, Accept-Encoding, Authorization, X-CSRF-Token")
	h.Set("Access-Control-Max-Age", "600")
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED", Message: "Method not allowed"})
		return
	}
	log := s.log.With().Str("endpoint", r.URL.Path).Str("remote_addr", r.RemoteAddr).Logger()
	ctx := log.WithContext(r.Context())

	body, berr := readBody(w, r, maxRequestBody)
	if berr != nil {
		writeError(w, berr)
		return
	}
	var resp *tokenResponse
	var aerr *apiError
	who := new(requester)
	if r.URL.Path == PathGetToken || r.URL.Path == PathSFUGet {
		if status, answer, ok := s.forward(ctx, r.URL.Path, body, who); ok {
			w.WriteHeader(status)
			_, _ = w.Write(answer)
			return
		}
	}
	switch r.URL.Path {
	case PathGetToken:
		resp, aerr = s.getToken(ctx, body, who)
	case PathSFUGet:
		resp, aerr = s.sfuGet(ctx, body, who)
	default:
		resp, aerr = s.serveLiveKitToken(ctx, r, body, who)
	}
	if who.unanswered != "" {
		// Served (or refused) here: say so, with the user the homeserver
		// vouched for.
		log.Warn().Str("peer", who.unanswered).Str("matrix_room", who.roomID).Str("user_id", who.userID).
			Bool("served", aerr == nil).Msg("the user's own node did not answer the forwarded token request: served by this node")
	}
	if aerr != nil {
		// One line per refusal with the room and the user, as far as the
		// request got, and the reason the client was given.
		log.Info().Str("matrix_room", who.roomID).Str("user_id", who.userID).Str("errcode", aerr.ErrCode).
			Int("status", aerr.Status).Str("reason", aerr.Message).Msg("token refused")
		writeError(w, aerr)
		return
	}
	b, _ := json.Marshal(resp) // two strings: cannot fail
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// tokenResponse is the answer of /get_token and /sfu/get (lk-jwt-service
// SFUResponse), and without url of MSC4195's homeserver get_token.
type tokenResponse struct {
	URL string `json:"url,omitempty"`
	JWT string `json:"jwt"`
}

// requester is what a token request said about who asks for which room,
// for the log line of a refusal: the user is the claimed one until the
// homeserver has vouched for it.
// unanswered is the peer node a forwarded request got no answer from.
type requester struct{ roomID, userID, unanswered string }

// forward sends a request of a user of a peer node that keeps its own
// token service URL to that node, and returns its answer (ok). A request
// it cannot read, of a user of this node's homeserver or of any server
// off the forwarder's peer list is not forwarded: the ordinary path
// serves or refuses it, under the homeserver policy.
func (s *TokenService) forward(ctx context.Context, endpoint string, body []byte, who *requester) (int, []byte, bool) {
	if s.forwarder == nil {
		return 0, nil, false
	}
	var server, roomID, slotID string
	switch endpoint {
	case PathGetToken:
		req, aerr := parseGetToken(body)
		if aerr != nil {
			return 0, nil, false
		}
		server, roomID, slotID = req.OpenIDToken.MatrixServerName, req.RoomID, req.SlotID
	case PathSFUGet:
		req, aerr := parseSFUGet(body)
		if aerr != nil {
			return 0, nil, false
		}
		server, roomID, slotID = req.OpenIDToken.MatrixServerName, req.Room, LegacySlotID
	default:
		return 0, nil, false
	}
	if server == s.serverName || !s.forwarder.Forwards(server) {
		return 0, nil, false
	}
	log := zerolog.Ctx(ctx).With().Str("peer", server).Str("matrix_room", roomID).Logger()
	status, answer, err := s.forwarder.Forward(ctx, server, endpoint, body, roomID, RoomAlias(roomID, slotID))
	if err != nil {
		log.Warn().Err(err).Msg("token request not answered by the user's own node")
		who.unanswered = server
		return 0, nil, false
	}
	log.Info().Int("status", status).Msg("token request answered by the user's own node")
	return status, answer, true
}

// IssueForwarded answers a token request that a peer node forwarded (the
// redirect, FEDERATION.md): endpoint is PathSFUGet or PathGetToken, body
// the client's, unchanged. Only this node's homeserver's users are
// served: their OpenID token is verified with it, their membership checked
// as for any request, and the token is for the mirror room that mirror
// names from the call's media room (created here), with this node's SFU
// url. It returns the status and the JSON body to answer the client.
func (s *TokenService) IssueForwarded(ctx context.Context, endpoint string, body []byte, mirror func(mediaRoom string) string) (int, []byte) {
	log := s.log.With().Str("endpoint", endpoint).Bool("forwarded", true).Logger()
	ctx = log.WithContext(ctx)
	var resp *tokenResponse
	var aerr *apiError
	who := new(requester)
	switch endpoint {
	case PathGetToken:
		req, perr := parseGetToken(body)
		if aerr = perr; aerr == nil {
			resp, aerr = s.forwardedGetToken(ctx, req, who, mirror)
		}
	case PathSFUGet:
		req, perr := parseSFUGet(body)
		if aerr = perr; aerr == nil {
			who.roomID = req.Room
			if req.OpenIDToken.MatrixServerName != s.serverName {
				aerr = &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "This node serves only its own homeserver's users"}
				break
			}
			var userID string
			if userID, aerr = s.authenticate(ctx, req.OpenIDToken); aerr == nil {
				who.userID = userID
				resp, aerr = s.issue(ctx, req.Room, mirror(RoomAlias(req.Room, LegacySlotID)), userID, req.DeviceID,
					LegacyIdentity(userID, req.DeviceID), s.serverName, true)
			}
		}
	default:
		aerr = &apiError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED", Message: "Unrecognized request"}
	}
	if aerr != nil {
		log.Info().Str("matrix_room", who.roomID).Str("user_id", who.userID).Str("errcode", aerr.ErrCode).
			Int("status", aerr.Status).Str("reason", aerr.Message).Msg("forwarded token refused")
		return aerr.Status, errorBody(aerr)
	}
	b, _ := json.Marshal(resp) // two strings: cannot fail
	return http.StatusOK, b
}

func (s *TokenService) forwardedGetToken(ctx context.Context, req getTokenRequest, who *requester, mirror func(string) string) (*tokenResponse, *apiError) {
	who.roomID, who.userID = req.RoomID, req.Member.ClaimedUserID
	if req.OpenIDToken.MatrixServerName != s.serverName || userIDServer(req.Member.ClaimedUserID) != s.serverName {
		return nil, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "This node serves only its own homeserver's users"}
	}
	userID, aerr := s.authenticate(ctx, req.OpenIDToken)
	if aerr != nil {
		return nil, aerr
	}
	if userID != req.Member.ClaimedUserID {
		zerolog.Ctx(ctx).Warn().Str("user_id", userID).Str("claimed_user_id", req.Member.ClaimedUserID).
			Msg("claimed user does not match openid subject")
		return nil, unauthorized()
	}
	identity := Identity(userID, req.Member.ClaimedDeviceID, req.Member.ID)
	return s.issue(ctx, req.RoomID, mirror(RoomAlias(req.RoomID, req.SlotID)), userID, req.Member.ClaimedDeviceID, identity, s.serverName, true)
}

func (s *TokenService) getToken(ctx context.Context, body []byte, who *requester) (*tokenResponse, *apiError) {
	req, aerr := parseGetToken(body)
	if aerr != nil {
		return nil, aerr
	}
	who.roomID, who.userID = req.RoomID, req.Member.ClaimedUserID
	// A homeserver vouches only for its own users: catch a mismatch before
	// spending the OpenID token.
	if userIDServer(req.Member.ClaimedUserID) != req.OpenIDToken.MatrixServerName {
		return nil, unauthorized()
	}
	userID, aerr := s.authenticate(ctx, req.OpenIDToken)
	if aerr != nil {
		return nil, aerr
	}
	if userID != req.Member.ClaimedUserID {
		zerolog.Ctx(ctx).Warn().Str("user_id", userID).Str("claimed_user_id", req.Member.ClaimedUserID).
			Msg("claimed user does not match openid subject")
		return nil, unauthorized()
	}
	identity := Identity(userID, req.Member.ClaimedDeviceID, req.Member.ID)
	return s.issue(ctx, req.RoomID, RoomAlias(req.RoomID, req.SlotID), userID, req.Member.ClaimedDeviceID, identity, req.OpenIDToken.MatrixServerName, true)
}

func (s *TokenService) sfuGet(ctx context.Context, body []byte, who *requester) (*tokenResponse, *apiError) {
	req, aerr := parseSFUGet(body)
	if aerr != nil {
		return nil, aerr
	}
	who.roomID = req.Room
	userID, aerr := s.authenticate(ctx, req.OpenIDToken)
	if aerr != nil {
		return nil, aerr
	}
	who.userID = userID
	identity := LegacyIdentity(userID, req.DeviceID)
	return s.issue(ctx, req.Room, RoomAlias(req.Room, LegacySlotID), userID, req.DeviceID, identity, req.OpenIDToken.MatrixServerName, true)
}

// authenticate applies the homeserver policy, then asks the homeserver whose
// OpenID token this is. Homeservers outside the policy are never contacted.
func (s *TokenService) authenticate(ctx context.Context, tok openIDToken) (string, *apiError) {
	log := zerolog.Ctx(ctx)
	if _, err := ParseServerName(tok.MatrixServerName); err != nil {
		return "", badJSON("Invalid `matrix_server_name`")
	}
	if !s.allowed(tok.MatrixServerName) {
		log.Info().Str("server_name", tok.MatrixServerName).Msg("homeserver not allowed")
		return "", &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "This homeserver is not allowed to use this service"}
	}
	userID, err := s.openID.UserInfo(ctx, tok.MatrixServerName, tok.AccessToken)
	switch {
	case err == nil:
		return userID, nil
	case errors.Is(err, ErrOpenIDUnavailable):
		log.Warn().Err(err).Str("server_name", tok.MatrixServerName).Msg("openid userinfo failed")
		return "", &apiError{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "The homeserver could not be reached to verify the OpenID token"}
	default:
		log.Info().Err(err).Str("server_name", tok.MatrixServerName).Msg("openid token rejected")
		return "", unauthorized()
	}
}

// issue checks room membership, creates the LiveKit room for local users
// (others may only join an existing one, as lk-jwt-service treats users
// outside its full-access list) and mints the token.
//
// publish is whether the token may publish: MSC4195's server-server flow
// gives another homeserver's users tokens that only subscribe.
func (s *TokenService) issue(ctx context.Context, roomID, room, userID, deviceID, identity, serverName string, publish bool) (*tokenResponse, *apiError) {
	log := zerolog.Ctx(ctx).With().Str("matrix_room", roomID).Str("user_id", userID).
		Str("room", room).Str("identity", identity).Logger()
	local := serverName == s.serverName
	source, aerr := s.checkMember(ctx, log, roomID, userID, local)
	if aerr != nil {
		return nil, aerr
	}
	if local {
		if err := s.sfu.EnsureRoom(room); err != nil {
			log.Error().Err(err).Msg("create room")
			return nil, internalError("Unable to create room on SFU")
		}
	} else if !s.sfu.RoomExists(room) {
		log.Info().Msg("remote user asked for a call that does not exist here")
		return nil, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "No call in progress for that room on this node"}
	}
	// The name is informational; leave it out when Element Call could not
	// decode it (see claimSafe). The identity must stay byte-exact.
	name := ""
	if claimSafe(userID) {
		name = userID
	}
	if !claimSafe(identity) {
		log.Warn().Msg("identity has characters that Element Call cannot decode from a JWT")
	}
	// No canUpdateOwnMetadata, as lk-jwt-service's getJoinToken grants
	// none (handler.go): Element Call does not need it, and the Matrix
	// identity the attributes carry is the node's word, not the user's.
	attrs := matrixAttributes(roomID, userID)
	if source == membershipUnverified {
		// The call's members, the node's logs and its call history can
		// tell this token from one whose holder was seen in the room. No
		// mark, no token.
		attrs[AttrMembershipUnverified] = "true"
		if m, ok := s.record.(UnverifiedMarker); ok {
			now := time.Now()
			if err := m.MarkUnverifiedToken(ctx, room, identity, roomID, userID, now, now.Add(s.ttl)); err != nil {
				log.Error().Err(err).Msg("mark unverified token")
				return nil, &apiError{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "The token could not be recorded; try again"}
			}
		}
	}
	jwt, err := s.sfu.MintToken(room, identity, name, Grant{
		CanPublish:     publish,
		CanSubscribe:   true,
		CanPublishData: publish,
		TTL:            s.ttl,
		Attributes:     attrs,
	})
	if err != nil {
		log.Error().Err(err).Msg("mint token")
		return nil, internalError("Internal Server Error")
	}
	if s.onIssued != nil {
		s.onIssued(roomID, userID, deviceID, room, identity)
	}
	log.Info().Bool("local", local).Str("membership_source", source).Msg("token issued")
	return &tokenResponse{URL: s.url, JWT: jwt}, nil
}

// checkMember refuses a user who is not joined to the Matrix room, with an
// error the person can act on, and says how membership was established
// (the membership* values, logged and, for membershipUnverified, put in
// the token). In order:
//
//  1. the homeserver's joined_members, as the bot;
//  2. when the bot is not in the room and a local user asks, the bot joins
//     it on its own (Membership's optional RoomJoiner), then 1 again: rooms
//     Element Call creates from its home page are public (element-call
//     src/utils/matrix.ts createRoom, preset public_chat), and nobody
//     invites a bot there. Joining on behalf of remote users is not needed
//     (they only join calls a local user started) and would let another
//     homeserver's users walk the bot into rooms;
//  3. the node's record of the room from the application service
//     (Record), complete for rooms whose creation the node saw through the
//     registration's room namespace; a negative answer waits up to
//     RecordCatchUp for transactions still on their way;
//  4. the UnknownMembership policy.
func (s *TokenService) checkMember(ctx context.Context, log zerolog.Logger, roomID, userID string, local bool) (string, *apiError) {
	joined, err := s.membership.IsJoined(ctx, roomID, userID)
	mayJoin := true
	if errors.Is(err, ErrBotNotInRoom) && local {
		if j, ok := s.membership.(RoomJoiner); ok {
			// Through the user's homeserver, which the user says is in the
			// room, and the room ID's own server where it names one.
			jerr := j.JoinRoom(ctx, roomID, []string{userIDServer(userID), roomIDServer(roomID)})
			switch {
			case jerr == nil:
				log.Info().Msg("bot joined the room on its own")
				joined, err = s.membership.IsJoined(ctx, roomID, userID)
			case errors.Is(jerr, ErrBotCannotJoin):
				log.Info().Err(jerr).Msg("bot may not join the room")
				mayJoin = false
			default:
				log.Warn().Err(jerr).Msg("bot could not join the room")
			}
		}
	}
	source := membershipHomeserver
	if errors.Is(err, ErrBotNotInRoom) && s.record != nil {
		var known bool
		joined, known = s.recorded(ctx, log, roomID, userID)
		if known {
			err, source = nil, membershipRecord
		}
	}
	if err != nil {
		if errors.Is(err, ErrBotNotInRoom) {
			if s.unknown == UnknownMembershipServeLocal && local {
				log.Warn().Msg("membership unknown: served as a verified local user (unknown_membership = serve_local)")
				return membershipUnverified, nil
			}
			log.Info().Err(err).Msg("membership unknown: bot not in room")
			msg := "This node cannot check who is in that room: invite " + s.botUserID() + " to it"
			if !mayJoin {
				msg = "This node cannot check who is in that room: invite " + s.botUserID() + " to it, or make the room public"
			}
			return "", &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: msg}
		}
		log.Warn().Err(err).Msg("membership check failed")
		return "", &apiError{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "Room membership could not be checked; try again"}
	}
	if !joined {
		log.Info().Str("membership_source", source).Msg("user not joined to room")
		return "", &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "You are not joined to that Matrix room"}
	}
	return source, nil
}

// How checkMember established a membership.
const (
	membershipHomeserver = "homeserver"
	membershipRecord     = "record"
	membershipUnverified = "unverified"
)

// recorded asks the node's record whether userID is joined to roomID.
// known is false when the record cannot tell (the node never saw the
// room's creation and holds no membership of the user there). A "not
// joined" answer is asked again until RecordCatchUp has passed: the
// homeserver sends transactions from a queue of its own, seconds after
// the events, so a person who just created or joined a room may ask for a
// call before the node has heard of it.
func (s *TokenService) recorded(ctx context.Context, log zerolog.Logger, roomID, userID string) (joined, known bool) {
	deadline := time.Now().Add(s.recordCatchUp)
	for {
		m, seen, err := s.record.MatrixRecordedMembership(ctx, roomID, userID)
		if err != nil {
			log.Warn().Err(err).Msg("recorded membership unreadable")
			return false, false
		}
		joined = m == "join"
		known = seen || m != ""
		if joined || time.Now().After(deadline) {
			return joined, known
		}
		select {
		case <-ctx.Done():
			return joined, known
		case <-time.After(recordPoll):
		}
	}
}

// recordPoll is how often recorded asks the record again while it waits.
const recordPoll = 100 * time.Millisecond

// botUserID names the bot in refusals.
func (s *TokenService) botUserID() string {
	if s.bot == "" {
		return "the node's bot"
	}
	return s.bot
}

func (s *TokenService) allowed(serverName string) bool {
	return serverName == s.serverName || s.allowAll || slices.Contains(s.allow, serverName)
}

func unauthorized() *apiError {
	return &apiError{Status: http.StatusUnauthorized, ErrCode: "M_UNAUTHORIZED", Message: "The request could not be authorised."}
}

func internalError(msg string) *apiError {
	return &apiError{Status: http.StatusInternalServerError, ErrCode: "M_UNKNOWN", Message: msg}
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		// Spec: Client-Server API, "Rate limiting"; Retry-After in whole
		// seconds, rounded up (RFC 9110 section 10.2.3).
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(errorBody(e))
}

// errorBody is a Matrix-style JSON error.
func errorBody(e *apiError) []byte {
	var retryMS int64
	if e.RetryAfter > 0 {
		retryMS = max(e.RetryAfter.Milliseconds(), 1)
	}
	b, _ := json.Marshal(struct {
		ErrCode      string `json:"errcode"`
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	}{e.ErrCode, e.Message, retryMS})
	return b
}
