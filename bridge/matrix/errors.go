package matrix

import "errors"

var (
	// ErrInvalidServerName is returned for a Matrix server name that is not
	// host[:port] as the Matrix specification's server-name grammar allows.
	ErrInvalidServerName = errors.New("matrix: invalid server name")

	// ErrOpenIDRejected is returned when the homeserver does not vouch for an
	// OpenID token (unknown, expired or forged token).
	ErrOpenIDRejected = errors.New("matrix: openid token rejected by homeserver")

	// ErrOpenIDUnavailable is returned when the homeserver could not be asked
	// about an OpenID token (network error, timeout, malformed answer).
	ErrOpenIDUnavailable = errors.New("matrix: openid userinfo unavailable")

	// ErrMembershipUnavailable is returned when a room's membership could not
	// be read, for example because the node's bot is not in the room.
	ErrMembershipUnavailable = errors.New("matrix: room membership unavailable")

	// ErrBotNotInRoom is returned (wrapped in ErrMembershipUnavailable) when
	// the homeserver refuses to list a room's members to the node's bot.
	ErrBotNotInRoom = errors.New("matrix: bot is not in the room")

	// ErrAccessTokenRejected is returned when the homeserver does not know
	// a client's access token (MSC4195's homeserver get_token).
	ErrAccessTokenRejected = errors.New("matrix: access token rejected by homeserver")

	// ErrBotCannotJoin is returned when the homeserver refuses to let the
	// node's bot join a room (the room is neither public nor inviting it).
	ErrBotCannotJoin = errors.New("matrix: bot may not join the room")

	// ErrNotAdmitted is returned by Bridge.Admit when a token's holder is no
	// longer joined to the Matrix room the token was issued for.
	ErrNotAdmitted = errors.New("matrix: not joined to the room")

	// ErrInvalidConfig is wrapped by every error from a configuration check.
	ErrInvalidConfig = errors.New("matrix: invalid configuration")

	// ErrToDeviceInvalid is returned by BotSync.SendToDevice for an event
	// type the bot does not send (not m.call.* or org.entente.*), an
	// invalid recipient, or content that is not JSON.
	ErrToDeviceInvalid = errors.New("matrix: invalid to-device message")

	// ErrToDeviceTooLarge is returned by BotSync.SendToDevice for a request
	// larger than MaxToDeviceRequest.
	ErrToDeviceTooLarge = errors.New("matrix: to-device message too large")

	// ErrToDeviceRefused is wrapped by ToDeviceError, the homeserver's
	// refusal of a to-device message.
	ErrToDeviceRefused = errors.New("matrix: to-device message refused by homeserver")
)
