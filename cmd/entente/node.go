package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"entente.dev/entente/bridge/matrix"
	"entente.dev/entente/federation"
	"entente.dev/entente/internal/config"
	"entente.dev/entente/internal/httpsrv"
	"entente.dev/entente/internal/logging"
	"entente.dev/entente/internal/procs"
	"entente.dev/entente/internal/ratelimit"
	"entente.dev/entente/internal/store"
	"entente.dev/entente/media"
	"entente.dev/entente/media/livekit"
	"entente.dev/entente/media/rtc"
	"entente.dev/entente/media/turn"
	"entente.dev/entente/web"
)

// configEnv names the environment variable read when --config is absent.
const configEnv = "ENTENTE_CONFIG"

// loadConfig resolves the configuration: --config, then $ENTENTE_CONFIG,
// then the embedded defaults.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		path = os.Getenv(configEnv)
	}
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: $"+configEnv+", else built-in defaults)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	ctx = log.WithContext(ctx)

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.EndOpenSessions(ctx, time.Now()); err != nil {
		return fmt.Errorf("close rooms left open: %w", err)
	}
	auditCtx, stopAudit := context.WithCancel(ctx)
	waitAudit, err := startAudit(auditCtx, cfg, st, log)
	if err != nil {
		stopAudit()
		return fmt.Errorf("federation audit log: %w", err)
	}
	defer func() { stopAudit(); waitAudit() }() // before the store closes
	keys, err := apiKeys(ctx, cfg, st, stdout)
	if err != nil {
		return err
	}

	var debugMux *http.ServeMux // nil without [debug] pprof_listen
	if cfg.Debug.PprofListen != "" {
		stop, mux, err := servePprof(ctx, cfg.Debug.PprofListen, log)
		if err != nil {
			return err
		}
		defer stop()
		debugMux = mux
	}

	if stop := adaptProcessors(ctx, cfg, log); stop != nil {
		defer stop()
	}

	eng, err := rtc.NewEngine(rtcConfig(cfg), log.With().Str("component", "rtc").Logger())
	if err != nil {
		return err
	}
	// After the SFU has closed every room, and so every transport.
	defer func() { _ = eng.Close() }()
	var relay *turn.Server // nil without [turn] enabled
	if cfg.TURN.Enabled {
		tc, err := turnConfig(cfg)
		if err != nil {
			_ = eng.Close()
			return err
		}
		if relay, err = turn.New(tc, log.With().Str("component", "turn").Logger()); err != nil {
			_ = eng.Close()
			return err
		}
		defer func() { _ = relay.Close() }()
	}
	sfu := media.New(mediaConfig(cfg), log.With().Str("component", "sfu").Logger(), st)
	if debugMux != nil {
		debugMux.Handle("/debug/connections", connectionList(sfu))
	}
	// One budget per client address for every guest token: the join
	// page's and "!meet" links'. Nil (web.guest_rate 0) allows all.
	guestLimiter := ratelimit.New(cfg.Web.GuestRate, cfg.Web.GuestBurst, ratelimit.DefaultMaxClients,
		ratelimit.NewResolver(trustedProxies(cfg)))
	mux := http.NewServeMux()
	if cfg.Web.Enabled {
		webOpts := web.Options{
			Minter: webGuestMinter{minter(cfg, keys)}, Guests: cfg.GuestsAllowed(), Limiter: guestLimiter, Log: log,
		}
		if cfg.Matrix != nil {
			// "!meet" links sign people in at the homeserver from the page.
			webOpts.ConnectOrigins = []string{cfg.Matrix.PublicHomeserverURL()}
		}
		mux.Handle("/", web.Handler(webOpts))
	} else {
		mux.HandleFunc("/", health)
	}

	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		sfu.Close()
		return fmt.Errorf("listen on %s: %w", cfg.Server.Listen, err)
	}
	var bridge *matrix.Bridge
	var fed *federation.Node
	// Join-page guest tokens minted before guests were turned off are
	// refused when used.
	admit := guestAdmitter{webGuests: cfg.Web.Enabled && cfg.GuestsAllowed()}
	if cfg.Matrix != nil {
		if bridge, err = newBridge(cfg, ln, sfu, keys, st, guestLimiter, toDeviceForFederation(&fed), tokenForwarder{&fed}, log); err != nil {
			sfu.Close()
			_ = ln.Close()
			return err
		}
		if cfg.Federation != nil {
			if fed, err = newFederation(cfg, bridge, st, sfu, eng, log); err != nil {
				sfu.Close()
				_ = ln.Close()
				return err
			}
			if debugMux != nil {
				debugMux.Handle("/debug/federation", federationLinks(fed))
			}
		}
		bridge.Register(mux)
		// Tokens the bridge issued are re-checked against the Matrix room
		// when used, so that one issued before a kick does not admit.
		admit.next = matrixAdmitter{bridge}
	}
	signalOpts := []livekit.ServerOption{livekit.WithAdmitter(admit)}
	if relay != nil {
		signalOpts = append(signalOpts, livekit.WithICEServers(turnServers{relay}))
	}
	livekit.NewServer(sfu, eng, keys, log.With().Str("component", "signal").Logger(), signalOpts...).Register(mux)
	// Ready from the moment the listener serves until the node shuts
	// down (a load balancer stops sending new joins then).
	var ready atomic.Bool
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready"))
			return
		}
		_, _ = w.Write([]byte("ready"))
	})
	if cfg.Metrics.Listen != "" {
		src := metricsSource{sfu: sfu}
		if relay != nil {
			src.turnAllocations = relay.Allocations
		}
		if fed != nil {
			src.links = fed.Links
		}
		stop, err := serveMetrics(ctx, cfg.Metrics.Listen, src, log)
		if err != nil {
			sfu.Close()
			_ = ln.Close()
			return err
		}
		defer stop()
	}
	srv := httpsrv.New(withCORS(mux), httpsrv.Node())
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	if cfg.Web.Enabled && cfg.Web.Guests == nil && !cfg.GuestsAllowed() {
		// The default changed with the listen address: say so once, for
		// operators who relied on guests being on.
		log.Info().Str("listen", cfg.Server.Listen).
			Msg("guests may not join from the join page: server.listen is not loopback; set [web] guests = true to let them")
	}
	log.Info().Str("http", "http://"+ln.Addr().String()).Str("media_udp", eng.UDPAddr()).Str("media_tcp", eng.TCPAddr()).
		Bool("guests", cfg.Web.Enabled && cfg.GuestsAllowed()).Bool("turn", relay != nil).Str("version", version).Msg("entente node started")
	if relay != nil {
		log.Info().Strs("urls", relay.ICEServers("", time.Now())[0].URLs).Str("tls_spki_sha256", relay.CertificateSPKI()).
			Dur("credential_lifetime", cfg.TURN.CredentialLifetime.Duration).Msg("turn server started")
	}

	sfuDone := make(chan error, 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { sfuDone <- sfu.Run(runCtx) }()
	var bridgeDone chan error // nil without a bridge: never ready in the select below
	if bridge != nil {
		bridgeDone = make(chan error, 1)
		go func() { bridgeDone <- bridge.Run(runCtx) }()
	}
	fedDone := make(chan error, 1)
	if fed != nil {
		go func() { fedDone <- fed.Run(runCtx) }()
	} else {
		fedDone <- nil
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ln) }()
	ready.Store(true)

	var bridgeErr error
	bridgeStopped := false
	select {
	case <-ctx.Done():
	case err = <-srvDone:
	case bridgeErr = <-bridgeDone:
		bridgeStopped = true
		log.Error().Err(bridgeErr).Msg("matrix bridge stopped")
	}
	log.Info().Msg("shutting down")
	ready.Store(false)
	cancel()
	<-fedDone // ends every trunk and removes the remote participants
	<-sfuDone // closes every room, which ends every signal connection
	if bridge != nil && !bridgeStopped {
		bridgeErr = <-bridgeDone
	}
	shCtx, shCancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer shCancel()
	_ = srv.Shutdown(shCtx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return bridgeErr
}

