package media

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUpStatsLoss: the packets missing from the sequence numbers of a
// window are its loss, across a wrap of the 16-bit number, with late and
// reordered packets counted as they arrive; jitter is near zero for
// packets paced as their timestamps say.
func TestUpStatsLoss(t *testing.T) {
	var s upStats
	now := time.Now().UnixNano()
	seq, ts := uint16(65000), uint32(1000)
	send := func(n int, skipEvery int) {
		for i := 0; i < n; i++ {
			seq++
			ts += 960
			now += int64(20 * time.Millisecond)
			if skipEvery > 0 && i%skipEvery == 0 {
				continue
			}
			s.observe(seq, ts, now, 48000)
		}
	}
	send(100, 0)
	_, ok := s.window(48000) // the first window only sets the mark
	require.True(t, ok)
	send(1000, 10) // crosses 65535
	w, ok := s.window(48000)
	require.True(t, ok)
	require.True(t, w.measured)
	require.InDelta(t, 0.1, w.loss, 0.002)
	require.Less(t, w.jitterMs, 1.0)
	send(200, 0)
	w, _ = s.window(48000)
	require.Zero(t, w.loss)
	// Nothing arrived: not ok.
	_, ok = s.window(48000)
	require.False(t, ok)
	// A reordered packet: counted, not a loss.
	seq += 2
	s.observe(seq, ts, now, 48000)
	s.observe(seq-1, ts, now, 48000)
	w, _ = s.window(48000)
	require.Zero(t, w.loss)
}

// TestRating: the thresholds on R put a clean link at excellent, a few
// percent of loss or a long round trip at good, and heavy loss at poor.
func TestRating(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    linkWindow
		want ConnQuality
	}{
		{"clean", linkWindow{measured: true, rttMs: 20, jitterMs: 2}, ConnExcellent},
		{"1% loss", linkWindow{measured: true, loss: 0.01, rttMs: 40}, ConnExcellent},
		{"5% loss", linkWindow{measured: true, loss: 0.05, rttMs: 40}, ConnGood},
		{"600 ms round trip", linkWindow{measured: true, rttMs: 600}, ConnGood},
		{"15% loss", linkWindow{measured: true, loss: 0.15}, ConnPoor},
		{"2 s round trip", linkWindow{measured: true, rttMs: 2000}, ConnPoor},
	} {
		r := rFactor(tc.w)
		require.Equal(t, tc.want, qualityOf(r), "%s: R %.1f", tc.name, r)
		m := mos(r)
		require.True(t, m >= 1 && m <= 4.5, "%s: MOS %.2f", tc.name, m)
	}
	require.Greater(t, mos(90), mos(70))
}

// TestDownStatsWindow: the mean loss reported in a window counts, the
// reports are taken once.
func TestDownStatsWindow(t *testing.T) {
	d := &DownTrack{up: &UpTrack{codec: Codec{MimeType: "video/VP8", ClockRate: 90000}}}
	d.ReceiverReport(10, 9000, 80*time.Millisecond)
	d.ReceiverReport(51, 900, 0)
	d.ReceiverReport(2, 900, 0)
	w, ok := d.quality.window()
	require.True(t, ok)
	require.InDelta(t, 63.0/3/256, w.loss, 1e-9)
	require.InDelta(t, 10, w.jitterMs, 0.01) // the last jitter: 900 at 90 kHz
	require.InDelta(t, 80, w.rttMs, 0.01)
	_, ok = d.quality.window()
	require.False(t, ok)
}
