package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
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

// RoomJoiner is what a MembershipChecker may also do: make the node's bot
// join a room on its own, so that the room's membership becomes readable.
// The token service asks it when a local user wants a call in a room the
// bot is not in (rooms Element Call creates are public; a room whose
// invitation never reached the node can be joined too).
type RoomJoiner interface {
	// JoinRoom joins the bot to roomID, asking the homeservers in via to
	// help when the local homeserver is not in the room yet. An error
	// wrapping ErrBotCannotJoin means the room does not let the bot in.
	JoinRoom(ctx context.Context, roomID string, via []string) error
}

// maxJoinBody bounds a join answer ({"room_id": …}) or error.
const maxJoinBody = 64 << 10

// url returns the homeserver URL for path segments, each escaped, with the
// bot as the user the as_token acts for.
func (c *ClientMembership) url(query url.Values, segments ...string) string {
	u := *c.homeserver
	raw := u.EscapedPath()
	for _, s := range segments {
		u.Path += "/" + s
		raw += "/" + url.PathEscape(s)
	}
	u.RawPath = raw
	if query == nil {
		query = url.Values{}
	}
	query.Set("user_id", c.botUserID)
	u.RawQuery = query.Encode()
	return u.String()
}

// JoinRoom implements RoomJoiner with POST /_matrix/client/v3/join/{roomId}
// as the bot (spec: Client-Server API, "Joining rooms"; server_name lists
// the servers to join through). It succeeds at once when the bot is
// already joined.
func (c *ClientMembership) JoinRoom(ctx context.Context, roomID string, via []string) error {
	q := url.Values{}
	for _, v := range via {
		if v != "" && !slices.Contains(q["server_name"], v) {
			q.Add("server_name", v)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		c.url(q, "_matrix", "client", "v3", "join", roomID), strings.NewReader("{}"))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMembershipUnavailable, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.asToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: join %s: %w", ErrMembershipUnavailable, roomID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxJoinBody))
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound:
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("%w: %s: status %d %.40s", ErrBotCannotJoin, roomID, resp.StatusCode, e.ErrCode)
	default:
		return fmt.Errorf("%w: join %s: status %d", ErrMembershipUnavailable, roomID, resp.StatusCode)
	}
}

// IsJoined implements MembershipChecker.
func (c *ClientMembership) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		c.url(nil, "_matrix", "client", "v3", "rooms", roomID, "joined_members"), nil)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrMembershipUnavailable, err)
	}
	status, body, err := callHomeserver(c.client, req, c.asToken, maxMembersBody)
	if errors.Is(err, errAnswerTooLong) || (err != nil && status != 0) {
		return false, fmt.Errorf("%w: read joined_members of %s", ErrMembershipUnavailable, roomID)
	} else if err != nil {
		return false, fmt.Errorf("%w: %w", ErrMembershipUnavailable, err)
	}
	if status == http.StatusForbidden || status == http.StatusNotFound {
		return false, fmt.Errorf("%w: %w: %s (status %d)", ErrMembershipUnavailable, ErrBotNotInRoom, roomID, status)
	}
	if status != http.StatusOK {
		return false, fmt.Errorf("%w: joined_members of %s: status %d", ErrMembershipUnavailable, roomID, status)
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
