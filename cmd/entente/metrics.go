package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/federation"
	"entente.dev/entente/media"
)

// metricsSource is what the metrics endpoint reads at each scrape.
type metricsSource struct {
	sfu *media.SFU
	// links lists the federation trunks; nil without federation.
	links func() []federation.LinkInfo
	// turnAllocations counts the TURN server's relays; nil without [turn].
	turnAllocations func() int
}

// serveMetrics serves GET /metrics on addr ([metrics] listen) until ctx
// ends; the returned function stops it and waits.
func serveMetrics(ctx context.Context, addr string, src metricsSource, log zerolog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", src)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info().Str("metrics", "http://"+ln.Addr().String()+"/metrics").Msg("metrics listening")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}

// ServeHTTP writes the metrics in Prometheus's text format (version 0.0.4).
func (m metricsSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	writeMetrics(w, m.sfu.Stats(ctx), m.linkStates(), m.turnAllocations)
}

// linkStates counts the trunks by state.
func (m metricsSource) linkStates() map[string]int {
	states := map[string]int{"up": 0, "interrupted": 0, "setting_up": 0}
	if m.links == nil {
		return states
	}
	for _, l := range m.links() {
		switch {
		case l.Interrupted:
			states["interrupted"]++
		case l.Up:
			states["up"]++
		default:
			states["setting_up"]++
		}
	}
	return states
}

func writeMetrics(w io.Writer, st media.Stats, links map[string]int, turnAllocations func() int) {
	metric := func(name, typ, help string, samples ...string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, s := range samples {
			fmt.Fprintf(w, "%s%s\n", name, s)
		}
	}
	n := func(v any) string { return fmt.Sprintf(" %d", v) }
	metric("entente_rooms", "gauge", "Rooms open on this node.", n(st.Rooms))
	metric("entente_participants", "gauge", "Participants in this node's rooms: its own (origin local) and those federation trunks bring (remote).",
		`{origin="local"}`+n(st.Participants), `{origin="remote"}`+n(st.RemoteParticipants))
	metric("entente_published_tracks", "gauge", "Tracks being published.", n(st.PublishedTracks))
	metric("entente_subscriptions", "gauge", "Down tracks forwarding a published track (to clients and to trunks).", n(st.Subscriptions))
	metric("entente_forwarded_packets_total", "counter", "RTP packets forwarded, retransmissions not included.", n(st.ForwardedPackets))
	metric("entente_forwarded_bytes_total", "counter", "RTP payload bytes forwarded, retransmissions not included.", n(st.ForwardedBytes))
	metric("entente_nacked_packets_total", "counter", "Packets subscribers reported lost (RTCP NACK).", n(st.NackedPackets))
	metric("entente_retransmitted_packets_total", "counter", "Packets resent from the cache in answer to NACKs.", n(st.Retransmitted))
	metric("entente_federation_trunks", "gauge", "Federation trunks by state.",
		`{state="up"}`+n(links["up"]), `{state="interrupted"}`+n(links["interrupted"]), `{state="setting_up"}`+n(links["setting_up"]))
	if turnAllocations != nil {
		metric("entente_turn_allocations", "gauge", "Relays the node's TURN server holds for clients.", n(turnAllocations()))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	metric("entente_go_goroutines", "gauge", "Goroutines of the node.", n(runtime.NumGoroutine()))
	metric("entente_go_heap_bytes", "gauge", "Bytes of allocated heap objects.", n(ms.HeapAlloc))
	metric("entente_go_sys_bytes", "gauge", "Bytes of memory obtained from the OS.", n(ms.Sys))
}
