// Package livekit serves the LiveKit signal protocol (the /rtc websocket
// with protobuf SignalRequest/SignalResponse frames from
// github.com/livekit/protocol) on top of the media package, and checks
// LiveKit access tokens. Every LiveKit SDK, Element Call and the node's join
// page connect through it.
//
// The core speaks its own types (media/model.go); this package converts
// LiveKit's messages to them and back at its boundary (convert.go), so
// that no LiveKit protobuf reaches the core.
//
// It imports media, internal/* and livekit/protocol; never Matrix, XMPP or
// federation code.
package livekit
