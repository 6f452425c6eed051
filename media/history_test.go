package media

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// pruningHistory is a History that also prunes, recording each cutoff.
type pruningHistory struct {
	mu      sync.Mutex
	cutoffs []time.Time
}

func (*pruningHistory) RoomOpened(context.Context, string, string, time.Time) error { return nil }
func (*pruningHistory) RoomClosed(context.Context, string, time.Time) error         { return nil }
func (*pruningHistory) ParticipantJoined(context.Context, string, string, string, string, time.Time) error {
	return nil
}
func (*pruningHistory) ParticipantLeft(context.Context, string, time.Time) error { return nil }

func (h *pruningHistory) PruneCallHistory(_ context.Context, before time.Time) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cutoffs = append(h.cutoffs, before)
	return 1, nil
}

// Run prunes the history older than the retention when it starts (and
// hourly after), from its own goroutine; with retention 0 it never does.
func TestRunPrunesHistory(t *testing.T) {
	const retention = 90 * 24 * time.Hour
	for _, tc := range []struct {
		name      string
		retention time.Duration
		want      int
	}{
		{"retention", retention, 1},
		{"keep forever", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &pruningHistory{}
			cfg := testConfig()
			cfg.HistoryRetention = tc.retention
			sfu := New(cfg, zerolog.Nop(), h)
			ctx, cancel := context.WithCancel(t.Context())
			ran := make(chan error, 1)
			before := time.Now()
			go func() { ran <- sfu.Run(ctx) }()
			// The first pruning happens before Run's loop, so it is done
			// once Run has returned.
			cancel()
			require.NoError(t, <-ran)
			after := time.Now()

			h.mu.Lock()
			defer h.mu.Unlock()
			require.Len(t, h.cutoffs, tc.want)
			for _, c := range h.cutoffs {
				require.False(t, c.Before(before.Add(-tc.retention)), "cutoff %v", c)
				require.False(t, c.After(after.Add(-tc.retention)), "cutoff %v", c)
			}
		})
	}
}
