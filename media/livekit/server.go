package livekit

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/rs/zerolog"

	"entente.dev/entente/media"
	"entente.dev/entente/media/rtc"
)

// ServerVersion is what the node announces as its LiveKit server version:
// at least 1.8.0 (livekit-client's RPC refuses older) and below the versions
// that imply VP9/AV1 rid simulcast (livekit-client room/utils.ts).
const ServerVersion = "1.9.0"

// protocolVersion is the signal protocol version the node speaks.
const protocolVersion = 16

// Server serves /rtc for one SFU.
type Server struct {
	sfu      *media.SFU
	eng      *rtc.Engine
	keys     Keys
	admitter Admitter
	log      zerolog.Logger
	// refreshEvery and refreshTTL pace the refresh tokens sent to clients.
	refreshEvery time.Duration
	refreshTTL   time.Duration
	// pingInterval and pingTimeout are announced in the join answer;
	// pingTimeout is also how long a client may stay silent.
	pingInterval time.Duration
	pingTimeout  time.Duration
	// iceServers, if set, gives each joining participant ICE servers.
	iceServers ICEServerSource
}

// ICEServer is one entry of the ICE servers a client is told to use
// besides the node's own candidates (RTCIceServer: URLs and credentials).
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// ICEServerSource hands out ICE servers (the node's TURN server, with
// credentials minted for that participant) at join.
type ICEServerSource interface {
	ICEServers(identity string) []ICEServer
}

// WithICEServers puts src's ICE servers into every join response
// (JoinResponse.ice_servers; livekit-client and the Go SDK use them unless
// the application set its own).
func WithICEServers(src ICEServerSource) ServerOption {
	return func(s *Server) { s.iceServers = src }
}

// LiveKit's pacing of refresh tokens (livekit/livekit roommanager.go):
// one at join, then every 5 minutes, each valid for 10.
const (
	defaultRefreshEvery = 5 * time.Minute
	defaultRefreshTTL   = 10 * time.Minute
)

// WithTokenRefresh changes how often refresh tokens are sent and how long
// each is valid (tests).
func WithTokenRefresh(every, ttl time.Duration) ServerOption {
	return func(s *Server) { s.refreshEvery, s.refreshTTL = every, ttl }
}

// LiveKit's ping pacing, announced in every JoinResponse
// (livekit/livekit pkg/rtc/participant.go PingIntervalSeconds and
// PingTimeoutSeconds).
const (
	defaultPingInterval = 5 * time.Second
	defaultPingTimeout  = 15 * time.Second
)

// WithPing changes the ping interval and timeout the join answer
// announces, and after which a silent client is disconnected (tests).
func WithPing(interval, timeout time.Duration) ServerOption {
	return func(s *Server) { s.pingInterval, s.pingTimeout = interval, timeout }
}

