// Package store owns the node's SQLite database: opening it (WAL, synchronous=FULL, foreign
// keys, busy timeout), its schema and the upgrades between schema versions, and the SQL for each
// table (one file per table: keys.go, rooms.go, calls.go, audit.go).
//
// # Schema versions
//
// The version lives in the schema_version table. upgrades/ holds numbered SQL files, embedded
// into the binary, in the layout of mautrix-go's bridgev2/database/upgrades:
//
//   - 00-latest.sql is the whole schema for a fresh install; its first line says which version
//     it creates: "-- v0 -> v2".
//   - NN-name.sql upgrades an existing database by one version; its first line says from which
//     to which: "-- v1 -> v2".
//
// Open applies, in one transaction, either 00-latest.sql (empty database) or every upgrade from
// the stored version to the latest. A database newer than this binary is refused with
// ErrSchemaTooNew rather than risk writing rows an older schema does not expect.
//
// To add tables (the Matrix bridge's portals, say) or change one:
//
//  1. add upgrades/NN-what.sql starting with "-- v(N-1) -> vN", where N is one more than the
//     current latest version;
//  2. make the same change in 00-latest.sql and bump its header to "-- v0 -> vN";
//  3. put the queries for a new table in a file of its own (portals.go), with constant SQL and
//     ctx on every method.
//
// TestFreshEqualsUpgraded fails when steps 1 and 2 disagree.
//
// store imports only the standard library, zerolog and the SQLite driver; never media, bridge,
// federation, web or cmd.
package store
