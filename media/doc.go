// Package media is Entente's selective forwarding unit: rooms, participants,
// published tracks (with simulcast layers), subscriptions, RTP forwarding with
// SSRC, sequence number and timestamp rewriting, RTCP handling (NACK answered
// from a packet cache, PLI/FIR relayed with rate limiting), audio levels and
// active speakers, and data packets.
//
// Its data model is LiveKit's (github.com/livekit/protocol/livekit), because
// that is what every client of the node speaks, but it knows nothing of the
// wire: signalling reaches a participant through the Signaller interface, which
// media/livekit (and later the Jingle gateway and the federation trunk)
// implement.
//
// media imports only internal/*, pion and livekit/protocol. It must never
// import Matrix, XMPP, federation or web code.
package media
