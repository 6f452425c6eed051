package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// upgradeFiles holds the schema: see the package documentation for the layout.
//
//go:embed upgrades/*.sql
var upgradeFiles embed.FS

// upgrade is one SQL file of upgrades/: it takes the schema from version from to version to.
type upgrade struct {
	name     string
	from, to int
	sql      string
}

// schema is the parsed upgrades/ directory.
type schema struct {
	// fresh creates the latest schema in an empty database (00-latest.sql).
	fresh upgrade
	// steps are the one-version upgrades, keyed by the version they start from.
	steps map[int]upgrade
}

// latest is the version this binary writes.
func (s *schema) latest() int { return s.fresh.to }

var (
	headerRE   = regexp.MustCompile(`^-- v(\d+) -> v(\d+)\b`)
	fileNameRE = regexp.MustCompile(`^(\d+)-[a-z0-9-]+\.sql$`)
)

// loadSchema reads and checks the upgrade files in dir of fsys: one fresh-install file numbered
// 00 and from v0, one-step upgrades numbered by the version they reach, forming an unbroken
// chain up to the fresh-install version.
func loadSchema(fsys fs.FS, dir string) (*schema, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	s := &schema{steps: map[int]upgrade{}}
	haveFresh := false
	for _, e := range entries {
		m := fileNameRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("upgrade file %s: name must be NN-lower-case-words.sql", e.Name())
		}
		data, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		first, _, _ := strings.Cut(string(data), "\n")
		h := headerRE.FindStringSubmatch(first)
		if h == nil {
			return nil, fmt.Errorf("upgrade file %s: first line must be \"-- vFROM -> vTO\"", e.Name())
		}
		num, _ := strconv.Atoi(m[1])
		from, _ := strconv.Atoi(h[1])
		to, _ := strconv.Atoi(h[2])
		u := upgrade{name: e.Name(), from: from, to: to, sql: string(data)}
		switch {
		case num == 0:
			if haveFresh || from != 0 || to < 1 {
				return nil, fmt.Errorf("upgrade file %s: want a single 00 file going from v0", e.Name())
			}
			s.fresh, haveFresh = u, true
		case to != from+1 || num != to:
			return nil, fmt.Errorf("upgrade file %s: a numbered upgrade goes up one version, to its number", e.Name())
		default:
			if _, dup := s.steps[from]; dup {
				return nil, fmt.Errorf("upgrade file %s: two upgrades from v%d", e.Name(), from)
			}
			s.steps[from] = u
		}
	}
	if !haveFresh {
		return nil, errors.New("no fresh-install file 00-*.sql")
	}
	for from := range s.steps {
		for v := from; v < s.latest(); v++ {
			if _, ok := s.steps[v]; !ok {
				return nil, fmt.Errorf("no upgrade from v%d to v%d", v, v+1)
			}
		}
		if from >= s.latest() {
			return nil, fmt.Errorf("upgrade %s goes beyond the fresh-install version v%d", s.steps[from].name, s.latest())
		}
	}
	return s, nil
}

// migrate brings the database to the latest schema in one transaction and returns the version
// it found. A database newer than the latest is refused with *SchemaTooNewError.
func (s *schema) migrate(ctx context.Context, db *sql.DB, dbPath string, log zerolog.Logger) (int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT`); err != nil {
		return 0, err
	}
	found := 0
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&found)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	switch {
	case found > s.latest():
		return found, &SchemaTooNewError{Path: dbPath, Have: found, Supported: s.latest()}
	case found == s.latest():
		return found, tx.Commit()
	case found == 0:
		log.Info().Int("version", s.latest()).Msg("creating database schema")
		if _, err := tx.ExecContext(ctx, s.fresh.sql); err != nil {
			return found, fmt.Errorf("%s: %w", s.fresh.name, err)
		}
	default:
		for v := found; v < s.latest(); v++ {
			u, ok := s.steps[v]
			if !ok {
				return found, fmt.Errorf("no upgrade from schema v%d", v)
			}
			log.Info().Int("from_version", u.from).Int("to_version", u.to).Str("file", u.name).Msg("upgrading database schema")
			if _, err := tx.ExecContext(ctx, u.sql); err != nil {
				return found, fmt.Errorf("%s: %w", u.name, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return found, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?1)`, s.latest()); err != nil {
		return found, err
	}
	return found, tx.Commit()
}
