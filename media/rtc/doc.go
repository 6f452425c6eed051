// Package rtc is the WebRTC transport of the media core: the node's pion
// engine and its one UDP socket, and for each participant the two peer
// connections LiveKit clients use (Transport), their negotiation and
// trickled candidates, the DTLS hooks that give the node the subscriber
// connection's SRTP keys, and the sinks that send each subscription's
// packets, sealed by the node itself straight into a sendmmsg batch (the
// direct path) or through pion's SRTP writer, one way for the life of each
// outgoing stream. It also makes federation trunks (Trunk): one peer
// connection between two nodes for a call, on which each sends the other
// its publishers' tracks; their owner, the federation package, carries the
// first offer and answer and uses their control channel. It implements
// media.Transport, media.TrackSink,
// media.TrackSource and media.SenderReporter; media never imports it.
//
// It speaks the core's types, but for the data channels: their labels and
// their packets are LiveKit's, so it reads each DataPacket a participant
// sends and stamps its sender before the room relays it (datachannel.go).
package rtc
