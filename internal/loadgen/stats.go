package loadgen

import (
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"
)

// histogram counts durations in logarithmic buckets with 32 sub-buckets per
// power of two (about 3% precision), from 1 us to hours, in 5 KB: small
// enough for one per subscribed track.
type histogram struct {
	counts [histBuckets]uint32
	n      uint64
}

const (
	histSub     = 32
	histLinear  = 2 * histSub // values below this many microseconds are exact
	histBuckets = histLinear + 40*histSub
)

func histIndex(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	e := bits.Len64(us) - 6 // us>>e is in [32, 63]
	i := histLinear + (e-1)*histSub + int(us>>e) - histSub
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	if i < histLinear {
		return float64(i)
	}
	e := (i-histLinear)/histSub + 1
	lo := uint64(histSub+(i-histLinear)%histSub) << e
	return float64(lo) + float64(uint64(1)<<e)/2
}

func (h *histogram) add(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.counts[histIndex(uint64(us))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0..1) in milliseconds, or NaN when empty.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return math.NaN()
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return histValue(i) / 1000
		}
	}
	return histValue(histBuckets-1) / 1000
}

// trackStats is what one subscriber's reader records for one track during
// the measurement window. The reader goroutine is the only writer; mu lets
// the report read it even if a reader outlives the teardown deadline.
type trackStats struct {
	mu       sync.Mutex
	video    bool
	track    string // the publication's track SID: the same for every subscriber of it
	packets  uint64 // packets received in the window
	started  bool   // a packet of the window was seen
	base     uint64 // extended sequence number of the window's first packet
	highest  uint64 // highest extended sequence number seen in the window
	lastSeq  uint16
	cycles   uint64 // sequence number wraps, times 65536
	badStamp uint64 // packets that should carry a send time but did not parse
	delay    histogram
}

// record notes one packet of the window: seq for loss, and sent (zero if the
// packet carries no send time) for one-way delay.
func (s *trackStats) record(seq uint16, sent time.Time, now time.Time) {
	s.mu.Lock()
	s.packets++
	if !s.started {
		s.started = true
		s.lastSeq = seq
		s.base = uint64(seq)
		s.highest = s.base
	} else if diff := int16(seq - s.lastSeq); diff > 0 {
		if seq < s.lastSeq {
			s.cycles += 1 << 16
		}
		s.lastSeq = seq
		s.highest = s.cycles + uint64(seq)
	}
	if !sent.IsZero() {
		s.delay.add(now.Sub(sent))
	}
	s.mu.Unlock()
}

// loss returns how many packets the window expected and how many were
// received (retransmitted duplicates can make received exceed expected).
func (s *trackStats) loss() (expected, received uint64) {
	if !s.started {
		return 0, 0
	}
	return s.highest - s.base + 1, s.packets
}

// percentiles returns the p50 and p99 of durations in milliseconds, NaN when empty.
func percentiles(ds []time.Duration) (p50, p99 float64) {
	if len(ds) == 0 {
		return math.NaN(), math.NaN()
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		i = max(0, min(i, len(s)-1))
		return float64(s[i].Microseconds()) / 1000
	}
	return at(0.50), at(0.99)
}
