package matrix

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/federation"

	"entente.dev/entente/internal/config"
	"entente.dev/entente/internal/httpsrv"
	"entente.dev/entente/internal/store"
)

const (
	// ExpiryInterval is how often expired call memberships are ended.
	ExpiryInterval = 5 * time.Second
	// BotDisplayName is the bot's Matrix display name.
	BotDisplayName = "Entente"
)

// Options is what New needs besides the [matrix] configuration.
type Options struct {
	// Config is the [matrix] section. Required.
	Config *config.Matrix
	// PublicURL is the node's public http(s) URL (server.public_url or
	// derived from server.listen): the token service's URL unless
	// matrix.token_service_url is set.
	PublicURL string
	// SFUURL is the ws(s) URL clients connect to for /rtc.
	SFUURL string
	// JoinPageURL is the browser join page that "!meet" links point to;
	// PublicURL + "/" when empty.
	JoinPageURL string
	// SFU is cmd/'s adapter to media and media/livekit. Required.
	SFU SFU
	// Store is the node's database. Required.
	Store *store.Store
	// GuestLimiter, when set, limits the "!meet" guest tokens one client
	// obtains (MeetingAPIOptions.Limiter).
	GuestLimiter GuestLimiter
	// TokenTTL is the lifetime of issued tokens; DefaultTokenTTL when zero.
	TokenTTL time.Duration
	// OnToDevice, when set, receives the to-device messages of the bot's
	// device (BotSyncOptions.OnToDevice): federation trunk signalling.
	OnToDevice func(ToDeviceEvent)
	// TokenForwarder, when set, forwards the token requests of peer
	// nodes' users to their nodes (TokenServiceOptions.Forwarder).
	TokenForwarder TokenForwarder
	Log            zerolog.Logger
}

// Bridge is the node's Matrix side assembled from its configuration: the
// token service and discovery endpoints (mounted on the node's main HTTP
// server by Register), and the application service with its own listener,
// the bot and the expiry of call memberships (run by Run).
type Bridge struct {
	cfg        *config.Matrix
	reg        *appservice.Registration
	tokens     *TokenService
	meetings   *MeetingAPI
	discovery  *Discovery
	appService *AppService
	guard      *CallGuard
	botSync    *BotSync
	openID     *FederationOpenID
	members    MembershipChecker
	store      *store.Store
	joinPage   string
	// meetingGuests is matrix.meeting_guests, for Admit.
	meetingGuests bool
	serviceURL    string
	meets         chan MeetCommand
	invites       chan string
	log           zerolog.Logger
}

