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
	// calmSamples (2 s) is how long the average load must want fewer
	// processors before one is removed, and the window it is averaged
	// over (growth is immediate).
	calmSamples = 20
	// shortSamples (500 ms) is the window growth looks at.
	shortSamples = 5
	// saturated is the share of its processors a sample must use for the
	// controller to add one at once.
	saturated = 0.9
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
	var (
		lastAt = time.Now()
		window [calmSamples]float64 // the last samples, in cores
		filled int
		since  int // samples since the last change
	)
	for i := 0; ; i++ {
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
			window[i%calmSamples] = cores
			filled = min(filled+1, calmSamples)
			since++
			next := decide(cur, c.limit, cores, average(window[:], i, min(filled, shortSamples)), average(window[:], i, filled), since)
			if next != cur {
				c.log.Debug().Int("from", cur).Int("to", next).Float64("cores", math.Round(cores*100)/100).Msg("processors")
				c.set(next)
				cur, since = next, 0
			}
		}
	}
}

// average is the mean of the last n samples of the ring w, whose newest
// sample is at index i (mod len(w)).
func average(w []float64, i, n int) float64 {
	var sum float64
	for k := 0; k < n; k++ {
		sum += w[(i-k+len(w))%len(w)]
	}
	return sum / float64(n)
}

// want is the processor count that keeps each at most perProc busy.
func want(cores float64, limit int) int {
	return max(1, min(limit, int(math.Ceil(cores/perProc))))
}

// decide returns the processor count given cur processors, the cores used
// in the last sample, on average over the last shortSamples and over the
// last calmSamples samples, and how many samples passed since the last
// change. Up: at once by one when the last sample saturated the processors
// (a burst of joins), or to what the short average needs; a single busy
// sample (a keyframe, a GC cycle) is not enough. Down: one at a time, when
// the long average has wanted fewer for calmSamples samples since the last
// change.
func decide(cur, limit int, cores, short, avg float64, since int) int {
	next := want(short, limit)
	if cores >= saturated*float64(cur) {
		next = max(next, min(limit, cur+1))
	}
	if next > cur {
		return next
	}
	if since >= calmSamples && want(avg, limit) < cur {
		return cur - 1
	}
	return cur
}
