package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// SendToDevice sends one to-device message of type eventType from the
// bot's device to userID's device deviceID (spec: Client-Server API, PUT
// /_matrix/client/v3/sendToDevice/{eventType}/{txnId}): federation trunks
// between nodes are signalled this way, bot device to bot device
// (BotDeviceID), with MSC3401's m.call.* events. The homeservers
// authenticate the sender; the content is sent unencrypted.
//
// eventType must start with "m.call." or "org.entente." and the request
// body may not exceed MaxToDeviceRequest bytes (ErrToDeviceInvalid,
// ErrToDeviceTooLarge). It uses the access token Run logged in with, or
// logs the bot in itself when there is none yet; a token the homeserver
// rejects is replaced once. Another refusal is ErrToDeviceRefused.
func (s *BotSync) SendToDevice(ctx context.Context, userID, deviceID, eventType string, content any) error {
	if !toDeviceTypeAccepted(eventType) {
		return fmt.Errorf("%w: event type %q", ErrToDeviceInvalid, eventType)
	}
	if !validUserID(userID) || !validText(deviceID) {
		return fmt.Errorf("%w: recipient %q device %q", ErrToDeviceInvalid, userID, deviceID)
	}
	body, err := json.Marshal(map[string]map[string]map[string]any{"messages": {userID: {deviceID: content}}})
	if err != nil {
		return fmt.Errorf("%w: content: %w", ErrToDeviceInvalid, err)
	}
	if len(body) > MaxToDeviceRequest {
		return fmt.Errorf("%w: %d bytes", ErrToDeviceTooLarge, len(body))
	}
	// One transaction ID for the message, kept for the retry after a new
	// login: the retry is the same message.
	txnID := s.txnPrefix + strconv.FormatUint(s.txnSeq.Add(1), 10)
	u := *s.homeserver
	u.Path += "/_matrix/client/v3/sendToDevice/" + eventType + "/" + txnID
	u.RawPath = s.homeserver.EscapedPath() + "/_matrix/client/v3/sendToDevice/" +
		url.PathEscape(eventType) + "/" + url.PathEscape(txnID)

	rejected := ""
	for attempt := 0; ; attempt++ {
		token, err := s.session(ctx, rejected)
		if err != nil {
			return fmt.Errorf("send to-device %s: %w", eventType, err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("send to-device %s: %w", eventType, err)
		}
		req.Header.Set("Content-Type", "application/json")
		status, raw, err := callHomeserver(s.client, req, token, maxSendAnswer)
		if errors.Is(err, errAnswerTooLong) {
			return fmt.Errorf("send to-device %s: answer too long", eventType)
		} else if err != nil {
			return fmt.Errorf("send to-device %s: %w", eventType, err)
		}
		switch {
		case status == http.StatusOK:
			return nil
		case status == http.StatusUnauthorized && attempt == 0:
			s.log.Info().Msg("bot access token rejected; logging in again")
			rejected = token
			continue
		}
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.Unmarshal(raw, &e)
		if len(e.ErrCode) > 64 {
			e.ErrCode = e.ErrCode[:64]
		}
		return &ToDeviceError{Status: status, ErrCode: e.ErrCode}
	}
}

// ToDeviceError is the homeserver's refusal of a sendToDevice request. It
// wraps ErrToDeviceRefused.
type ToDeviceError struct {
	Status int
	// ErrCode is the Matrix errcode of the answer, when it had one.
	ErrCode string
}

func (e *ToDeviceError) Error() string {
	return fmt.Sprintf("%v: status %d %s", ErrToDeviceRefused, e.Status, e.ErrCode)
}

func (e *ToDeviceError) Unwrap() error { return ErrToDeviceRefused }
