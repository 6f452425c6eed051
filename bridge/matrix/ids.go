package matrix

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"
)

// LegacySlotID is the MatrixRTC slot that legacy `/sfu/get` requests are
// mapped to: lk-jwt-service (handler.go, processLegacySFURequest) hashes the
// room ID with this fixed slot, so one Matrix room has the same LiveKit room
// on both endpoints.
const LegacySlotID = "m.call#ROOM"

var unpaddedStdBase64 = base64.StdEncoding.WithPadding(base64.NoPadding)

// RoomAlias returns the LiveKit room name for a Matrix room and MatrixRTC
// slot: unpadded standard base64 of SHA-256 of the JSON array
// [roomID, slotID], as MSC4195 ("hash derivation") and lk-jwt-service's
// LiveKitRoomAliasFor define it.
//
// The array is encoded as canonical JSON (no HTML escaping). lk-jwt-service
// encodes it with Go's encoding/json, which also escapes '<', '>', '&',
// U+2028 and U+2029; room IDs and slot IDs never contain those in practice,
// and for every other input both encodings are the same bytes.
func RoomAlias(roomID, slotID string) string {
	return hashStrings(roomID, slotID)
}

// Identity returns the LiveKit participant identity that `/get_token` gives
// a MatrixRTC member: unpadded standard base64 of SHA-256 of the JSON array
// [userID, deviceID, memberID] (MSC4195; lk-jwt-service LiveKitIdentityFor).
//
// Clients compute the same value themselves (matrix-js-sdk's
// rtcBackendIdentity, with JavaScript's JSON.stringify) and look up E2EE
// keys and tracks under it byte for byte, so the JSON here follows
// JSON.stringify: no HTML escaping of '<', '>', '&' and U+2028/U+2029 left
// as they are.
func Identity(userID, deviceID, memberID string) string {
	return hashStrings(userID, deviceID, memberID)
}

// LegacyIdentity returns the LiveKit identity that `/sfu/get` gives a device:
// "@user:server:DEVICE" (lk-jwt-service processLegacySFURequest), which is
// also what state-event call members advertise.
func LegacyIdentity(userID, deviceID string) string {
	return userID + ":" + deviceID
}

func hashStrings(ss ...string) string {
	sum := sha256.Sum256(jsStringArray(ss))
	return unpaddedStdBase64.EncodeToString(sum[:])
}

// jsStringArray encodes ss as a JSON array exactly as JavaScript's
// JSON.stringify does (ECMA-262 QuoteJSONString): '"' and '\\' escaped,
// \b \f \n \r \t in short form, other code points below U+0020 as lowercase
// \u00xx, everything else literal UTF-8. Invalid UTF-8 becomes U+FFFD, as it
// does when a request body is decoded.
func jsStringArray(ss []string) []byte {
	n := 2
	for _, s := range ss {
		n += len(s) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSString(b, s)
	}
	return append(b, ']')
}

func appendJSString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range strings.ToValidUTF8(s, string(utf8.RuneError)) {
		switch r {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			if r < 0x20 {
				h := strconv.FormatInt(int64(r), 16)
				b = append(b, `\u00`...)
				if len(h) == 1 {
					b = append(b, '0')
				}
				b = append(b, h...)
				continue
			}
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// claimSafe reports whether s can go into a JWT claim that Element Call will
// decode: the payload is decoded with atob, which rejects base64url's '-' and
// '_'. For ASCII input those only come from a byte whose low six bits are
// 111110 or 111111 in the last position of a 3-byte group: '>', '?', '~' and
// DEL ('>' is escaped by Go's JSON encoder, the others are not). Non-ASCII
// bytes can produce them in any position.
func claimSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '?' || c == '~' || c == '>' {
			return false
		}
	}
	return true
}

// IsCallRoomName reports whether a LiveKit room name has the shape of the
// names RoomAlias gives Matrix calls: unpadded standard base64 of a
// SHA-256 digest (43 characters).
func IsCallRoomName(name string) bool {
	if len(name) != unpaddedStdBase64.EncodedLen(sha256.Size) {
		return false
	}
	_, err := unpaddedStdBase64.DecodeString(name)
	return err == nil
}
