package livekit

import (
	"bytes"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestFrontEndCodec: a track's LiveKit description, with its encryption,
// crosses as bytes and comes back equal; garbage and oversized input are
// refused with an error.
func TestFrontEndCodec(t *testing.T) {
	var c FrontEndCodec
	in := &livekit.TrackInfo{Type: livekit.TrackType_VIDEO, Encryption: livekit.Encryption_GCM, Stream: "camera",
		Layers: []*livekit.VideoLayer{{Quality: livekit.VideoQuality_LOW, Width: 320, Height: 180}}}
	b, err := c.MarshalFrontEnd(in)
	require.NoError(t, err)
	out, err := c.UnmarshalFrontEnd(b)
	require.NoError(t, err)
	require.True(t, proto.Equal(in, out.(*livekit.TrackInfo)))

	_, err = c.MarshalFrontEnd("not a track")
	require.Error(t, err)
	_, err = c.UnmarshalFrontEnd([]byte{0xff, 0xff, 0xff})
	require.Error(t, err)
	_, err = c.UnmarshalFrontEnd(bytes.Repeat([]byte{0}, maxFrontEnd+1))
	require.Error(t, err)
}
