package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/mattn/go-sqlite3"
	"github.com/rs/zerolog"
)

// busyTimeout is how long a statement waits for another connection's lock before failing with
// SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// maxReaders bounds the read-only connections; WAL lets them run beside the writer.
const maxReaders = 4

// Store is the node's database. It is safe for concurrent use.
//
// SQLite allows one writer at a time, so writes go through a pool of exactly one connection
// (writes queue in database/sql instead of failing with SQLITE_BUSY), while reads use a separate
// read-only pool that WAL lets proceed during a write.
type Store struct {
	w   *sql.DB
	r   *sql.DB
	log zerolog.Logger
}

// Open opens (creating it and its directory if needed) the SQLite database file at path and
// brings its schema to the latest version. path must name a file: the writer and reader pools
// share it. A database written by a newer Entente is refused with a *SchemaTooNewError
// (errors.Is ErrSchemaTooNew).
func Open(ctx context.Context, path string, log zerolog.Logger) (*Store, error) {
	s, err := open(ctx, path, log)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func open(ctx context.Context, path string, log zerolog.Logger) (*Store, error) {
	sch, err := loadSchema(upgradeFiles, "upgrades")
	if err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err) // a bug in this package; TestSchemaFiles catches it
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, err
	}
	log = log.With().Str("component", "store").Logger()
	if err := restrictFiles(abs); err != nil {
		return nil, err
	}

	// Every pooled connection gets these settings from the DSN: PRAGMAs such as synchronous and
	// foreign_keys are per connection. _txlock=immediate takes the write lock at BEGIN, so a
	// transaction never fails half-way when it first writes.
	w, err := sql.Open("sqlite3", dsn(abs, url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"},
		"_foreign_keys": {"on"},
		"_busy_timeout": {fmt.Sprint(busyTimeout.Milliseconds())},
		"_txlock":       {"immediate"},
	}))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)

	found, err := sch.migrate(ctx, w, abs, log)
	if err != nil {
		_ = w.Close()
		return nil, err
	}

	r, err := sql.Open("sqlite3", dsn(abs, url.Values{
		"mode":          {"ro"},
		"_foreign_keys": {"on"},
		"_busy_timeout": {fmt.Sprint(busyTimeout.Milliseconds())},
	}))
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(maxReaders)
	if err := r.PingContext(ctx); err != nil {
		_ = w.Close()
		_ = r.Close()
		return nil, err
	}
	log.Debug().Str("path", abs).Int("schema_version", sch.latest()).Int("found_version", found).Msg("store open")
	return &Store{w: w, r: r, log: log}, nil
}

// OpenReadOnly opens the existing database at path for reading only, e.g. for a command that
// prints what a running node records: it never creates the file nor changes its schema (every
// write fails), and SQLite's WAL lets it read while the node writes. The schema must be the one
// this binary knows: an older one is refused with ErrSchemaOlder (the node upgrades it when it
// starts), a newer one with a *SchemaTooNewError.
func OpenReadOnly(ctx context.Context, path string, log zerolog.Logger) (*Store, error) {
	s, err := openReadOnly(ctx, path, log)
	if err != nil {
		return nil, fmt.Errorf("open store %s read-only: %w", path, err)
	}
	return s, nil
}

func openReadOnly(ctx context.Context, path string, log zerolog.Logger) (*Store, error) {
	sch, err := loadSchema(upgradeFiles, "upgrades")
	if err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err // no database yet: nothing is created
	}
	r, err := sql.Open("sqlite3", dsn(abs, url.Values{
		"mode":          {"ro"},
		"_foreign_keys": {"on"},
		"_busy_timeout": {fmt.Sprint(busyTimeout.Milliseconds())},
	}))
	if err != nil {
		return nil, err
	}
	r.SetMaxOpenConns(maxReaders)
	var found int
	if err := r.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&found); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("schema version: %w", err)
	}
	switch {
	case found > sch.latest():
		_ = r.Close()
		return nil, &SchemaTooNewError{Path: abs, Have: found, Supported: sch.latest()}
	case found < sch.latest():
		_ = r.Close()
		return nil, fmt.Errorf("%w: v%d, this binary reads v%d: start the node (entente run) once to upgrade it", ErrSchemaOlder, found, sch.latest())
	}
	log = log.With().Str("component", "store").Logger()
	// The writer is the read-only pool too: a write fails instead of finding no pool.
	return &Store{w: r, r: r, log: log}, nil
}

// fileMode is the mode of the database and its -wal and -shm files: they hold the API secrets and
// who called whom, for the node's user only.
const fileMode = 0o600

// restrictFiles creates the database file with fileMode before SQLite does (SQLite would create it
// 0644 less the umask), and brings the files of an existing database to fileMode. SQLite creates
// the -wal and -shm files with the mode of the database file whatever the umask (sqlite3.c,
// unix VFS findCreateFileMode and robust_open), so a database file at fileMode is enough for
// them; those left by an older binary are changed here too.
func restrictFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		// Chmod, not the OpenFile mode alone: that one is filtered by the umask.
		if err := os.Chmod(p, fileMode); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// dsn builds a SQLite URI filename for the driver; escaping keeps '?' or '#' in a path from
// being read as parameters.
func dsn(path string, params url.Values) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + params.Encode()
}

// Close closes both connection pools. Statements still running finish first.
func (s *Store) Close() error {
	if s.w == s.r {
		return s.r.Close() // OpenReadOnly
	}
	return errors.Join(s.w.Close(), s.r.Close())
}

// millis converts t for storage: Unix milliseconds.
func millis(t time.Time) int64 { return t.UnixMilli() }

// fromMillis is the inverse of millis, in UTC.
func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// isForeignKey reports whether err is SQLite refusing a row whose reference does not exist.
func isForeignKey(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintForeignKey
}
