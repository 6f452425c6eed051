package rtpgen

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestVP8FramesAndKeyframes(t *testing.T) {
	g := &VP8{FPS: 30, FrameBytes: 1500, KeyframeBytes: 5000, KeyframeEvery: 10, MTU: 1000}
	now := time.Unix(100, 5)
	first := g.NextFrame(now)
	require.Len(t, first, 5)
	require.True(t, IsVP8Keyframe(first[0].Payload))
	require.False(t, IsVP8Keyframe(first[1].Payload), "continuation packets do not start a frame")
	require.True(t, first[4].Marker)
	at, ok := SentAt(first[0].Payload, true)
	require.True(t, ok)
	require.Equal(t, now.UnixNano(), at.UnixNano())

	delta := g.NextFrame(now)
	require.Len(t, delta, 2)
	require.False(t, IsVP8Keyframe(delta[0].Payload))
	require.Equal(t, first[4].SequenceNumber+1, delta[0].SequenceNumber)
	require.Equal(t, first[0].Timestamp+3000, delta[0].Timestamp)

	g.RequestKeyframe()
	require.True(t, IsVP8Keyframe(g.NextFrame(now)[0].Payload))
	require.EqualValues(t, 2, g.Keyframes())
}

func TestOpus(t *testing.T) {
	g := &Opus{Bytes: 80}
	a, b := g.Next(time.Unix(1, 0)), g.Next(time.Unix(2, 0))
	require.Len(t, a.Payload, 80)
	require.Equal(t, a.SequenceNumber+1, b.SequenceNumber)
	require.Equal(t, a.Timestamp+960, b.Timestamp)
	at, ok := SentAt(b.Payload, false)
	require.True(t, ok)
	require.Equal(t, int64(2), at.Unix())
}
