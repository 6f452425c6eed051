// Package procs sizes the Go scheduler's processor count (GOMAXPROCS) to
// the node's load.
//
// Why: a media node spends most of its time waiting for packets. Each
// packet passes through several goroutines (pion's read pipeline: the UDP
// mux, ICE, DTLS demultiplexing, SRTP, the track reader), and every hand-off
// to a goroutine while a processor is idle makes the scheduler wake a
// thread, which spins looking for work and sleeps again. At light load that
// costs more than the forwarding: under the audio 10 x 40 load on 2 cores,
// the node used 12 to 16 us of CPU per forwarded packet with 2 processors
// and 8.4 to 8.9 us with 1 (BENCHMARKS.md). So the controller keeps only
// as many processors as the load needs, at most half busy each, and adds
// them back as soon as the load grows.
//
// It imports only zerolog and the standard library.
package procs

import (
	"context"
	"math"
	"runtime"
	"time"

	"github.com/rs/zerolog"
)

const (
	// interval is how often the load is sampled: often enough that a
	// burst of joins (DTLS handshakes) gets its processors back within a
	// tenth of a second.
	interval = 100 * time.Millisecond
	// perProc is the share of a processor the controller aims to use.
	perProc = 0.5
	// calmSamples is how many samples in a row (2 s) must want fewer
	// processors before one is removed (growth is immediate).
	calmSamples = 20
)

// Controller adjusts GOMAXPROCS between 1 and a maximum.
type Controller struct {
	log   zerolog.Logger
	limit int
	// cpu returns the process's CPU time so far; set returns the previous
	// GOMAXPROCS after setting n (runtime.GOMAXPROCS). Tests replace them.
	cpu      func() (time.Duration, error)
	set      func(n int) int
	interval time.Duration
}

// New returns a controller that uses at most limit processors (limit < 1 means
// the current GOMAXPROCS).
func New(log zerolog.Logger, limit int) *Controller {
	if limit < 1 {
		limit = runtime.GOMAXPROCS(0)
	}
	return &Controller{log: log, limit: limit, cpu: processCPU, set: runtime.GOMAXPROCS, interval: interval}
}

// Run adjusts GOMAXPROCS until ctx ends, then sets it back to the maximum.
// It returns at once where the process's CPU time cannot be read.
func (c *Controller) Run(ctx context.Context) {
	last, err := c.cpu()
	if err != nil {
		c.log.Warn().Err(err).Msg("processor count stays fixed: cannot read the process's CPU time")
		return
	}
	cur := c.limit
	c.set(cur)
	defer c.set(c.limit)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	lastAt, calm := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used, err := c.cpu()
			if err != nil {
				continue
			}
			cores := float64(used-last) / float64(now.Sub(lastAt))
			last, lastAt = used, now
			next, calmNext := decide(cur, c.limit, cores, calm)
			calm = calmNext
			if next != cur {
				c.log.Debug().Int("from", cur).Int("to", next).Float64("cores", math.Round(cores*100)/100).Msg("processors")
				c.set(next)
				cur = next
			}
		}
	}
}

// decide returns the processor count for a load of cores CPU cores used
// over the last interval with cur processors, and the updated count of calm
// samples in a row: up at once to what the load needs, down one at a time
// after calmSamples samples that wanted fewer.
func decide(cur, limit int, cores float64, calm int) (int, int) {
	want := max(1, min(limit, int(math.Ceil(cores/perProc))))
	switch {
	case want > cur:
		return want, 0
	case want < cur:
		if calm+1 >= calmSamples {
			return cur - 1, 0
		}
		return cur, calm + 1
	}
	return cur, 0
}
