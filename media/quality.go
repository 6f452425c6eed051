package media

import (
	"math"
	"sync/atomic"
	"time"
)

// ConnQuality is how well a participant's media gets through, on
// LiveKit's scale (livekit_models.proto ConnectionQuality).
type ConnQuality int32

const (
	ConnPoor      ConnQuality = 0
	ConnGood      ConnQuality = 1
	ConnExcellent ConnQuality = 2
	ConnLost      ConnQuality = 3
)

func (q ConnQuality) String() string {
	switch q {
	case ConnPoor:
		return "poor"
	case ConnGood:
		return "good"
	case ConnExcellent:
		return "excellent"
	case ConnLost:
		return "lost"
	}
	return "unknown"
}

// ConnQualityInfo is one participant's connection quality: Score is a mean
// opinion score, 1 (bad) to 4.5 (the best a call gets), as LiveKit's.
type ConnQualityInfo struct {
	ParticipantSID string
	Quality        ConnQuality
	Score          float32
}

// ConnQualitySignaller is what a Signaller may also be: told the
// connection quality of its participant and of those it subscribes to,
// when one changes (LiveKit's ConnectionQualityUpdate).
type ConnQualitySignaller interface {
	SendConnQuality(infos []ConnQualityInfo)
}

// qualityEvery is how many speaker intervals pass between two quality
// assessments: about 5 s, LiveKit's (pkg/sfu/connectionquality UpdateInterval).
const qualityEvery = 12

// The thresholds of the assessment, on the R factor of the simplified
// E-model (ITU-T G.107) that score computes: R 80 and above is a call
// nobody notices anything wrong with, 60 to 80 one where some do, below
// 60 one where most do.
const (
	rExcellent = 80
	rGood      = 60
	// lossWeight is what each percent of packets lost takes off R.
	lossWeight = 2.5
)

// linkWindow is what one direction of a participant's link did in one
// assessment window: loss as a fraction, jitter and round trip in
// milliseconds (0 when unknown).
type linkWindow struct {
	measured bool
	loss     float64
	jitterMs float64
	rttMs    float64
}

func (w *linkWindow) worst(o linkWindow) {
	if !o.measured {
		return
	}
	w.measured = true
	w.loss = math.Max(w.loss, o.loss)
	w.jitterMs = math.Max(w.jitterMs, o.jitterMs)
	w.rttMs = math.Max(w.rttMs, o.rttMs)
}

// rFactor is the simplified E-model's R for w: 93.2 less a delay
// impairment (half the round trip, twice the jitter and 10 ms of
// processing; 1/40 per ms below 160 ms, steeper above) and a loss
// impairment. The shape is the one PingPlotter documents and LiveKit's
// scorer follows (pkg/sfu/connectionquality/scorer.go); the weights are
// ours.
func rFactor(w linkWindow) float64 {
	latency := w.rttMs/2 + 2*w.jitterMs + 10
	delay := latency / 40
	if latency > 160 {
		delay = (latency - 120) / 10
	}
	r := 93.2 - delay - lossWeight*100*w.loss
	return math.Max(0, r)
}

// mos maps R to a mean opinion score (ITU-T G.107 annex B).
func mos(r float64) float32 {
	if r <= 0 {
		return 1
	}
	if r >= 100 {
		return 4.5
	}
	m := 1 + 0.035*r + 7e-6*r*(r-60)*(100-r)
	return float32(min(4.5, max(1, m)))
}

// qualityOf rates R.
func qualityOf(r float64) ConnQuality {
	switch {
	case r >= rExcellent:
		return ConnExcellent
	case r >= rGood:
		return ConnGood
	}
	return ConnPoor
}

// upStats is one incoming stream's counters for the quality assessment,
// written by its transport's reader goroutine (Layer.forward) and read by
// the room's goroutine.
type upStats struct {
	// The reader goroutine's own: the extended highest sequence number,
	// and the last packet's transit time for jitter (RFC 3550 A.8).
	ext        uint64
	started    bool
	base       int64 // UnixNano of the first packet
	transit    uint32
	jitter     float64 // in RTP clock units
	highest    atomic.Uint64
	received   atomic.Uint64
	jitterBits atomic.Uint64 // math.Float64bits(jitter)
	// The room goroutine's own: the counters at the last assessment.
	lastHighest, lastReceived uint64
}

