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
		cores             float64
		calm              int
		wantProcs, wantCa int
	}{
		{"idle stays at one", 1, 4, 0, 0, 1, 0},
		{"light load stays at one", 1, 4, 0.45, 0, 1, 0},
		{"more than half a processor grows at once", 1, 4, 0.6, 0, 2, 0},
		{"a saturated processor grows", 1, 4, 1.0, 2, 2, 0},
		{"growth jumps to what the load needs", 1, 8, 2.2, 0, 5, 0},
		{"never past the limit", 2, 2, 3.5, 0, 2, 0},
		{"steady load keeps its processors", 3, 4, 1.2, 2, 3, 0},
		{"a calm sample is counted", 3, 4, 0.2, 0, 3, 1},
		{"enough calm samples remove one processor", 3, 4, 0.2, calmSamples - 1, 2, 0},
		{"never below one", 1, 4, -1, calmSamples, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c := decide(tc.cur, tc.limit, tc.cores, tc.calm)
			require.Equal(t, tc.wantProcs, p, "processors")
			require.Equal(t, tc.wantCa, c, "calm samples")
		})
	}
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
