package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// runToken mints an access token with the node's key, resolving the
// configuration and data directory exactly as the node does.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("entente token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: $"+configEnv+", else built-in defaults)")
	room := fs.String("room", "", "room name (required)")
	identity := fs.String("identity", "", "participant identity (required)")
	name := fs.String("name", "", "display name")
	ttl := fs.Duration("ttl", 0, "token lifetime (default: [livekit] token_ttl)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *room == "" || *identity == "" {
		fs.Usage()
		return errors.New("--room and --identity are required")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg, zerolog.Nop())
	if err != nil {
		return err
	}
	defer st.Close()
	keys, err := apiKeys(ctx, cfg, st, stderr)
	if err != nil {
		return err
	}
	m := minter(cfg, keys)
	if *ttl > 0 {
		m.TTL = *ttl
	}
	if m.TTL <= 0 {
		m.TTL = 6 * time.Hour
	}
	tok, err := m.MintJoinToken(*room, *identity, *name)
	if err != nil {
		return fmt.Errorf("mint token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
