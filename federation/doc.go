// Package federation links this node's SFU with other agencies' nodes, so
// that one Matrix call spans agencies while each person's media and
// signalling go to their own agency's node only (DESIGN.md section 4).
//
// For each call (a Matrix room's MatrixRTC session, one media room here)
// that holds members of this node's homeserver and of a peer's, the two
// nodes keep one trunk: one WebRTC connection (media/rtc.Trunk) set up with
// Matrix to-device call signalling between the nodes' bots (m.call.invite,
// m.call.answer, m.call.candidates, m.call.hangup, with the media room's
// name as conf_id), so both homeservers authenticate both ends. The node
// whose bot user ID sorts lower offers; the other only answers.
//
// Over the trunk's control channel each node announces its own
// participants and their tracks (proto.go). The other node makes each of
// them a participant of its own media room, with the same identity and
// TrackInfo (payloads untouched, so per-participant E2EE keys still
// match), and asks for each track at the one layer its own subscribers
// want most (UpTrack.Demand): a track crosses once, whatever the number
// of subscribers, and a layer nobody watches does not cross. A hidden
// "export" participant, one per trunk, subscribes to the local tracks the
// peer wants and sends them on the trunk. Nothing that came from a peer is
// ever sent on to any node (no echo, no transit: a federation is a full
// mesh).
//
// A peer that keeps its own token service URL (Peer.URL) gets the
// redirect (FEDERATION.md, "The redirect, exactly"): the link pairs two
// rooms over its one trunk, this node's media room R with the peer's
// mirror room of this transport, and this node's mirror room of the
// peer's transport, M(here<-peer) (MirrorRoom), with the peer's R; each
// participant message names its transport, and only publishers are
// announced. A token request a peer's user makes to this node's token
// service is forwarded to the peer's bot (org.entente.token.request,
// token.go), whose node answers with a token for its own SFU's mirror
// room; a request the peer forwards here is answered by the TokenIssuer.
//
// Trust: links are made only with servers in the peer list, only for
// rooms both bots are joined to and whose call has members of both, and
// only with the peer's configured bot (Config.Peers); token requests and
// answers likewise come only from a peer's configured bot.
//
// Audit (audit.go): every trunk, every refused invite and every forwarded
// token request, each way, is recorded through the AuditLog cmd wires to
// the store: peer, rooms, call (or req_id), times, bytes each way on the
// wire (Conn.Bytes) or of the request and answer, and the outcome; never
// a token or a secret.
//
// It imports media, never bridge/matrix or internal/store: cmd adapts the
// token service and the audit log.
package federation
