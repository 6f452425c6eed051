package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/internal/names"
)

// Paths of the join page's Matrix API, served by Register on the node's
// main port next to the page. A "!meet" link (MeetLink) opens the page with
// the Matrix room in its query; the page reads PathMeetingInfo to learn
// where to sign in, then either signs the person in with their Matrix
// account and asks PathGetToken, as Element Call does, or asks
// PathMeetingGuest for a guest token.
const (
	PathMeetingInfo  = "/api/matrix"
	PathMeetingGuest = "/api/matrix/guest"
)

const (
	// maxGuestBody bounds a guest request; {room_id, meeting, name} fits in
	// far less.
	maxGuestBody = 4 << 10
	// maxGuestName bounds a guest's display name, in runes (as the join
	// page's own guest form).
	maxGuestName = 64
	// GuestIdentityPrefix starts every guest's LiveKit identity. Matrix
	// identities never do: /get_token's are unpadded standard base64 (no
	// '-'), /sfu/get's start with '@'.
	GuestIdentityPrefix = names.GuestPrefix
)

// GuestLimiter limits how often a client may obtain a guest token;
// *ratelimit.Limiter implements it. The node shares one between the join
// page's guests and these.
type GuestLimiter interface {
	// Allow reports whether the client r comes from may have one more
	// token now and, when not, how long it should wait.
	Allow(r *http.Request) (ok bool, retryAfter time.Duration)
}

// MeetingAPIOptions configures a MeetingAPI.
type MeetingAPIOptions struct {
	// SFU mints guest tokens and tells whether a call runs. Required.
	SFU SFU
	// HomeserverURL is the homeserver's client-server API as browsers
	// reach it (matrix.homeserver_public_url). Required.
	HomeserverURL string
	// ServerName is the homeserver's server name. Required.
	ServerName string
	// Guests lets people without an account join a running call
	// (matrix.meeting_guests).
	Guests bool
	// Limiter, when set, limits the guest tokens one client obtains;
	// beyond the limit PathMeetingGuest answers 429 M_LIMIT_EXCEEDED.
	Limiter GuestLimiter
	// URL is the SFU websocket base answered to guests ("wss://rtc.example").
	URL string
	// TokenTTL is the guest tokens' lifetime; DefaultTokenTTL when zero.
	TokenTTL time.Duration
	Log      zerolog.Logger
}

// MeetingAPI serves the join page's Matrix API: GET PathMeetingInfo tells
// the page where to sign in and whether guests may join; POST
// PathMeetingGuest mints a guest token for a Matrix room's call, only when
// the policy allows guests and the call already runs on this node (guests
// never start one).
type MeetingAPI struct {
	sfu  SFU
	info []byte // the PathMeetingInfo answer, fixed at start
	url  string
	ttl  time.Duration
	log  zerolog.Logger
	// guests is matrix.meeting_guests.
	guests  bool
	limiter GuestLimiter
}

// meetingInfo is the answer of GET PathMeetingInfo.
type meetingInfo struct {
	HomeserverURL string `json:"homeserver_url"`
	ServerName    string `json:"server_name"`
	Guests        bool   `json:"guests"`
}

// meetingGuestRequest is the body of POST PathMeetingGuest: the Matrix room
// and meeting name of a "!meet" link, and the guest's display name.
type meetingGuestRequest struct {
	RoomID  string `json:"room_id"`
	Meeting string `json:"meeting"`
	Name    string `json:"name"`
}

// meetingGuestResponse has the shape of the page's own POST /api/join
// answer, so that the page connects the same way.
type meetingGuestResponse struct {
	URL      string `json:"url"`
	Token    string `json:"token"`
	Identity string `json:"identity"`
}

