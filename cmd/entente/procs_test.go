package main

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"entente.dev/entente/internal/config"
)

// TestAdaptProcessors: the controller runs only when configured and when
// the environment does not fix GOMAXPROCS, brings an idle process down to
// one processor, and gives every processor back when stopped.
func TestAdaptProcessors(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	cfg := config.Default()

	cfg.Server.AdaptiveProcessors = false
	require.Nil(t, adaptProcessors(context.Background(), cfg, zerolog.Nop()), "switched off")

	cfg.Server.AdaptiveProcessors = true
	t.Setenv("GOMAXPROCS", "2")
	require.Nil(t, adaptProcessors(context.Background(), cfg, zerolog.Nop()), "GOMAXPROCS set by the operator")

	t.Setenv("GOMAXPROCS", "")
	stop := adaptProcessors(context.Background(), cfg, zerolog.Nop())
	require.NotNil(t, stop)
	if before > 1 {
		require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 15*time.Second, 10*time.Millisecond,
			"an idle node keeps one processor")
	}
	stop()
	require.Equal(t, before, runtime.GOMAXPROCS(0))
}
