package store

import (
	"context"
	"fmt"
	"time"
)

const (
	getAPIKeysQuery = `SELECT key, secret FROM api_keys`
	putAPIKeyQuery  = `
		INSERT INTO api_keys (key, secret, created_at) VALUES (?1, ?2, ?3)
		ON CONFLICT (key) DO UPDATE SET secret = excluded.secret
	`
)

// APIKeys returns every stored LiveKit API key and its secret (the keys the node generated for
// itself; keys from the configuration file are not stored).
func (s *Store) APIKeys(ctx context.Context) (map[string]string, error) {
	rows, err := s.r.QueryContext(ctx, getAPIKeysQuery)
	if err != nil {
		return nil, fmt.Errorf("get api keys: %w", err)
	}
	defer rows.Close()
	keys := map[string]string{}
	for rows.Next() {
		var key, secret string
		if err := rows.Scan(&key, &secret); err != nil {
			return nil, fmt.Errorf("get api keys: %w", err)
		}
		keys[key] = secret
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("get api keys: %w", err)
	}
	return keys, nil
}

// PutAPIKey stores key with secret, replacing the secret if key exists (its created_at stays).
func (s *Store) PutAPIKey(ctx context.Context, key, secret string) error {
	if _, err := s.w.ExecContext(ctx, putAPIKeyQuery, key, secret, millis(time.Now())); err != nil {
		return fmt.Errorf("put api key %q: %w", key, err)
	}
	return nil
}