// New builds the bridge. It reads the registration file when the tokens are
// not in the configuration, and contacts nothing.
func New(opts Options) (*Bridge, error) {
	c := opts.Config
	if c == nil || opts.SFU == nil || opts.Store == nil {
		return nil, fmt.Errorf("%w: matrix bridge needs its config, an SFU and a store", ErrInvalidConfig)
	}
	reg, err := LoadRegistration(c)
	if err != nil {
		return nil, err
	}
	log := opts.Log.With().Str("component", "matrix").Logger()
	serviceURL := c.TokenServiceURL
	if serviceURL == "" {
		serviceURL = opts.PublicURL
	}
	botID := BotUserID(reg.SenderLocalpart, c.ServerName)
	members, err := NewClientMembership(c.HomeserverURL, reg.AppToken, botID, nil)
	if err != nil {
		return nil, err
	}
	joinPage := opts.JoinPageURL
	if joinPage == "" {
		joinPage = strings.TrimSuffix(opts.PublicURL, "/") + "/"
	}
	b := &Bridge{
		cfg: c, reg: reg, members: members, store: opts.Store, joinPage: joinPage, meetingGuests: c.MeetingGuests, serviceURL: serviceURL,
		meets: make(chan MeetCommand, 64), invites: make(chan string, 64), log: log,
	}
	b.guard = NewCallGuard(opts.SFU, opts.TokenTTL, log)
	b.botSync, err = NewBotSync(BotSyncOptions{HomeserverURL: c.HomeserverURL, ASToken: reg.AppToken,
		BotLocalpart: reg.SenderLocalpart, ServerName: c.ServerName, OnInvite: b.invited, OnToDevice: opts.OnToDevice, Log: log})
	if err != nil {
		return nil, err
	}
	b.openID = NewFederationOpenID(OpenIDOptions{InsecureSkipVerify: c.InsecureSkipVerify})
	users, err := NewHomeserverWhoAmI(c.HomeserverURL, nil)
	if err != nil {
		return nil, err
	}
	var signer *federation.SigningKey
	if c.SigningKey != "" {
		if signer, err = LoadSigningKey(c.SigningKey); err != nil {
			return nil, err
		}
	}
	b.tokens, err = NewTokenService(TokenServiceOptions{
		Federation: b.openID, SigningKey: signer,
		SFU: opts.SFU, OpenID: b.openID, Membership: members,
		ServerName: c.ServerName, Allow: c.Allow, URL: opts.SFUURL, TokenTTL: opts.TokenTTL,
		OnIssued: b.guard.Issued, BotUserID: botID, Record: opts.Store, Users: users,
		UnknownMembership: c.UnknownMembership, Forwarder: opts.TokenForwarder, Log: log,
	})
	if err != nil {
		return nil, err
	}
	hsPublic := c.HomeserverPublicURL
	if hsPublic == "" {
		hsPublic = c.HomeserverURL
	}
	b.meetings, err = NewMeetingAPI(MeetingAPIOptions{
		SFU: opts.SFU, HomeserverURL: hsPublic, ServerName: c.ServerName, Guests: c.MeetingGuests,
		Limiter: opts.GuestLimiter, URL: opts.SFUURL, TokenTTL: opts.TokenTTL, Log: log,
	})
	if err != nil {
		return nil, err
	}
	b.discovery, err = NewDiscovery(DiscoveryOptions{ServiceURL: serviceURL, HomeserverBaseURL: c.HomeserverURL, SFUURL: opts.SFUURL})
	if err != nil {
		return nil, err
	}
	b.appService, err = NewAppService(AppServiceOptions{
		Registration: reg, HomeserverURL: c.HomeserverURL, ServerName: c.ServerName,
		Store: NewStoreTxns(opts.Store), OnApplied: b.applied, Log: log,
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// LoadRegistration returns the appservice registration the node runs with:
// the file at c.Registration if set, with as_token/hs_token from c taking
// precedence; without a file, one built from c's tokens and names.
func LoadRegistration(c *config.Matrix) (*appservice.Registration, error) {
	var reg *appservice.Registration
	if c.Registration != "" {
		r, err := appservice.LoadRegistration(c.Registration)
		if err != nil {
			return nil, fmt.Errorf("%w: registration %s: %w", ErrInvalidConfig, c.Registration, err)
		}
		reg = r
	} else {
		reg = &appservice.Registration{ID: c.ID, SenderLocalpart: c.BotLocalpart}
	}
	if c.ASToken != "" {
		reg.AppToken = c.ASToken
	}
	if c.HSToken != "" {
		reg.ServerToken = c.HSToken
	}
	if reg.AppToken == "" || reg.ServerToken == "" || reg.SenderLocalpart == "" {
		return nil, fmt.Errorf("%w: registration lacks as_token, hs_token or sender_localpart", ErrInvalidConfig)
	}
	return reg, nil
}

// RegistrationFor builds a fresh registration (`entente register`) from the
// [matrix] section.
func RegistrationFor(c *config.Matrix) (*appservice.Registration, error) {
	u := c.AppserviceURL
	if u == "" {
		u = "http://" + c.AppserviceListen
	}
	return NewRegistration(RegistrationParams{ID: c.ID, URL: u, ServerName: c.ServerName,
		BotLocalpart: c.BotLocalpart, GhostPrefix: c.GhostPrefix, AllRooms: c.RoomEvents != config.RoomEventsBot})
}

// Register mounts the token service (PathGetToken, PathSFUGet, MSC4195's
// PathLiveKitGetToken and its unstable prefix), the join
// page's Matrix API (PathMeetingInfo, PathMeetingGuest) and the discovery
// endpoints (PathRTCTransports, PathWellKnownClient) on mux. PathHealthz is
// left to the node.
func (b *Bridge) Register(mux *http.ServeMux) {
	mux.Handle(PathGetToken, b.tokens)
	mux.Handle(PathSFUGet, b.tokens)
	mux.Handle(PathLiveKitGetToken, b.tokens)
	mux.Handle(PathLiveKitGetTokenUnstable, b.tokens)
	mux.Handle(PathFederationLiveKitGetToken, b.tokens)
	mux.Handle(PathFederationLiveKitGetTokenUnstable, b.tokens)
	mux.Handle(PathMeetingInfo, b.meetings)
	mux.Handle(PathMeetingGuest, b.meetings)
	mux.Handle(PathRTCTransports, b.discovery)
	mux.Handle(PathRTCTransportsV1, b.discovery)
	mux.Handle(PathWellKnownClient, b.discovery)
}

// TokenService returns the token service (for tests and custom mounting).
func (b *Bridge) TokenService() *TokenService { return b.tokens }

// BotSync returns the bot's own /sync, which also sends the bot device's
// to-device messages (BotSync.SendToDevice). Run runs it.
func (b *Bridge) BotSync() *BotSync { return b.botSync }

// Tokens returns the token service.
func (b *Bridge) Tokens() *TokenService { return b.tokens }

// ServiceURL returns the token service's public URL, the
// livekit_service_url the node advertises.
func (b *Bridge) ServiceURL() string { return b.serviceURL }

// AppService returns the application service handler.
func (b *Bridge) AppService() *AppService { return b.appService }

// Run serves the application service on matrix.appservice_listen, makes
// sure the bot exists (retrying while the homeserver is unreachable), ends
// expired call memberships, follows the bot's own /sync, accepts the bot's
// invitations and answers "!meet", until ctx is done. It returns once every
// goroutine it started has stopped.
func (b *Bridge) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", b.cfg.AppserviceListen)
	if err != nil {
		return fmt.Errorf("appservice listen: %w", err)
	}
	srv := httpsrv.New(b.appService, httpsrv.Appservice())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(5)
	go func() {
		defer wg.Done()
		b.log.Info().Str("listen", ln.Addr().String()).Msg("appservice listening")
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("appservice serve: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		b.ensureBot(ctx)
	}()
	go func() {
		defer wg.Done()
		b.guard.RunExpiry(ctx, b.store, ExpiryInterval)
	}()
	go func() {
		defer wg.Done()
		b.runBot(ctx)
	}()
	go func() {
		defer wg.Done()
		b.botSync.Run(ctx)
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel() // stops the bot set-up, expiry and bot loops
	shutdownCtx, cancelShutdown := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelShutdown()
	_ = srv.Shutdown(shutdownCtx)
	wg.Wait()
	b.openID.CloseIdleConnections()
	return runErr
}

// ensureBot registers the bot and sets its name, retrying with backoff
// until it succeeds or ctx is done.
func (b *Bridge) ensureBot(ctx context.Context) {
	delay := time.Second
	for {
		err := b.appService.EnsureBot(ctx, BotDisplayName)
		if err == nil {
			b.log.Info().Str("bot", b.appService.BotUserID()).Msg("bot ready")
			return
		}
		b.log.Warn().Err(err).Dur("retry_in", delay).Msg("bot not ready")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Minute)
	}
}

// SFUURL derives the ws(s) URL clients use for /rtc from the node's public
// http(s) URL.
func SFUURL(publicURL string) (string, error) {
	u, err := url.Parse(publicURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: public url %q", ErrInvalidConfig, publicURL)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("%w: public url %q", ErrInvalidConfig, publicURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u.String(), nil
}

// IsJoined reports whether userID is joined to roomID, as the bot reads
// the room's members (false when the bot is not in it).
func (b *Bridge) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	return b.members.IsJoined(ctx, roomID, userID)
}

// BotUserID is the node's bot user.
func (b *Bridge) BotUserID() string { return b.botSync.BotUserID() }