// The store deletes call history older than room.history_retention when
// the SFU asks (media.SFU.Run).
var _ media.HistoryPruner = (*store.Store)(nil)

// newBridge assembles the Matrix side from the [matrix] section.
func newBridge(cfg *config.Config, ln net.Listener, sfu *media.SFU, keys livekit.Keys, st *store.Store,
	guests *ratelimit.Limiter, onToDevice func(matrix.ToDeviceEvent), forwarder matrix.TokenForwarder, log zerolog.Logger,
) (*matrix.Bridge, error) {
	pub := publicURL(cfg, ln)
	sfuURL, err := matrix.SFUURL(pub)
	if err != nil {
		return nil, err
	}
	return matrix.New(matrix.Options{
		Config: cfg.Matrix, PublicURL: pub, SFUURL: sfuURL,
		SFU:   sfuForMatrix{sfu: sfu, minter: minter(cfg, keys)},
		Store: st, GuestLimiter: guests, OnToDevice: onToDevice, TokenForwarder: forwarder,
		Log: log.With().Str("component", "matrix").Logger(),
	})
}

// trustedProxies parses server.trusted_proxies, which Validate checked.
func trustedProxies(cfg *config.Config) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(cfg.Server.TrustedProxies))
	for _, s := range cfg.Server.TrustedProxies {
		if p, err := config.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// health answers LiveKit clients' GET/HEAD / when the join page is off.
func health(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) }