// observe counts one packet with sequence number seq and RTP timestamp ts
// that arrived at now (UnixNano), on a stream of the given clock rate.
func (s *upStats) observe(seq uint16, ts uint32, now int64, clockRate uint32) {
	first := !s.started
	if first {
		s.started = true
		s.ext = 1<<16 + uint64(seq) // room below to go back
		s.base = now
	} else if d := int16(seq - uint16(s.ext)); d > 0 {
		s.ext += uint64(d)
	}
	s.highest.Store(s.ext)
	s.received.Add(1)
	if clockRate == 0 {
		return
	}
	// Arrival and transit in RTP units, modulo 2^32: only differences
	// count. In floating point, a multiplication: exact to the unit for
	// days of nanoseconds.
	arrival := int64(float64(now-s.base) * float64(clockRate) / 1e9)
	transit := uint32(arrival) - ts
	if !first {
		d := float64(int32(transit - s.transit))
		s.jitter += (math.Abs(d) - s.jitter) / 16
		s.jitterBits.Store(math.Float64bits(s.jitter))
	}
	s.transit = transit
}

// window returns what the stream did since the last call: ok is false when
// nothing arrived (the stream is silent: muted, or stopped by its
// publisher).
func (s *upStats) window(clockRate uint32) (w linkWindow, ok bool) {
	highest, received := s.highest.Load(), s.received.Load()
	expected := highest - s.lastHighest
	got := received - s.lastReceived
	first := s.lastHighest == 0
	s.lastHighest, s.lastReceived = highest, received
	if got == 0 || first {
		return w, got > 0
	}
	w.measured = true
	if expected > got {
		w.loss = float64(expected-got) / float64(expected)
	}
	if clockRate > 0 {
		w.jitterMs = math.Float64frombits(s.jitterBits.Load()) * 1000 / float64(clockRate)
	}
	return w, true
}

// downStats is what a subscriber's receiver reports say of one down track,
// written by the goroutine that reads its feedback and taken by the room's
// goroutine: the loss reported in the window (summed, for the mean: each
// report covers about a second) and the last jitter and round trip.
type downStats struct {
	reports  atomic.Uint32
	lossSum  atomic.Uint32 // fractions lost, in 1/256
	jitterUs atomic.Uint32
	rttUs    atomic.Uint32
}

// ReceiverReport takes what the subscriber reports of this track (RFC 3550
// section 6.4.1): the fraction of packets lost since its last report (in
// 1/256), its interarrival jitter (in RTP clock units), and the round trip
// measured from the report's LSR and DLSR (0 when it has none). Called by
// the transport's feedback reader.
func (d *DownTrack) ReceiverReport(fractionLost uint8, jitter uint32, rtt time.Duration) {
	s := &d.quality
	s.lossSum.Add(uint32(fractionLost))
	s.reports.Add(1)
	if rate := d.up.codec.ClockRate; rate > 0 {
		us := uint64(jitter) * 1e6 / uint64(rate)
		s.jitterUs.Store(uint32(min(us, math.MaxUint32)))
	}
	if rtt > 0 {
		s.rttUs.Store(uint32(min(rtt.Microseconds(), math.MaxUint32)))
	}
}

// window takes the reports since the last call; ok is false when none came.
func (s *downStats) window() (w linkWindow, ok bool) {
	// A report landing between the two swaps counts in the next window
	// with its loss in this one: a rare, small error.
	n := s.reports.Swap(0)
	sum := s.lossSum.Swap(0)
	if n == 0 {
		return w, false
	}
	w.measured = true
	w.loss = float64(sum) / 256 / float64(n)
	w.jitterMs = float64(s.jitterUs.Load()) / 1000
	w.rttMs = float64(s.rttUs.Load()) / 1000
	return w, true
}

