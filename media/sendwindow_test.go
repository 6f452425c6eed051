package media

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSendWindow: sequence numbers are taken once each, under the
// rollover counter a receiver estimates (RFC 3711 section 3.3.1); nothing
// before a restart (layer switch) or older than the window is taken; only
// what was taken in the current segment counts as sent.
func TestSendWindow(t *testing.T) {
	type op struct {
		name    string
		restart bool
		seq     uint16
		ok      bool
		roc     uint32
		newest  bool
	}
	var w sendWindow
	w.start(65500)
	for _, o := range []op{
		{name: "first", seq: 65500, ok: true, newest: true},
		{name: "next", seq: 65501, ok: true, newest: true},
		{name: "duplicate", seq: 65501},
		{name: "before the start", seq: 65499},
		{name: "jump over the wrap", seq: 10, ok: true, roc: 1, newest: true},
		{name: "reordered from before the wrap", seq: 65530, ok: true, roc: 0},
		{name: "reordered twice", seq: 65530},
		{name: "reordered after the wrap", seq: 5, ok: true, roc: 1},
		{name: "switch", restart: true},
		{name: "behind the switch point", seq: 9},
		{name: "gap behind the switch point", seq: 7},
		{name: "first of the new segment", seq: 11, ok: true, roc: 1, newest: true},
		{name: "ahead", seq: 14, ok: true, roc: 1, newest: true},
		{name: "reordered in the new segment", seq: 12, ok: true, roc: 1},
		{name: "far ahead", seq: 14 + sendWindowSize, ok: true, roc: 1, newest: true},
		{name: "in the window, never sent", seq: 15 + sendWindowSize/2, ok: true, roc: 1},
		{name: "older than the window", seq: 14},
		{name: "half the space ahead is behind", seq: 14 + sendWindowSize + 0x8000},
		{name: "just under half ahead", seq: 14 + sendWindowSize + 0x7fff, ok: true, roc: 1, newest: true},
		{name: "wrap again", seq: 100, ok: true, roc: 2, newest: true},
	} {
		if o.restart {
			w.restart()
			continue
		}
		roc, newest, ok := w.take(o.seq)
		require.Equal(t, o.ok, ok, o.name)
		if ok {
			require.Equal(t, o.roc, roc, o.name)
			require.Equal(t, o.newest, newest, o.name)
		}
	}

	w = sendWindow{}
	w.start(0)
	roc, _, ok := w.take(0)
	require.True(t, ok)
	require.Zero(t, roc, "a stream starting at 0 starts under counter 0")
	w.take(1)
	w.take(3)
	w.restart()
	w.take(4)
	w.take(6)
	for _, c := range []struct {
		seq  uint16
		sent bool
	}{{0, false}, {1, false}, {3, false}, {4, true}, {5, false}, {6, true}, {7, false}} {
		_, ok := w.sent(c.seq)
		require.Equal(t, c.sent, ok, "seq %d", c.seq)
	}

	// A new SSRC goes on from the next number, under counter 0.
	w = sendWindow{}
	w.start(65535)
	w.take(65535)
	w.newStream()
	roc, _, ok = w.take(0)
	require.True(t, ok)
	require.Zero(t, roc)
	_, ok = w.sent(65535)
	require.False(t, ok)
}

// TestSendWindowResends: a packet is resent at most once per
// rtxIntervalMs and rtxMaxPerPacket times, and a slot reused by a later
// sequence number starts afresh.
func TestSendWindowResends(t *testing.T) {
	var w sendWindow
	w.start(100)
	w.take(100)
	w.take(101)
	const t0 = 5000
	require.True(t, w.mayResend(100, t0))
	w.resent(100, t0)
	require.False(t, w.mayResend(100, t0+rtxIntervalMs-1))
	require.True(t, w.mayResend(101, t0+1), "another packet")
	require.True(t, w.mayResend(100, t0+rtxIntervalMs))
	w.resent(100, t0+rtxIntervalMs)
	w.resent(100, t0+2*rtxIntervalMs)
	require.False(t, w.mayResend(100, t0+10*rtxIntervalMs), "resent %d times", rtxMaxPerPacket)
	require.False(t, w.mayResend(102, t0), "never sent")
	w.take(100 + sendWindowSize)
	require.False(t, w.mayResend(100, t0+10*rtxIntervalMs), "out of the window")
	require.True(t, w.mayResend(100+sendWindowSize, t0+1), "same slot, new packet")
}
