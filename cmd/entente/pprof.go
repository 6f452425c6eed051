package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/media"
)

// servePprof serves Go's profiler on addr ([debug] pprof_listen, loopback
// only by validation) until ctx ends. It uses its own mux: importing
// net/http/pprof also fills http.DefaultServeMux, which the node never serves.
// The mux is returned so that the node can add its own debug pages.
func servePprof(ctx context.Context, addr string, log zerolog.Logger) (func(), *http.ServeMux, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("pprof listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info().Str("pprof", "http://"+ln.Addr().String()+"/debug/pprof/").Msg("profiler listening")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, mux, nil
}

// connectionList serves every participant of every room with where its
// media goes (media.SFU.Connections), as JSON, on the debug listener.
func connectionList(sfu *media.SFU) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"connections": sfu.Connections(r.Context())})
	}
}
