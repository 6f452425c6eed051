package matrix

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
)

const (
	// maxTxnBody bounds a transaction body; homeservers batch at most a few
	// hundred events.
	maxTxnBody = 32 << 20
	// maxPingBody bounds a ping body ({"transaction_id": …}, spec:
	// Application Service API, POST /_matrix/app/v1/ping).
	maxPingBody = 4 << 10
	// txnApplyTimeout bounds storing one transaction.
	txnApplyTimeout = 30 * time.Second
)

// TxnStore records appservice transactions together with their effects.
type TxnStore interface {
	// ApplyTxn records txnID and fx in one database transaction. It returns
	// applied=false, changing nothing, when txnID was recorded before.
	ApplyTxn(ctx context.Context, txnID string, fx TxnEffects) (applied bool, err error)
}

// AppServiceOptions configures an AppService.
type AppServiceOptions struct {
	// Registration holds the tokens and the bot's localpart. Required.
	Registration *appservice.Registration
	// HomeserverURL is the homeserver's client-server API base. Required.
	HomeserverURL string
	// ServerName is the homeserver's server name. Required.
	ServerName string
	// Store persists transactions. Required.
	Store TxnStore
	// OnApplied, when set, runs after a transaction's effects are committed,
	// once per transaction (not for replays), before the homeserver is
	// answered. The call tracker uses it to disconnect users who left.
	OnApplied func(ctx context.Context, fx TxnEffects)
	// Log receives one line per transaction.
	Log zerolog.Logger
}

// AppService is the node's Matrix application service. It receives the
// homeserver's transactions (spec: Application Service API) and stores what
// they change, acknowledging a transaction only once its effects are
// committed: a retried or replayed transaction changes nothing, across
// restarts too. mautrix's appservice package provides the registration,
// the query endpoints and the bot's client; its own transaction handler is
// not used because it acknowledges before the events are processed.
type AppService struct {
	mx        *appservice.AppService
	hsToken   [sha256.Size]byte
	store     TxnStore
	onApplied func(context.Context, TxnEffects)
	log       zerolog.Logger
	mux       *http.ServeMux
}

// NewAppService checks opts and returns the service; it does not contact
// the homeserver (see EnsureBot).
func NewAppService(opts AppServiceOptions) (*AppService, error) {
	if opts.Registration == nil || opts.Store == nil {
		return nil, fmt.Errorf("%w: appservice needs a registration and a store", ErrInvalidConfig)
	}
	reg := opts.Registration
	if reg.ServerToken == "" || reg.AppToken == "" || reg.SenderLocalpart == "" {
		return nil, fmt.Errorf("%w: registration lacks hs_token, as_token or sender_localpart", ErrInvalidConfig)
	}
	mx, err := appservice.CreateFull(appservice.CreateOpts{
		Registration:     reg,
		HomeserverDomain: opts.ServerName,
		HomeserverURL:    opts.HomeserverURL,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: appservice: %w", ErrInvalidConfig, err)
	}
	log := opts.Log.With().Str("component", "appservice").Logger()
	mx.Log = log
	// mautrix makes the bot's client and intent on first use without a
	// lock; the bridge's goroutines and HTTP handlers all use them, so they
	// are made here, before any of those start (found by -race).
	mx.BotIntent()
	a := &AppService{
		mx:        mx,
		hsToken:   sha256.Sum256([]byte(reg.ServerToken)),
		store:     opts.Store,
		onApplied: opts.OnApplied,
		log:       log,
		mux:       http.NewServeMux(),
	}
	a.mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", a.authorized(a.putTransaction))
	a.mux.HandleFunc("GET /_matrix/app/v1/users/{userID}", a.authorized(mx.GetUser))
	a.mux.HandleFunc("GET /_matrix/app/v1/rooms/{roomAlias}", a.authorized(mx.GetRoom))
	// mautrix's ping handler reads the body whole: bounded here.
	a.mux.HandleFunc("POST /_matrix/app/v1/ping", a.authorized(bounded(maxPingBody, mx.PostPing)))
	return a, nil
}

// ServeHTTP serves the application service API under /_matrix/app/v1/.
func (a *AppService) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// BotUserID returns the bot's Matrix user ID.
func (a *AppService) BotUserID() string { return a.mx.BotMXID().String() }

// EnsureBot registers the bot user if needed and sets its display name.
func (a *AppService) EnsureBot(ctx context.Context, displayName string) error {
	bot := a.mx.BotIntent()
	if err := bot.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("register bot: %w", err)
	}
	if displayName != "" {
		if err := bot.SetDisplayName(ctx, displayName); err != nil {
			return fmt.Errorf("set bot display name: %w", err)
		}
	}
	return nil
}

// authorized checks the homeserver's hs_token in constant time (the SHA-256
// of both sides is compared, so the length does not leak either): missing
// gives 401 M_UNAUTHORIZED, wrong gives 403 M_FORBIDDEN (spec: Application
// Service API, "Authorization").
func (a *AppService) authorized(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			tok = r.URL.Query().Get("access_token") // legacy homeservers
		}
		if tok == "" {
			writeError(w, &apiError{Status: http.StatusUnauthorized, ErrCode: "M_UNAUTHORIZED", Message: "Missing hs_token"})
			return
		}
		sum := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(sum[:], a.hsToken[:]) != 1 {
			a.log.Warn().Str("remote_addr", r.RemoteAddr).Msg("request with a wrong hs_token")
			writeError(w, &apiError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "Bad hs_token"})
			return
		}
		next(w, r)
	}
}

// bounded limits the request body next may read to limit bytes: beyond it,
// reading fails (and next answers an error).
func bounded(limit int64, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next(w, r)
	}
}

func (a *AppService) putTransaction(w http.ResponseWriter, r *http.Request) {
	txnID := r.PathValue("txnID")
	if txnID == "" || len(txnID) > maxIDLen {
		writeError(w, &apiError{Status: http.StatusBadRequest, ErrCode: "M_INVALID_PARAM", Message: "Bad transaction ID"})
		return
	}
	log := a.log.With().Str("txn_id", txnID).Logger()
	body, berr := readBody(w, r, maxTxnBody)
	if berr != nil {
		writeError(w, berr)
		return
	}
	log.Debug().Int("bytes", len(body)).Msg("transaction received")
	fx, err := parseTxn(body)
	if err != nil {
		log.Warn().Err(err).Msg("undecodable transaction")
		writeError(w, &apiError{Status: http.StatusBadRequest, ErrCode: "M_NOT_JSON", Message: "Transaction is not valid JSON"})
		return
	}
	// Storing must finish even if the homeserver hangs up: it will retry,
	// and the retry must find the transaction recorded or not at all.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), txnApplyTimeout)
	defer cancel()
	ctx = log.WithContext(ctx)
	applied, err := a.store.ApplyTxn(ctx, txnID, fx)
	if err != nil {
		log.Error().Err(err).Msg("store transaction")
		writeError(w, internalError("Transaction not stored; retry"))
		return
	}
	if applied {
		log.Debug().Int("memberships", len(fx.Memberships)).Int("call_members", len(fx.CallMembers)).Msg("transaction applied")
		if a.onApplied != nil && !fx.Empty() {
			a.onApplied(ctx, fx)
		}
	} else {
		log.Debug().Msg("transaction already applied")
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}
