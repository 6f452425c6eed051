package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"entente.dev/entente/federation"
	"entente.dev/entente/internal/config"
	"entente.dev/entente/internal/store"
)

// auditLog is the store as the federation node's AuditLog.
type auditLog struct{ st *store.Store }

var _ federation.AuditLog = auditLog{}

func (a auditLog) OpenAudit(ctx context.Context, e federation.AuditEntry) (int64, error) {
	return a.st.OpenAudit(ctx, store.AuditRecord{Kind: store.AuditKind(e.Kind), Role: e.Role, Peer: e.Peer,
		RoomID: e.RoomID, MediaRoom: e.MediaRoom, CallID: e.CallID, Start: e.Start})
}

func (a auditLog) UpdateAudit(ctx context.Context, id int64, sent, received uint64, at time.Time) error {
	return a.st.UpdateAudit(ctx, id, sent, received, at)
}

func (a auditLog) CloseAudit(ctx context.Context, id int64, sent, received uint64, at time.Time, outcome string) error {
	return a.st.CloseAudit(ctx, id, sent, received, at, outcome)
}

// pruneAuditEvery is how often the node deletes audit records older than
// audit.retention.
const pruneAuditEvery = time.Hour

// startAudit ends the audit records a previous process left open, then,
// unless audit.retention is 0, deletes the records older than it now and
// every pruneAuditEvery until ctx ends. The returned function waits for
// that goroutine (call it after ending ctx).
func startAudit(ctx context.Context, cfg *config.Config, st *store.Store, log zerolog.Logger) (wait func(), err error) {
	n, err := st.EndOpenAudit(ctx)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		log.Warn().Int64("records", n).Msg("federation audit records left open by the previous run marked interrupted")
	}
	retention := cfg.Audit.Retention.Duration
	if retention <= 0 {
		return func() {}, nil
	}
	prune := func() {
		n, err := st.PruneAudit(ctx, time.Now().Add(-retention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn().Err(err).Msg("old federation audit records not deleted")
		case n > 0:
			log.Info().Int64("records", n).Dur("retention", retention).Msg("old federation audit records deleted")
		}
	}
	prune()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(pruneAuditEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				prune()
			}
		}
	}()
	return wg.Wait, nil
}

// runAudit prints the federation audit log: `entente audit [--config
// FILE] [--since DURATION|RFC3339] [--peer NAME] [--kind trunk|token]
// [--limit N] [--json]`. It reads the node's database read-only, so it
// may run while the node does.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: $"+configEnv+", else built-in defaults)")
	since := fs.String("since", "", `only records open at or after this: a duration back from now ("24h", "7d") or an RFC 3339 time`)
	peer := fs.String("peer", "", "only records with this peer (its server name)")
	kind := fs.String("kind", "", `only records of this kind: "trunk" or "token"`)
	limit := fs.Int("limit", 0, "only the newest N records (0: all)")
	asJSON := fs.Bool("json", false, "print one JSON object per line instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("audit: unexpected argument %q", fs.Arg(0))
	}
	f := store.AuditFilter{Peer: *peer, Kind: store.AuditKind(*kind), Limit: *limit}
	if f.Kind != "" && !f.Kind.Valid() {
		return fmt.Errorf("--kind %q: want %q or %q", *kind, store.AuditTrunk, store.AuditToken)
	}
	if *limit < 0 {
		return fmt.Errorf("--limit %d: want 0 (all) or more", *limit)
	}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return err
		}
		f.Since = t
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.DataDir, "entente.db")
	st, err := store.OpenReadOnly(ctx, path, zerolog.Nop())
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no database at %s: has the node run with this configuration (data_dir)?", path)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	recs, err := st.AuditRecords(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		return printAuditJSON(stdout, recs)
	}
	return printAuditTable(stdout, recs)
}

// parseSince reads --since: a duration back from now (a Go duration or
// whole days, as in the configuration) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	var d config.Duration
	if err := d.UnmarshalText([]byte(s)); err != nil || d.Duration < 0 {
		return time.Time{}, fmt.Errorf(`--since %q: want a duration back from now ("24h", "7d") or an RFC 3339 time ("2026-03-01T09:30:00Z")`, s)
	}
	return now.Add(-d.Duration), nil
}

// auditJSON is one record as --json prints it.
type auditJSON struct {
	ID            int64      `json:"id"`
	Kind          string     `json:"kind"`
	Role          string     `json:"role"`
	Peer          string     `json:"peer"`
	RoomID        string     `json:"room_id"`
	MediaRoom     string     `json:"media_room"`
	CallID        string     `json:"call_id"`
	Start         time.Time  `json:"start"`
	Updated       time.Time  `json:"updated"`
	End           *time.Time `json:"end"` // null while open
	BytesSent     uint64     `json:"bytes_sent"`
	BytesReceived uint64     `json:"bytes_received"`
	Outcome       string     `json:"outcome"`
}

func printAuditJSON(w io.Writer, recs []store.AuditRecord) error {
	enc := json.NewEncoder(w)
	for _, r := range recs {
		j := auditJSON{ID: r.ID, Kind: string(r.Kind), Role: r.Role, Peer: r.Peer, RoomID: r.RoomID, MediaRoom: r.MediaRoom,
			CallID: r.CallID, Start: r.Start, Updated: r.Updated, BytesSent: r.BytesSent, BytesReceived: r.BytesReceived,
			Outcome: r.Outcome}
		if !r.Open() {
			end := r.End
			j.End = &end
		}
		if err := enc.Encode(j); err != nil {
			return err
		}
	}
	return nil
}

// printAuditTable prints the records as an aligned table, oldest first,
// times in UTC and bytes human-readable.
func printAuditTable(w io.Writer, recs []store.AuditRecord) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tEND\tKIND\tROLE\tPEER\tROOM\tMEDIA ROOM\tCALL\tSENT\tRECEIVED\tOUTCOME")
	const layout = "2006-01-02 15:04:05"
	for _, r := range recs {
		end := "open"
		if !r.Open() {
			end = r.End.UTC().Format(layout)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Start.UTC().Format(layout), end,
			printable(string(r.Kind)), printable(r.Role), printable(r.Peer), printable(r.RoomID), printable(r.MediaRoom),
			printable(r.CallID), humanBytes(r.BytesSent), humanBytes(r.BytesReceived), printable(r.Outcome))
	}
	return tw.Flush()
}

// printable shows a field some of which a peer wrote on one safe line:
// control characters (a terminal escape, a tab that would break the
// columns) are quoted, an empty field is "-".
func printable(s string) string {
	if s == "" {
		return "-"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			q := strconv.Quote(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// humanBytes writes n in binary units: "512 B", "1.5 KiB", "3.2 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
