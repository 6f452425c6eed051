package store

import (
	"errors"
	"fmt"
)

var (
	// ErrSchemaTooNew is matched (errors.Is) by a *SchemaTooNewError from Open.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary supports")
	// ErrNotFound is returned when a row an update refers to does not exist (or is already
	// closed), e.g. RoomClosed for an unknown room SID.
	ErrNotFound = errors.New("not found")
	// ErrSchemaOlder is returned by OpenReadOnly for a database whose schema this binary would
	// upgrade: only the node (Open) upgrades a database.
	ErrSchemaOlder = errors.New("database schema is older than this binary's")
)

// SchemaTooNewError is returned by Open for a database written by a newer Entente.
type SchemaTooNewError struct {
	// Path is the database file.
	Path string
	// Have is the schema version found in the database.
	Have int
	// Supported is the latest version this binary knows.
	Supported int
}

// Error names the file and both versions, and what to do.
func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database %s has schema v%d, newer than v%d supported by this binary: run a newer entente or use another data directory",
		e.Path, e.Have, e.Supported)
}

// Unwrap lets errors.Is(err, ErrSchemaTooNew) match.
func (e *SchemaTooNewError) Unwrap() error { return ErrSchemaTooNew }
