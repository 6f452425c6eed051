package matrix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxRequestBody bounds a token request. Real ones are well under 2 KiB.
const maxRequestBody = 16 << 10

// maxIDLen bounds every identifier taken from a request (the Matrix spec
// caps user and room IDs at 255 bytes).
const maxIDLen = 255

// openIDToken is the OpenID token a client obtained from its homeserver
// (spec: Client-Server API, "OpenID", POST /user/{userId}/openid/request_token).
type openIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	// Dendrite answers an absolute time here, others a lifetime: unused.
	ExpiresIn json.Number `json:"expires_in"`
}

// rtcMember identifies the MatrixRTC membership asking (MSC4143/MSC4195).
type rtcMember struct {
	ID              string `json:"id"`
	ClaimedUserID   string `json:"claimed_user_id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// getTokenRequest is the body of POST /get_token (lk-jwt-service requests.go
// SFURequest). The delay_* fields ask the service to keep a delayed leave
// event alive (MSC4140); the node ends memberships itself, so they are
// checked for shape and otherwise ignored.
type getTokenRequest struct {
	RoomID        string      `json:"room_id"`
	SlotID        string      `json:"slot_id"`
	OpenIDToken   openIDToken `json:"openid_token"`
	Member        rtcMember   `json:"member"`
	DelayID       string      `json:"delay_id,omitempty"`
	DelayTimeout  int64       `json:"delay_timeout,omitempty"`
	DelayCSAPIURL string      `json:"delay_cs_api_url,omitempty"`
}

// sfuGetRequest is the body of the legacy POST /sfu/get (lk-jwt-service
// LegacySFURequest).
type sfuGetRequest struct {
	Room          string      `json:"room"`
	OpenIDToken   openIDToken `json:"openid_token"`
	DeviceID      string      `json:"device_id"`
	DelayID       string      `json:"delay_id,omitempty"`
	DelayTimeout  int64       `json:"delay_timeout,omitempty"`
	DelayCSAPIURL string      `json:"delay_cs_api_url,omitempty"`
}

// apiError is an error answered to a client as a Matrix error
// {"errcode": …, "error": …} (spec: Client-Server API, "Standard error
// response"). Its message never carries internals.
type apiError struct {
	Status  int
	ErrCode string
	Message string
	// RetryAfter is the wait of an M_LIMIT_EXCEEDED error, answered as
	// retry_after_ms and Retry-After; zero for other errors.
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.ErrCode + ": " + e.Message }

func badJSON(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, ErrCode: "M_BAD_JSON", Message: msg}
}

// notJSON is lk-jwt-service's answer to a body that does not decode.
func notJSON() *apiError {
	return &apiError{Status: http.StatusBadRequest, ErrCode: "M_NOT_JSON", Message: "Error reading request"}
}

func tooLarge() *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, ErrCode: "M_TOO_LARGE", Message: "Request body too large"}
}

// readBody reads a request body of at most limit bytes: a larger one is
// answered M_TOO_LARGE, one that cannot be read M_NOT_JSON.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge()
		}
		return nil, notJSON()
	}
	return body, nil
}

// checkLiveKitURL accepts the ws:// or wss:// URL clients are told to
// connect to.
func checkLiveKitURL(raw string) error {
	if u, err := url.Parse(raw); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("url %q: want ws:// or wss://", raw)
	}
	return nil
}

// decodeBody decodes exactly one JSON object from body into v. Unknown
// fields are ignored so that newer clients keep working.
func decodeBody(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return notJSON()
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return notJSON()
	}
	return nil
}

// parseGetToken parses and validates a /get_token body.
func parseGetToken(body []byte) (getTokenRequest, *apiError) {
	var r getTokenRequest
	if e := decodeBody(body, &r); e != nil {
		return r, e
	}
	if r.RoomID == "" || r.SlotID == "" {
		return r, badJSON("The request body is missing `room_id` or `slot_id`")
	}
	if r.Member.ID == "" || r.Member.ClaimedUserID == "" || r.Member.ClaimedDeviceID == "" {
		return r, badJSON("The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`")
	}
	if e := checkOpenIDToken(r.OpenIDToken); e != nil {
		return r, e
	}
	if e := checkDelay(r.DelayID, r.DelayTimeout); e != nil {
		return r, e
	}
	if !validRoomID(r.RoomID) || !validText(r.SlotID) || !validText(r.Member.ID) || !validText(r.Member.ClaimedDeviceID) {
		return r, badJSON("Invalid `room_id`, `slot_id` or `member`")
	}
	if userIDServer(r.Member.ClaimedUserID) == "" || !validText(r.Member.ClaimedUserID) {
		return r, badJSON("Invalid `claimed_user_id`")
	}
	return r, nil
}

// parseSFUGet parses and validates a legacy /sfu/get body.
func parseSFUGet(body []byte) (sfuGetRequest, *apiError) {
	var r sfuGetRequest
	if e := decodeBody(body, &r); e != nil {
		return r, e
	}
	if r.Room == "" {
		return r, badJSON("Missing room parameter")
	}
	if e := checkOpenIDToken(r.OpenIDToken); e != nil {
		return r, e
	}
	if e := checkDelay(r.DelayID, r.DelayTimeout); e != nil {
		return r, e
	}
	// lk-jwt-service accepts an empty device_id; so do we.
	if !validRoomID(r.Room) || (r.DeviceID != "" && !validText(r.DeviceID)) {
		return r, badJSON("Invalid `room` or `device_id`")
	}
	return r, nil
}

func checkOpenIDToken(t openIDToken) *apiError {
	if t.AccessToken == "" || t.MatrixServerName == "" {
		return badJSON("The request body `openid_token` is missing `access_token` or `matrix_server_name`")
	}
	if len(t.AccessToken) > maxAccessTokenLen || len(t.MatrixServerName) > maxServerNameLen {
		return badJSON("Invalid `openid_token`")
	}
	return nil
}

// checkDelay requires both or neither of delay_id and delay_timeout, as
// lk-jwt-service does.
func checkDelay(id string, timeout int64) *apiError {
	if (id != "") != (timeout > 0) {
		return badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	if timeout < 0 || len(id) > maxIDLen {
		return badJSON("Invalid `delay_id` or `delay_timeout`")
	}
	return nil
}

// validText accepts a non-empty identifier of at most maxIDLen bytes
// without control characters.
func validText(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// validRoomID accepts "!opaque" or "!opaque:server" (room version 12 IDs
// carry no server name).
func validRoomID(s string) bool {
	return strings.HasPrefix(s, "!") && len(s) > 1 && validText(s) && !strings.ContainsAny(s, "/?# ")
}
