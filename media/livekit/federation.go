package livekit

import (
	"fmt"

	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"
)

// maxFrontEnd bounds a track description read from another node.
const maxFrontEnd = 8 << 10

// FrontEndCodec carries what a LiveKit client said of its track (the
// partial TrackInfo in media.TrackInfo.FrontEnd: encryption, stream,
// codecs) across a federation trunk as bytes, so that the clients of
// another node see the track as it was published. It implements
// federation.FrontEndCodec.
type FrontEndCodec struct{}

// MarshalFrontEnd encodes a *livekit.TrackInfo.
func (FrontEndCodec) MarshalFrontEnd(v any) ([]byte, error) {
	t, ok := v.(*livekit.TrackInfo)
	if !ok || t == nil {
		return nil, fmt.Errorf("livekit: front end of type %T", v)
	}
	return proto.Marshal(t)
}

// UnmarshalFrontEnd decodes what MarshalFrontEnd encoded, from another node.
func (FrontEndCodec) UnmarshalFrontEnd(b []byte) (any, error) {
	if len(b) > maxFrontEnd {
		return nil, fmt.Errorf("livekit: track description of %d bytes, more than %d", len(b), maxFrontEnd)
	}
	t := &livekit.TrackInfo{}
	if err := (proto.UnmarshalOptions{RecursionLimit: 16}).Unmarshal(b, t); err != nil {
		return nil, fmt.Errorf("livekit: track description: %w", err)
	}
	return t, nil
}
