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
)

// MSC4195's newer token flow (proposals/4195-matrixrtc-livekit.md,
// "Acquiring LiveKit access tokens"): the client asks its own homeserver,
// with its access token, for a token for an SFU named by server name and
// WebSocket URL. Homeservers do not serve it themselves yet (Dendrite
// v0.13.8 does not); the agency's reverse proxy routes these paths from the
// homeserver's domain to the node, as it does rtc/transports.
const (
	// PathLiveKitGetToken is the stable client endpoint.
	PathLiveKitGetToken = "/_matrix/client/v1/rtc/livekit/get_token"
	// PathLiveKitGetTokenUnstable is the prefix clients use today
	// (matrix-js-sdk 43, MatrixClient._unstable_getLivekitToken).
	PathLiveKitGetTokenUnstable = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit/get_token"
)

// maxWhoAmIBody bounds a whoami answer ({"user_id", "device_id", …}).
const maxWhoAmIBody = 64 << 10

// UserAuthenticator resolves a client's Matrix access token to its user:
// the homeserver's GET /_matrix/client/v3/account/whoami.
type UserAuthenticator interface {
	// WhoAmI returns the user the access token belongs to. An error
	// wrapping ErrAccessTokenRejected means the homeserver does not know
	// the token; any other error that it could not be asked.
	WhoAmI(ctx context.Context, accessToken string) (string, error)
}

// HomeserverWhoAmI implements UserAuthenticator against the node's own
// homeserver.
type HomeserverWhoAmI struct {
	homeserver *url.URL
	client     *http.Client
}

// NewHomeserverWhoAmI returns an authenticator for the homeserver's
// client-server API at homeserverURL.
func NewHomeserverWhoAmI(homeserverURL string, client *http.Client) (*HomeserverWhoAmI, error) {
	u, err := url.Parse(homeserverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: homeserver url %q", ErrInvalidConfig, homeserverURL)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &HomeserverWhoAmI{homeserver: u, client: client}, nil
}

// WhoAmI implements UserAuthenticator (spec: Client-Server API,
// GET /_matrix/client/v3/account/whoami).
func (h *HomeserverWhoAmI) WhoAmI(ctx context.Context, accessToken string) (string, error) {
	u := *h.homeserver
	u.Path += "/_matrix/client/v3/account/whoami"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("whoami: %w", err)
	}
	status, body, err := callHomeserver(h.client, req, accessToken, maxWhoAmIBody)
	if errors.Is(err, errAnswerTooLong) || (err != nil && status != 0) {
		return "", errors.New("whoami: answer unreadable or too long")
	} else if err != nil {
		return "", fmt.Errorf("whoami: %w", err)
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return "", fmt.Errorf("%w: status %d", ErrAccessTokenRejected, status)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("whoami: status %d", status)
	}
	var w struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(body, &w); err != nil || !validUserID(w.UserID) {
		return "", errors.New("whoami: malformed answer")
	}
	return w.UserID, nil
}

// liveKitTokenRequest is the body of MSC4195's client get_token.
type liveKitTokenRequest struct {
	ServerName string `json:"server_name"`
	URL        string `json:"url"`
	RoomID     string `json:"room_id"`
	SlotID     string `json:"slot_id"`
	MemberID   string `json:"member_id"`
}

// parseLiveKitTokenRequest parses and validates a get_token body.
func parseLiveKitTokenRequest(body []byte) (liveKitTokenRequest, *apiError) {
	var r liveKitTokenRequest
	if e := decodeBody(body, &r); e != nil {
		return r, e
	}
	if r.URL == "" || r.RoomID == "" || r.SlotID == "" || r.MemberID == "" {
		return r, badJSON("The request body is missing `url`, `room_id`, `slot_id` or `member_id`")
	}
	if !validRoomID(r.RoomID) || !validText(r.SlotID) || !validText(r.MemberID) || len(r.URL) > maxIDLen {
		return r, badJSON("Invalid `url`, `room_id`, `slot_id` or `member_id`")
	}
	if r.ServerName != "" {
		if _, err := ParseServerName(r.ServerName); err != nil {
			return r, badJSON("Invalid `server_name`")
		}
	}
	return r, nil
}

// MSC4195Identity returns the LiveKit identity MSC4195's newer flow gives a
// member: unpadded base64 of SHA-256 of the canonical JSON array
// [sender, member_id] (proposals/4195-matrixrtc-livekit.md, "LiveKit
// participant identities"). No device: the member ID is random per join.
func MSC4195Identity(userID, memberID string) string {
	return hashStrings(userID, memberID)
}

// serveLiveKitToken answers MSC4195's client get_token: the access token
// is checked with the homeserver, membership as for the other endpoints (a
// local user: the bot may join, the record and the policy apply), and the
// answer is {"jwt"} only. For this node's own SFU it issues the token; for
// another homeserver's it asks that homeserver over federation, signed as
// its own (remoteToken, fedtoken.go).
func (s *TokenService) serveLiveKitToken(ctx context.Context, r *http.Request, body []byte, who *requester) (*tokenResponse, *apiError) {
	log := zerolog.Ctx(ctx)
	if s.users == nil {
		return nil, &apiError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED", Message: "Unrecognized request"}
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return nil, &apiError{Status: http.StatusUnauthorized, ErrCode: "M_MISSING_TOKEN", Message: "Missing access token"}
	}
	if len(tok) > maxAccessTokenLen {
		return nil, &apiError{Status: http.StatusUnauthorized, ErrCode: "M_UNKNOWN_TOKEN", Message: "Unknown access token"}
	}
	req, aerr := parseLiveKitTokenRequest(body)
	if aerr != nil {
		return nil, aerr
	}
	who.roomID = req.RoomID
	userID, err := s.users.WhoAmI(ctx, tok)
	switch {
	case errors.Is(err, ErrAccessTokenRejected):
		log.Info().Err(err).Msg("access token rejected by the homeserver")
		return nil, &apiError{Status: http.StatusUnauthorized, ErrCode: "M_UNKNOWN_TOKEN", Message: "Unknown access token"}
	case err != nil:
		log.Warn().Err(err).Msg("whoami failed")
		return nil, &apiError{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "The homeserver could not be reached to check the access token"}
	}
	who.userID = userID
	if userIDServer(userID) != s.serverName {
		// The homeserver vouches only for its own users.
		return nil, unauthorized()
	}
	if req.ServerName != "" && req.ServerName != s.serverName {
		// Another homeserver's SFU: the user must be in the room here too
		// (the proposal has the origin check), then the node asks that
		// homeserver in its own homeserver's name.
		if _, aerr := s.checkMember(ctx, log.With().Str("matrix_room", req.RoomID).Str("user_id", userID).Logger(), req.RoomID, userID, true); aerr != nil {
			return nil, aerr
		}
		return s.remoteToken(ctx, req.ServerName, userID, req)
	}
	if strings.TrimSuffix(req.URL, "/") != strings.TrimSuffix(s.url, "/") {
		return nil, &apiError{Status: http.StatusBadRequest, ErrCode: "M_INVALID_PARAM", Message: "`url` is not this server's SFU"}
	}
	identity := MSC4195Identity(userID, req.MemberID)
	resp, aerr := s.issue(ctx, req.RoomID, RoomAlias(req.RoomID, req.SlotID), userID, "", identity, s.serverName, true)
	if aerr != nil {
		return nil, aerr
	}
	return &tokenResponse{JWT: resp.JWT}, nil
}
