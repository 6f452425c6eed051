// Package turn is the node's embedded TURN server (RFC 8656, with pion/turn):
// the way in for clients whose network lets through neither UDP nor TCP to
// the media port, only TLS on a port such as 443 (TURN over TLS), or only
// UDP to a TURN port. It relays to the node's own media port and nowhere
// else, so it is no open relay: a client can use it to reach this node's
// SFU only.
//
// Clients get short-lived credentials in the LiveKit join response's ICE
// servers, minted with a secret only the node holds, in the form of the
// TURN REST API (draft-uberti-behave-turn-rest-00): username
// "<expiry>:<identity>", password base64(HMAC-SHA1(secret, username)).
//
// It imports pion and the standard library only: never media/livekit,
// media/rtc, bridge or federation. cmd/ wires it to the signal server.
package turn