// NewMeetingAPI checks opts and returns the API.
func NewMeetingAPI(opts MeetingAPIOptions) (*MeetingAPI, error) {
	var errs []error
	if opts.SFU == nil {
		errs = append(errs, errors.New("SFU is required"))
	}
	if u, err := url.Parse(opts.HomeserverURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("homeserver url %q: want http:// or https://", opts.HomeserverURL))
	}
	if _, err := ParseServerName(opts.ServerName); err != nil {
		errs = append(errs, fmt.Errorf("server name: %w", err))
	}
	if err := checkLiveKitURL(opts.URL); err != nil {
		errs = append(errs, err)
	}
	if opts.TokenTTL < 0 {
		errs = append(errs, errors.New("negative token TTL"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: meeting api: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	info, err := json.Marshal(meetingInfo{
		HomeserverURL: strings.TrimSuffix(opts.HomeserverURL, "/"), ServerName: opts.ServerName, Guests: opts.Guests,
	})
	if err != nil {
		return nil, err
	}
	ttl := opts.TokenTTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	return &MeetingAPI{
		sfu: opts.SFU, info: info, url: opts.URL, ttl: ttl, guests: opts.Guests, limiter: opts.Limiter,
		log: opts.Log.With().Str("component", "meeting_api").Logger(),
	}, nil
}

// ServeHTTP serves PathMeetingInfo and PathMeetingGuest; any other path
// gets 404 M_UNRECOGNIZED.
func (a *MeetingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case PathMeetingInfo:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED", Message: "Method not allowed"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(a.info)
	case PathMeetingGuest:
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED", Message: "Method not allowed"})
			return
		}
		log := a.log.With().Str("endpoint", r.URL.Path).Str("remote_addr", r.RemoteAddr).Logger()
		resp, aerr := a.guest(log.WithContext(r.Context()), w, r)
		if aerr != nil {
			log.Info().Str("errcode", aerr.ErrCode).Int("status", aerr.Status).Msg("guest refused")
			writeError(w, aerr)
			return
		}
		b, _ := json.Marshal(resp) // three strings: cannot fail
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	default:
		writeError(w, &apiError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED", Message: "Unrecognized request"})
	}
}

func (a *MeetingAPI) guest(ctx context.Context, w http.ResponseWriter, r *http.Request) (*meetingGuestResponse, *apiError) {
	if !a.guests {
		return nil, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN",
			Message: "Guests may not join this node's Matrix calls; sign in with your Matrix account"}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return nil, &apiError{Status: http.StatusUnsupportedMediaType, ErrCode: "M_NOT_JSON", Message: "Content type must be application/json"}
	}
	body, aerr := readBody(w, r, maxGuestBody)
	if aerr != nil {
		return nil, aerr
	}
	req, aerr := parseMeetingGuest(body)
	if aerr != nil {
		return nil, aerr
	}
	room := MeetRoom(req.RoomID, req.Meeting)
	log := zerolog.Ctx(ctx).With().Str("matrix_room", req.RoomID).Str("room", room).Logger()
	// The call must run already: a guest never starts one, so a link
	// passed around outside the agency opens nothing by itself.
	if !a.sfu.RoomExists(room) {
		return nil, &apiError{Status: http.StatusNotFound, ErrCode: "M_NOT_FOUND",
			Message: "No call is running for this room yet; guests can join once someone from the agency has started it"}
	}
	// Counted only here, when a token would be issued: the page asks
	// every 1.5 s while the call has not started, and that costs nothing.
	if a.limiter != nil {
		if ok, retry := a.limiter.Allow(r); !ok {
			return nil, &apiError{Status: http.StatusTooManyRequests, ErrCode: "M_LIMIT_EXCEEDED",
				Message: "Too many guest joins from your address; try again later", RetryAfter: retry}
		}
	}
	identity := names.GuestIdentity()
	jwt, err := a.sfu.MintToken(room, identity, req.Name, Grant{
		CanPublish: true, CanSubscribe: true, CanPublishData: true, TTL: a.ttl,
		Attributes: map[string]string{AttrMeetingGuest: "1"},
	})
	if err != nil {
		log.Error().Err(err).Msg("mint guest token")
		return nil, internalError("Could not issue a token, try again later")
	}
	log.Info().Str("identity", identity).Msg("meeting guest token issued")
	return &meetingGuestResponse{URL: a.url, Token: jwt, Identity: identity}, nil
}

// parseMeetingGuest parses and validates a PathMeetingGuest body: a valid
// room ID, a meeting name as "!meet <name>" accepts (empty for the room's
// call), and a display name of 1 to maxGuestName printable characters
// (surrounding white space dropped).
func parseMeetingGuest(body []byte) (meetingGuestRequest, *apiError) {
	var r meetingGuestRequest
	if e := decodeBody(body, &r); e != nil {
		return r, e
	}
	if !validRoomID(r.RoomID) {
		return r, badJSON("Invalid `room_id`")
	}
	if r.Meeting != "" && (!validText(r.Meeting) || len(r.Meeting) > maxMeetName) {
		return r, badJSON("Invalid `meeting`")
	}
	r.Name = strings.TrimSpace(r.Name)
	if !names.Printable(r.Name, maxGuestName) {
		return r, &apiError{Status: http.StatusBadRequest, ErrCode: "M_INVALID_PARAM", Message: "name must be 1 to 64 printable characters"}
	}
	return r, nil
}
