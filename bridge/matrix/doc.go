// Package matrix is the node's Matrix side: the MatrixRTC token service that
// Element clients call for a LiveKit token (compatible with
// element-hq/lk-jwt-service, and MSC4195's homeserver endpoint), the OpenID
// and room-membership checks behind it (the homeserver's answer as the bot,
// the bot joining rooms it may join, the node's own record of rooms, the
// unknown-membership policy), and the application service and the bot's own
// /sync that keep the node informed of rooms, invitations and calls.
//
// It owns the Matrix protocol details (identifiers, OpenID, client-server and
// application-service APIs) and the rules deciding who may join which call.
// What it needs from the SFU it asks through the SFU interface, which cmd/
// implements; it must not import media, bridge/xmpp or federation.
package matrix
