// Package media is the core of Entente's selective forwarding unit: rooms,
// participants of any kind, published tracks (with simulcast layers),
// subscriptions, RTP forwarding with sequence number and timestamp
// rewriting, NACKs answered from a packet cache with a budget, keyframe
// requests paced per layer, audio levels and active speakers, and data
// packets.
//
// It knows packets (pion/rtp, pion/rtcp), not peer connections. What carries
// a participant's media is a Transport (transport.go): media/rtc's two
// WebRTC peer connections for a LiveKit client, and next the federation
// trunk, the Jingle gateway and the recorder. A transport feeds each incoming
// stream's Layer and binds each subscription's DownTrack to a TrackSink of
// its own. What the room tells a participant goes through its Signaller,
// which media/livekit implements over the LiveKit websocket.
//
// Its data model is still LiveKit's (github.com/livekit/protocol/livekit):
// participant and track infos, data packets, disconnect reasons.
//
// media imports only internal/*, pion's RTP and RTCP packages and
// livekit/protocol (internal/archtest checks it). It must never import
// Matrix, XMPP, federation or web code, media/livekit or media/rtc.
package media
