package federation

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"entente.dev/entente/media"
)

// qualityRecorder is a recorder that is also a media.QualitySignaller:
// it keeps what its publisher is told to send of its video.
type qualityRecorder struct {
	*recorder
	mu      sync.Mutex
	updates [][3]bool
}

func (q *qualityRecorder) SendSubscribedQualities(_, _ string, enabled [3]bool) {
	q.mu.Lock()
	q.updates = append(q.updates, enabled)
	q.mu.Unlock()
}

func (q *qualityRecorder) all() [][3]bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([][3]bool(nil), q.updates...)
}

// last is the newest update, ok false before the first.
func (q *qualityRecorder) last() (u [3]bool, ok bool) {
	all := q.all()
	if len(all) == 0 {
		return u, false
	}
	return all[len(all)-1], true
}

// TestTrunkDynacast: a publisher on A whose only subscriber is on B is
// told the layers B's subscriber watches, through the trunk (A's export
// participant pins what B asks for, and dynacast counts pinned layers):
// all three while it watches the high layer, the low one alone after it
// asks for that, none once it leaves.
func TestTrunkDynacast(t *testing.T) {
	tn := startNodes(t)
	qr := &qualityRecorder{recorder: newRecorder()}
	defer func() {
		if t.Failed() {
			t.Logf("updates alice got: %v", qr.all())
		}
	}()
	publisherWith(t, tn.sfuA, testRoom, "@alice:a.test:DEV", qr)
	require.Eventually(t, func() bool { return tn.sfuB.HasParticipant(testRoom, "@alice:a.test:DEV") }, 10*time.Second, 20*time.Millisecond,
		"alice appears on B")
	bob, e, _ := subscriber(t, tn.sfuB, "@bob:b.test:DEV")
	var cam string
	require.Eventually(t, func() bool { cam = e.video(media.KindVideo); return cam != "" }, 10*time.Second, 20*time.Millisecond,
		"bob gets alice's camera")

	is := func(want [3]bool) func() bool {
		return func() bool { u, ok := qr.last(); return ok && u == want }
	}
	// Dynacast's fall waits 5 s (media.Config.DynacastPauseDelay).
	const within = 20 * time.Second
	require.Eventually(t, is([3]bool{true, true, true}), within, 50*time.Millisecond,
		"bob on B watches the high layer: alice sends all three")
	require.Eventually(t, func() bool {
		return bob.UpdateTrackSettings(context.Background(), &media.TrackSettings{TrackSids: []string{cam}, Quality: media.QualityLow}) == nil
	}, 5*time.Second, 50*time.Millisecond)
	start := time.Now()
	require.Eventually(t, is([3]bool{true, false, false}), within, 50*time.Millisecond,
		"bob watches the low layer only: alice sends that one")
	t.Logf("low layer only %s after bob asked", time.Since(start).Round(100*time.Millisecond))
	for i, u := range qr.all() {
		require.True(t, u[0], "update %d turned the low layer off while bob watched: %v", i, qr.all())
	}

	bob.Leave()
	require.Eventually(t, is([3]bool{}), within, 50*time.Millisecond,
		"nobody watches: alice sends nothing")
	t.Logf("updates alice got: %v", qr.all())
}
