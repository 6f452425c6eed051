// Package loadgen drives a LiveKit-protocol SFU (Entente or livekit-server)
// with many LiveKit Go SDK participants on one machine and measures what the
// server costs per forwarded packet: publishers send generated Opus and VP8
// (internal/rtpgen) with embedded send times, subscribers count what arrives,
// and a steady-state window is bracketed by readings of the server's CPU time
// and memory from /proc.
//
// In two-node mode (Config.URLB) the publishers join one node and the
// subscribers another that federates with it, so that every packet the
// subscribers receive crossed the nodes' trunk; FederationTable sets such
// runs beside the same load on one node.
//
// It owns the participants it connects and every goroutine it starts; Run
// returns only after they are stopped or a bounded teardown gave up on them.
// It talks to servers only through the signal protocol and only on loopback.
// It must not import media, bridge, federation or cmd: it measures a server
// from the outside.
package loadgen
