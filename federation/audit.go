package federation

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/rs/zerolog"
)

// AuditLog keeps the node's record of every trunk and every forwarded
// token request (DESIGN.md section 4, "Trust"; docs/federation.md, "Audit
// log"): cmd wires the store behind it. A record is opened when the
// activity begins, its byte counts updated while it runs, and closed with
// its final counts and outcome. Records never hold a token, an OpenID
// token or a secret: only who, where, when, how much and how it ended.
type AuditLog interface {
	// OpenAudit records that e began and returns the record's ID.
	OpenAudit(ctx context.Context, e AuditEntry) (int64, error)
	// UpdateAudit records an open record's byte counts at at.
	UpdateAudit(ctx context.Context, id int64, sent, received uint64, at time.Time) error
	// CloseAudit ends a record at at with its final counts and outcome.
	CloseAudit(ctx context.Context, id int64, sent, received uint64, at time.Time, outcome string) error
}

// The kinds of audit records.
const (
	AuditTrunk = "trunk"
	AuditToken = "token"
)

// The roles this node plays in an audit record.
const (
	// RoleOfferer and RoleAnswerer: this node offered the trunk, or
	// answered (or refused) the peer's invite.
	RoleOfferer  = "offerer"
	RoleAnswerer = "answerer"
	// RoleForwarded: a user of the peer asked this node for a token and
	// this node asked the peer. RoleAnswered: the peer forwarded one of
	// its users' requests here.
	RoleForwarded = "forwarded"
	RoleAnswered  = "answered"
)

// AuditEntry is what an audit record says when it is opened.
type AuditEntry struct {
	Kind string // AuditTrunk or AuditToken
	Role string
	// Peer is the peer's server name.
	Peer string
	// RoomID is the Matrix room; MediaRoom the call's media room (for a
	// request answered here, the peer's, as it said).
	RoomID, MediaRoom string
	// CallID is the trunk's call_id, or the token request's req_id: both
	// nodes' records of one trunk or request carry the same.
	CallID string
	Start  time.Time
}

const (
	// auditEvery is how often a trunk's record gets its byte counts, so
	// that a node killed without closing it leaves a useful record.
	auditEvery = 15 * time.Second
	// auditTimeout bounds one write to the audit log.
	auditTimeout = 5 * time.Second
	// maxOutcome bounds an outcome's text (a peer's hangup reason may be
	// part of it).
	maxOutcome = 200
)

// SetAuditLog sets where the node records its trunks and forwarded token
// requests; call it before Run. Without one nothing is recorded.
func (n *Node) SetAuditLog(a AuditLog) { n.audit = a }

// auditRecord is one open record. Its methods do nothing when the node has
// no audit log or the record could not be opened, and only log failures:
// the audit never stops a call.
type auditRecord struct {
	log zerolog.Logger
	a   AuditLog
	id  int64
	ok  bool
}

// openAudit opens a record of e, whose Start it sets to now.
func (n *Node) openAudit(ctx context.Context, e AuditEntry, log zerolog.Logger) *auditRecord {
	r := &auditRecord{log: log, a: n.audit}
	if r.a == nil {
		return r
	}
	e.Start = time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	id, err := r.a.OpenAudit(ctx, e)
	if err != nil {
		log.Error().Err(err).Str("kind", e.Kind).Msg("federation audit record not opened")
		return r
	}
	r.id, r.ok = id, true
	return r
}

func (r *auditRecord) update(ctx context.Context, sent, received uint64) {
	if !r.ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := r.a.UpdateAudit(ctx, r.id, sent, received, time.Now()); err != nil {
		r.log.Warn().Err(err).Int64("audit_id", r.id).Msg("federation audit record not updated")
	}
}

func (r *auditRecord) close(ctx context.Context, sent, received uint64, outcome string) {
	if !r.ok {
		return
	}
	r.ok = false
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := r.a.CloseAudit(ctx, r.id, sent, received, time.Now(), cleanOutcome(outcome)); err != nil {
		r.log.Error().Err(err).Int64("audit_id", r.id).Msg("federation audit record not closed")
	}
}

// cleanOutcome keeps an outcome on one printable line of bounded length:
// part of it may come from the peer.
func cleanOutcome(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxOutcome {
		s = strings.ToValidUTF8(s[:maxOutcome], "")
	}
	return s
}

// trunkAudit is a link's record: opened by the link's goroutine, its
// counts written off that goroutine (a slow disk must not hold up the
// trunk's signalling), one write at a time.
type trunkAudit struct {
	rec  *auditRecord
	conn Conn
	busy atomic.Bool
	wg   sync.WaitGroup
}

// tick writes the trunk's counts unless the previous write is still going.
func (t *trunkAudit) tick(ctx context.Context) {
	if !t.rec.ok || !t.busy.CompareAndSwap(false, true) {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer t.busy.Store(false)
		sent, received := t.conn.Bytes()
		t.rec.update(ctx, sent, received)
	}()
}

// close waits for a write in progress and ends the record with the
// trunk's final counts.
func (t *trunkAudit) close(ctx context.Context, outcome string) {
	t.wg.Wait()
	var sent, received uint64
	if t.conn != nil {
		sent, received = t.conn.Bytes()
	}
	t.rec.close(ctx, sent, received, outcome)
}