// Admitter decides whether the holder of a verified token may join now. A
// token proves what its issuer allowed when it was minted; an Admitter
// checks what may have changed since (the Matrix bridge: is the user still
// in the Matrix room the token was issued for).
type Admitter interface {
	// Admit returns nil to let g's holder join, or an error to refuse:
	// wrapping ErrNotAdmitted when the answer is no, anything else when it
	// could not be decided (the client is refused either way). It must
	// return nil for grants it has no opinion on.
	Admit(ctx context.Context, g *Grant) error
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithAdmitter makes the server ask a before every join and validation.
func WithAdmitter(a Admitter) ServerOption {
	return func(s *Server) { s.admitter = a }
}

// NewServer returns a signal server for sfu, whose participants' media eng
// carries, that accepts tokens signed with keys.
func NewServer(sfu *media.SFU, eng *rtc.Engine, keys Keys, log zerolog.Logger, opts ...ServerOption) *Server {
	s := &Server{
		sfu: sfu, eng: eng, keys: keys, log: log, refreshEvery: defaultRefreshEvery, refreshTTL: defaultRefreshTTL,
		pingInterval: defaultPingInterval, pingTimeout: defaultPingTimeout,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Register adds the signal endpoints to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("/rtc", s.serveRTC)
	mux.HandleFunc("/rtc/validate", s.serveValidate)
	// The single peer connection endpoint does not exist yet: a plain 404
	// (not the room-not-found text) makes livekit-client fall back to /rtc
	// (LIVEKIT.md section 1).
	mux.HandleFunc("/rtc/v1", s.notImplemented)
	mux.HandleFunc("/rtc/v1/validate", s.notImplemented)
}

func (s *Server) notImplemented(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	http.Error(w, "single peer connection signalling is not supported, use /rtc", http.StatusNotFound)
}

// connectRequest is a validated /rtc request.
type connectRequest struct {
	grant         *Grant
	autoSubscribe bool
	reconnect     bool
}

// tokenFrom reads the token from Authorization: Bearer, then access_token
// (livekit/livekit pkg/service/auth.go).
func tokenFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return r.URL.Query().Get("access_token")
}

// check validates a connect request before any upgrade and returns the
// HTTP status and message a client expects on failure (LIVEKIT.md
// section 1 table). The admitter, if any, is asked last.
func (s *Server) check(r *http.Request) (*connectRequest, int, string) {
	q := r.URL.Query()
	g, err := Verify(s.keys, tokenFrom(r))
	switch {
	case errors.Is(err, ErrNoIdentity):
		return nil, http.StatusBadRequest, "identity cannot be empty"
	case errors.Is(err, ErrInvalidIdentity), errors.Is(err, ErrInvalidName), errors.Is(err, ErrInvalidRoom):
		// LiveKit answers 400 for an identity over its limit
		// (pkg/service/utils.go ValidateConnectRequest).
		return nil, http.StatusBadRequest, err.Error()
	case err != nil:
		return nil, http.StatusUnauthorized, err.Error()
	}
	if q.Has("join_request") {
		return nil, http.StatusBadRequest, "single peer connection mode is not supported"
	}
	if !s.sfu.RoomExists(g.Room) && !s.canCreate(g) {
		return nil, http.StatusNotFound, media.ErrRoomNotFound.Error()
	}
	// 403 with the reason as text: livekit-client asks /rtc/validate when
	// the websocket fails and shows the text of a 401 or 403 only
	// (SignalClient.handleConnectionError); any other status becomes an
	// "unknown websocket error". Room.Join checks again, under the room's
	// lock.
	if s.sfu.RoomFull(g.Room, g.Identity) {
		return nil, http.StatusForbidden, media.ErrRoomFull.Error()
	}
	if s.admitter != nil {
		ctx, cancel := context.WithTimeout(r.Context(), admitTimeout)
		err := s.admitter.Admit(ctx, g)
		cancel()
		if err != nil {
			// The reason stays in the log: it may name the issuer's internals.
			s.log.Info().Err(err).Str("room", g.Room).Str("participant", g.Identity).Msg("participant not admitted")
			return nil, http.StatusForbidden, ErrNotAdmitted.Error()
		}
	}
	return &connectRequest{
		grant:         g,
		autoSubscribe: q.Get("auto_subscribe") != "0" && q.Get("auto_subscribe") != "false",
		reconnect:     q.Get("reconnect") == "1" || q.Get("reconnect") == "true",
	}, 0, ""
}

func (s *Server) canCreate(g *Grant) bool {
	return g.RoomCreate || s.sfu.AutoCreate()
}

func (s *Server) serveValidate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if _, status, msg := s.check(r); status != 0 {
		http.Error(w, msg, status)
		return
	}
	_, _ = w.Write([]byte("success"))
}

func (s *Server) serveRTC(w http.ResponseWriter, r *http.Request) {
	req, status, msg := s.check(r)
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// LiveKit accepts any origin: the token is the credential.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return
	}
	conn.SetReadLimit(maxSignalMessage)
	log := s.log.With().Str("room", req.grant.Room).Str("participant", req.grant.Identity).Logger()
	ctx := log.WithContext(r.Context())
	sess := newSession(conn, log)
	defer sess.wait()
	if req.reconnect {
		// Resume is not implemented: ask the client for a full reconnect
		// (livekit/livekit roommanager.go StartSession, unknown participant).
		sess.SendLeave(media.ReasonStateMismatch, media.LeaveReconnect)
		return
	}
	room, err := s.room(req.grant)
	if err != nil {
		sess.SendLeave(media.ReasonJoinFailure, media.LeaveDisconnect)
		log.Info().Err(err).Msg("join refused")
		return
	}
	g := req.grant
	t := s.eng.NewTransport(sess, log)
	p, info, err := room.Join(ctx, media.JoinParams{
		Identity: g.Identity, Name: g.Name, Metadata: g.Metadata, Attributes: g.Attributes,
		Kind: media.ParticipantKind(g.Kind), Permissions: permissions(g),
		AutoSubscribe: req.autoSubscribe,
		Signaller:     sess,
		Transport:     t,
	})
	if err != nil {
		sess.SendLeave(media.ReasonJoinFailure, media.LeaveDisconnect)
		log.Info().Err(err).Msg("join refused")
		return
	}
	join := joinResponse(info, g)
	join.PingInterval, join.PingTimeout = seconds(s.pingInterval), seconds(s.pingTimeout)
	if s.iceServers != nil {
		for _, ice := range s.iceServers.ICEServers(g.Identity) {
			join.IceServers = append(join.IceServers, &livekit.ICEServer{Urls: ice.URLs, Username: ice.Username, Credential: ice.Credential})
		}
	}
	sess.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_Join{Join: join}})
	if err := p.Start(ctx); err != nil {
		log.Info().Err(err).Msg("participant not started")
	}
	stopRefresh := s.refreshTokens(sess, g)
	stopWatchdog := s.watchdog(sess, log)
	sess.readLoop(ctx, p, t, g)
	stopWatchdog()
	stopRefresh()
	// The socket is gone: without resume support this session's
	// participant leaves (not whoever holds its identity now).
	p.Disconnect(media.ReasonSignalClose)
}

