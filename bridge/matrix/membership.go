package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxMembersBody bounds a joined_members answer (large rooms run to a few MB).
const maxMembersBody = 16 << 20

// MembershipChecker tells whether a Matrix user is joined to a room. The
// token service asks it before issuing any token.
type MembershipChecker interface {
	// IsJoined reports whether userID's membership in roomID is "join". An
	// error means the answer is unknown (wrapping ErrMembershipUnavailable).
	IsJoined(ctx context.Context, roomID, userID string) (bool, error)
}

// ClientMembership checks membership with the homeserver's client-server API
// as the application service's bot:
// GET /_matrix/client/v3/rooms/{roomId}/joined_members?user_id=<bot>,
// authorised by the as_token. It sees local and federated members of every
// room the bot is joined to; the homeserver refuses rooms the bot is not in
// (the bot must be invited to rooms whose calls the node serves).
type ClientMembership struct {
	homeserver *url.URL
	asToken    string
	botUserID  string
	client     *http.Client
}

// NewClientMembership returns a checker for the homeserver at homeserverURL
// (its client-server API base, e.g. "http://127.0.0.1:8008").
func NewClientMembership(homeserverURL, asToken, botUserID string, client *http.Client) (*ClientMembership, error) {
	u, err := url.Parse(homeserverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: homeserver url %q", ErrInvalidConfig, homeserverURL)
	}
	if asToken == "" || userIDServer(botUserID) == "" {
		return nil, fmt.Errorf("%w: as_token and bot user ID are required", ErrInvalidConfig)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &ClientMembership{homeserver: u, asToken: asToken, botUserID: botUserID, client: client}, nil
}

// IsJoined implements MembershipChecker.
func (c *ClientMembership) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	u := *c.homeserver
	u.Path += "/_matrix/client/v3/rooms/" + roomID + "/joined_members"
	u.RawPath = c.homeserver.EscapedPath() + "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/joined_members"
	u.RawQuery = url.Values{"user_id": {c.botUserID}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrMembershipUnavailable, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.asToken)
	resp, err := c.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrMembershipUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMembersBody+1))
	if err != nil || len(body) > maxMembersBody {
		return false, fmt.Errorf("%w: read joined_members of %s", ErrMembershipUnavailable, roomID)
	}
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound {
		return false, fmt.Errorf("%w: %w: %s (status %d)", ErrMembershipUnavailable, ErrBotNotInRoom, roomID, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%w: joined_members of %s: status %d", ErrMembershipUnavailable, roomID, resp.StatusCode)
	}
	var jm struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	if err := json.Unmarshal(body, &jm); err != nil {
		return false, fmt.Errorf("%w: joined_members of %s: %w", ErrMembershipUnavailable, roomID, err)
	}
	_, ok := jm.Joined[userID]
	return ok, nil
}