// withCORS lets browsers on other origins reach "/" (livekit-client HEADs
// it) and the validate endpoints, as livekit-server does.
func withCORS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || r.URL.Path == "/rtc/validate" || r.URL.Path == "/rtc/v1/validate" {
			w.Header().Set("Access-Control-Allow-Origin", "*")
		}
		h.ServeHTTP(w, r)
	})
}

func openStore(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*store.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	return store.Open(ctx, filepath.Join(cfg.DataDir, "entente.db"), log.With().Str("component", "store").Logger())
}

// apiKeys returns the configured keys or, when none are configured, the
// development key kept in the store, creating and printing it once.
func apiKeys(ctx context.Context, cfg *config.Config, st *store.Store, out io.Writer) (livekit.Keys, error) {
	if len(cfg.LiveKit.Keys) > 0 {
		return livekit.Keys(cfg.LiveKit.Keys), nil
	}
	keys, err := st.APIKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("read API keys: %w", err)
	}
	if len(keys) > 0 {
		return livekit.Keys(keys), nil
	}
	key, secret := "API"+randomString(12), randomString(40)
	if err := st.PutAPIKey(ctx, key, secret); err != nil {
		return nil, fmt.Errorf("store development API key: %w", err)
	}
	fmt.Fprintf(out, "Created a development API key (shown once, kept in %s):\n  key:    %s\n  secret: %s\n",
		cfg.DataDir, key, secret)
	return livekit.Keys{key: secret}, nil
}

func randomString(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// minter signs with the first key in name order, so the choice is stable.
func minter(cfg *config.Config, keys livekit.Keys) livekit.Minter {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	return livekit.Minter{Key: names[0], Secret: keys[names[0]], TTL: cfg.LiveKit.TokenTTL.Duration}
}

func mediaConfig(cfg *config.Config) media.Config {
	return media.Config{
		AutoCreate:       cfg.Room.AutoCreate,
		EmptyTimeout:     cfg.Room.EmptyTimeout.Duration,
		DepartureTimeout: cfg.Room.DepartureTimeout.Duration,
		MaxParticipants:  cfg.Room.MaxParticipants,
		HistoryRetention: cfg.Room.HistoryRetention.Duration,
	}
}

func rtcConfig(cfg *config.Config) rtc.Config {
	rc := rtc.Config{UDPPort: cfg.RTC.UDPPort, TCPPort: cfg.RTC.TCPPort, BindAddress: net.ParseIP(cfg.RTC.BindAddress)}
	for _, a := range cfg.RTC.AnnounceAddresses {
		rc.AnnounceAddresses = append(rc.AnnounceAddresses, net.ParseIP(a))
	}
	return rc
}

// turnConfig is the TURN server's configuration from [turn] and [rtc],
// which Validate checked. It relays to the media port at the addresses the
// node announces, and reaches it at its bind address (loopback when it
// binds every interface).
func turnConfig(cfg *config.Config) (turn.Config, error) {
	bind := net.ParseIP(cfg.RTC.BindAddress)
	tc := turn.Config{
		BindAddress: bind, UDPPort: cfg.TURN.UDPPort, TLSPort: cfg.TURN.TLSPort,
		Host: cfg.TURNHost(), Realm: cfg.TURN.Realm, CredentialLifetime: cfg.TURN.CredentialLifetime.Duration,
		MediaPort: cfg.RTC.UDPPort, MediaLocal: bind,
	}
	for _, a := range cfg.RTC.AnnounceAddresses {
		tc.MediaAddresses = append(tc.MediaAddresses, net.ParseIP(a))
	}
	if bind.IsUnspecified() {
		tc.MediaLocal = net.IPv6loopback
		if bind.To4() != nil {
			tc.MediaLocal = net.IPv4(127, 0, 0, 1)
		}
	} else {
		tc.MediaAddresses = append(tc.MediaAddresses, bind)
	}
	if cfg.TURN.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TURN.CertFile, cfg.TURN.KeyFile)
		if err != nil {
			return turn.Config{}, fmt.Errorf("turn certificate: %w", err)
		}
		tc.Certificate = &cert
	}
	return tc, nil
}

// turnServers hands each joining participant the TURN server's URLs with
// credentials minted for it.
type turnServers struct{ s *turn.Server }

func (t turnServers) ICEServers(identity string) []livekit.ICEServer {
	var out []livekit.ICEServer
	for _, s := range t.s.ICEServers(identity, time.Now()) {
		out = append(out, livekit.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// adaptProcessors starts the processor-count controller ([server]
// adaptive_processors) unless the operator fixed GOMAXPROCS in the
// environment. The returned function stops it and waits.
func adaptProcessors(ctx context.Context, cfg *config.Config, log zerolog.Logger) func() {
	if !cfg.Server.AdaptiveProcessors {
		return nil
	}
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		log.Info().Str("GOMAXPROCS", v).Msg("processor count fixed by the environment")
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c := procs.New(log.With().Str("component", "procs").Logger(), 0)
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