func (s *Server) room(g *Grant) (*media.Room, error) {
	if g.RoomCreate {
		return s.sfu.CreateRoom(g.Room)
	}
	return s.sfu.Room(g.Room, true)
}

// joinResponse builds the JoinResponse livekit-client and server-sdk-go
// need (LIVEKIT.md section 2).
func joinResponse(info *media.JoinInfo, g *Grant) *livekit.JoinResponse {
	return &livekit.JoinResponse{
		Room:              roomInfo(info.Room),
		Participant:       participantInfo(info.Participant),
		OtherParticipants: participantInfos(info.Others),
		ServerVersion:     ServerVersion,
		ServerInfo: &livekit.ServerInfo{
			Edition: livekit.ServerInfo_Standard, Version: ServerVersion, Protocol: protocolVersion, NodeId: "entente",
		},
		SubscriberPrimary: g.CanSubscribe,
		SifTrailer:        info.SIFTrailer,
		FastPublish:       g.CanPublish,
		EnabledPublishCodecs: []*livekit.Codec{
			{Mime: "audio/opus"}, {Mime: "video/VP8"}, {Mime: "video/H264"},
		},
	}
}

// seconds rounds d up to whole seconds, at least one, as the join answer
// counts them.
func seconds(d time.Duration) int32 {
	return int32(max(1, (d+time.Second-1)/time.Second))
}

const (
	maxSignalMessage = 1 << 20
	writeTimeout     = 10 * time.Second
	// admitTimeout bounds one Admitter call.
	admitTimeout = 10 * time.Second
)

// refreshTokens sends sess a fresh token now and then every refreshEvery,
// until the returned function is called (it waits for the sender to stop).
func (s *Server) refreshTokens(sess *session, g *Grant) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(s.refreshEvery)
		defer t.Stop()
		for {
			tok, err := g.Refresh(s.keys, s.refreshTTL)
			if err != nil {
				s.log.Warn().Err(err).Msg("refresh token not minted")
			} else {
				sess.send(&livekit.SignalResponse{Message: &livekit.SignalResponse_RefreshToken{RefreshToken: tok}})
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// watchdog disconnects a client that has been silent for the ping
// timeout, until the returned function is called (it waits for the
// watchdog to stop). The join answer asks clients to ping every
// pingInterval and promises pingTimeout; livekit-client and Element Call
// do, and give up on a server that does not answer within it
// (livekit-client SignalClient startPingInterval). Not every client
// pings: the Go SDK never does, and relies on the server's websocket pings
// as LiveKit sends them (livekit/livekit pkg/service/wsprotocol.go
// pingWorker). So a client is alive while it sends anything or answers the
// watchdog's websocket pings; the transport closing ends the read loop and
// the participant leaves with SIGNAL_CLOSE.
func (s *Server) watchdog(sess *session, log zerolog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	period := s.pingTimeout / 3
	go func() {
		defer close(stopped)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if silent := time.Since(sess.lastHeard()); silent > s.pingTimeout {
				log.Info().Dur("silent", silent).Msg("no signal from the client within the ping timeout, disconnecting")
				_ = sess.conn.CloseNow()
				return
			}
			pctx, pcancel := context.WithTimeout(ctx, period)
			if sess.conn.Ping(pctx) == nil {
				sess.heard()
			}
			pcancel()
		}
	}()
	return func() {
		cancel()
		<-stopped
	}
}
