package procs

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name              string
		cur, limit        int
		cores, short, avg float64
		since             int
		want              int
	}{
		{"idle stays at one", 1, 4, 0, 0, 0, 100, 1},
		{"light load stays at one", 1, 4, 0.45, 0.4, 0.4, 100, 1},
		{"one busy sample (a keyframe, a GC) is not enough", 1, 4, 0.85, 0.4, 0.3, 100, 1},
		{"a saturated processor gets company at once", 1, 4, 0.95, 0.4, 0.3, 0, 2},
		{"a short average over half a processor grows", 1, 4, 0.6, 0.6, 0.3, 0, 2},
		{"growth jumps to what the short average needs", 1, 8, 1.0, 2.2, 0.5, 0, 5},
		{"never past the limit", 2, 2, 3.5, 3, 3, 0, 2},
		{"steady load keeps its processors", 3, 4, 1.2, 1.2, 1.1, 100, 3},
		{"a quiet sample alone removes nothing", 3, 4, 0.1, 1.2, 1.2, 100, 3},
		{"a quiet average removes one processor", 3, 4, 0.1, 0.2, 0.2, calmSamples, 2},
		{"not before calmSamples since the last change", 3, 4, 0.1, 0.2, 0.2, calmSamples - 1, 3},
		{"never below one", 1, 4, -1, -1, -1, 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, decide(tc.cur, tc.limit, tc.cores, tc.short, tc.avg, tc.since))
		})
	}
}

func TestAverage(t *testing.T) {
	w := []float64{1, 2, 3, 4, 5}
	require.Equal(t, 5.0, average(w, 4, 1))
	require.Equal(t, 4.5, average(w, 4, 2))
	require.Equal(t, 3.0, average(w, 4, 5))
	require.Equal(t, 1.5, average(w, 6, 2), "the ring wraps: index 6 is w[1], then w[0]")
}

// TestRunFollowsTheLoad drives the controller with a scripted CPU clock and
// checks what it sets, and that it restores the limit when stopped.
func TestRunFollowsTheLoad(t *testing.T) {
	var (
		mu   sync.Mutex
		used time.Duration
		sets []int
	)
	c := New(zerolog.Nop(), 4)
	c.interval = 10 * time.Millisecond
	c.cpu = func() (time.Duration, error) {
		mu.Lock()
		defer mu.Unlock()
		return used, nil
	}
	c.set = func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		sets = append(sets, n)
		return 0
	}
	last := func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(sets) == 0 {
			return 0
		}
		return sets[len(sets)-1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()

	// Idle: down from 4 to 1, one step at a time.
	require.Eventually(t, func() bool { return last() == 1 }, 5*time.Second, time.Millisecond)
	mu.Lock()
	require.Equal(t, []int{4, 3, 2, 1}, sets)
	mu.Unlock()

	// Busy: three cores' worth of CPU per interval wants all four at once.
	stop := make(chan struct{})
	var burn sync.WaitGroup
	burn.Add(1)
	go func() {
		defer burn.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				mu.Lock()
				used += 3 * time.Millisecond
				mu.Unlock()
			}
		}
	}()
	require.Eventually(t, func() bool { return last() == 4 }, 5*time.Second, time.Millisecond)
	close(stop)
	burn.Wait()

	cancel()
	<-done
	require.Equal(t, 4, last(), "the limit is restored when the controller stops")
}

// TestRunOnTheRealRuntime runs the controller on this process: idle, it
// brings GOMAXPROCS down to one; stopped, it puts it back.
func TestRunOnTheRealRuntime(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	if before < 2 {
		t.Skip("one processor: nothing to adjust")
	}
	c := New(zerolog.Nop(), before)
	c.interval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	require.Equal(t, before, runtime.GOMAXPROCS(0))
}
