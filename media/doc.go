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
// Its data model is its own (model.go): participant, track, room and
// speaker snapshots, add-track and track-settings requests, disconnect
// reasons. Front ends convert at their boundary (media/livekit to and from
// LiveKit's protobufs); the enumerations keep LiveKit's numeric values so
// that the conversion is a cast, and what a front end says of a track that
// the core does not use rides in TrackInfo.FrontEnd untouched. Data
// packets are bytes to the core: the sender's transport reads and stamps
// them (media/rtc for LiveKit's DataPacket) and names their destinations.
//
// media imports only internal/*, zerolog and pion's RTP and RTCP packages
// (internal/archtest checks it). It must never import LiveKit's protobufs
// (github.com/livekit/protocol/...), Matrix, XMPP, federation or web code,
// media/livekit or media/rtc.
package media