// assessUp measures what arrived from p in the window just ended: the
// worst loss and jitter of its published streams. heard is false when p
// publishes unmuted media of which nothing arrived. Each track's loss is
// kept for its subscribers' assessment (assessDown). Room goroutine only.
func (p *Participant) assessUp() (up linkWindow, heard bool) {
	heard = true
	for _, pt := range p.pending {
		if pt.up == nil {
			continue
		}
		var track linkWindow
		got := false
		for i := range pt.up.layers {
			l := pt.up.layers[i].Load()
			if l == nil {
				continue
			}
			if w, ok := l.stats.window(pt.up.codec.ClockRate); ok {
				got = true
				track.worst(w)
			}
		}
		pt.up.windowLoss = track.loss
		up.worst(track)
		if !pt.info.Muted && !got {
			heard = false
		}
	}
	return up, heard
}

// assessDown measures what p reports receiving in the window just ended:
// the mean loss of each subscription less what its publisher's track had
// already lost on the way in (the node forwards the gaps, and the
// subscriber counts them), the worst jitter and round trip. ok is false
// when no report came. Room goroutine only.
func (p *Participant) assessDown() (down linkWindow, ok bool) {
	for _, d := range p.downs {
		w, got := d.quality.window()
		if !got {
			continue
		}
		ok = true
		w.loss = math.Max(0, w.loss-d.up.windowLoss)
		down.worst(w)
	}
	return down, ok
}

// rate is p's connection quality from its two directions: the worse of
// the two, the round trip applying to both. It is lost only when it
// publishes unmuted media of which nothing arrived and reported nothing
// either: a client told it is lost while publishing reconnects
// (livekit-client RTCEngine.ts handleLocalConnectionQuality). ok is false
// when nothing was measured.
func rate(sid string, up linkWindow, heard bool, down linkWindow, reported bool) (info ConnQualityInfo, ok bool) {
	if !heard && !up.measured && !reported {
		return ConnQualityInfo{ParticipantSID: sid, Quality: ConnLost, Score: 1}, true
	}
	if !up.measured && !down.measured {
		return info, false
	}
	if up.rttMs == 0 {
		up.rttMs = down.rttMs
	}
	r := math.Min(rFactorOr(up), rFactorOr(down))
	return ConnQualityInfo{ParticipantSID: sid, Quality: qualityOf(r), Score: mos(r)}, true
}

// rFactorOr is w's R, or the best when w was not measured.
func rFactorOr(w linkWindow) float64 {
	if !w.measured {
		return 100
	}
	return rFactor(w)
}

// updateQuality assesses every local participant and, when one's quality
// changed or one is new, tells each participant that can hear of it its
// own quality and that of the participants it subscribes to, as
// livekit-server does (pkg/rtc/room.go connectionQualityWorker).
// prev is the last assessment, by sid; the new one is returned. Room
// goroutine only.
func (r *Room) updateQuality(prev map[string]ConnQualityInfo) map[string]ConnQualityInfo {
	now := make(map[string]ConnQualityInfo, len(r.participants))
	changed := false
	// Every track's incoming loss first: a subscriber's is measured
	// against it.
	type upWindow struct {
		w     linkWindow
		heard bool
	}
	ups := make(map[*Participant]upWindow, len(r.participants))
	for _, q := range r.participants {
		w, heard := q.assessUp()
		ups[q] = upWindow{w, heard}
	}
	for _, q := range r.participants {
		if q.origin != "" || q.state != StateActive {
			continue
		}
		down, reported := q.assessDown()
		info, ok := rate(q.sid, ups[q].w, ups[q].heard, down, reported)
		if !ok {
			// Nothing measured this window (a silent subscriber between
			// two reports): keep the last assessment.
			if last, had := prev[q.sid]; had {
				now[q.sid] = last
			}
			continue
		}
		now[q.sid] = info
		if last, had := prev[q.sid]; !had || last.Quality != info.Quality {
			changed = true
		}
	}
	if !changed {
		return now
	}
	for _, q := range r.participants {
		cs, ok := q.sig.(ConnQualitySignaller)
		if !ok || q.origin != "" || !q.Started() {
			continue
		}
		var infos []ConnQualityInfo
		if info, ok := now[q.sid]; ok {
			infos = append(infos, info)
		}
		seen := map[*Participant]bool{q: true}
		for _, d := range q.downs {
			pub := d.up.pub
			if seen[pub] {
				continue
			}
			seen[pub] = true
			if info, ok := now[pub.sid]; ok {
				infos = append(infos, info)
			}
		}
		if len(infos) > 0 {
			cs.SendConnQuality(infos)
		}
	}
	return now
}
