// Package matrix is the node's Matrix side: the MatrixRTC token service that
// Element clients call for a LiveKit token (compatible with
// element-hq/lk-jwt-service), the OpenID and room-membership checks behind it,
// and the application service that keeps the node informed of rooms and calls.
//
// It owns the Matrix protocol details (identifiers, OpenID, client-server and
// application-service APIs) and the rules deciding who may join which call.
// What it needs from the SFU it asks through the SFU interface, which cmd/
// implements; it must not import media, bridge/xmpp or federation.
package matrix
