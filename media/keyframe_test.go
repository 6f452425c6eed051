package media

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// VP8 payload header first bytes (RFC 6386 section 9.1): bit 0 is P, the
// inverse key frame flag; 0x10 sets show_frame.
const (
	vp8Key   = 0x10
	vp8Delta = 0x11
)

// vp8KeyBody is the rest of a key frame's payload header: sizes, then the
// start code 9d 01 2a and a 640x360 frame size.
func vp8KeyBody() []byte { return []byte{0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01} }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestVP8Keyframe(t *testing.T) {
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"descriptor only", []byte{0x10}, false},
		{"key frame, minimal descriptor", cat([]byte{0x10, vp8Key}, vp8KeyBody()), true},
		{"key frame, N bit set", cat([]byte{0x30, vp8Key}, vp8KeyBody()), true},
		{"delta frame", []byte{0x10, vp8Delta, 0x02, 0x00}, false},
		{"continuation of a key frame (S=0)", cat([]byte{0x00, vp8Key}, vp8KeyBody()), false},
		{"second partition (PID=1)", cat([]byte{0x11, vp8Key}, vp8KeyBody()), false},
		{"S=1 but PID=2", cat([]byte{0x12, vp8Key}, vp8KeyBody()), false},
		// X=1, I=1, M=0: 7-bit picture id 0x01. Read at the wrong offset
		// the picture id (odd) would look like a delta frame.
		{"7-bit picture id", cat([]byte{0x90, 0x80, 0x01, vp8Key}, vp8KeyBody()), true},
		{"7-bit picture id, delta", []byte{0x90, 0x80, 0x00, vp8Delta, 0x00}, false},
		// M=1: 15-bit picture id 0x1235; its low byte is odd.
		{"15-bit picture id", cat([]byte{0x90, 0x80, 0x92, 0x35, vp8Key}, vp8KeyBody()), true},
		{"15-bit picture id, delta", []byte{0x90, 0x80, 0x92, 0x34, vp8Delta}, false},
		// I and L: picture id, then TL0PICIDX (odd).
		{"picture id and TL0PICIDX", cat([]byte{0x90, 0xc0, 0x80, 0x07, 0x03, vp8Key}, vp8KeyBody()), true},
		{"TL0PICIDX only", cat([]byte{0x90, 0x40, 0x05, vp8Key}, vp8KeyBody()), true},
		// I, L, T, K: the TID/Y/KEYIDX byte follows (0xe1: TID=3, Y=1, KEYIDX=1).
		{"all extensions, Chrome-like", cat([]byte{0x90, 0xf0, 0x8a, 0xbd, 0x41, 0xe1, vp8Key}, vp8KeyBody()), true},
		{"all extensions, delta", []byte{0x90, 0xf0, 0x8a, 0xbe, 0x42, 0x20, vp8Delta, 0x00}, false},
		{"T without K", cat([]byte{0x90, 0x20, 0x41, vp8Key}, vp8KeyBody()), true},
		{"K without T", cat([]byte{0x90, 0x10, 0x01, vp8Key}, vp8KeyBody()), true},
		{"all extensions, continuation", cat([]byte{0x80, 0xf0, 0x8a, 0xbd, 0x41, 0xe1, vp8Key}, vp8KeyBody()), false},
		{"X without the X byte", []byte{0x90}, false},
		{"I without the picture id", []byte{0x90, 0x80}, false},
		{"15-bit picture id cut after its first byte", []byte{0x90, 0x80, 0x92}, false},
		{"descriptor without payload header", []byte{0x90, 0xf0, 0x8a, 0xbd, 0x41, 0xe1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, vp8Keyframe(tc.p))
			require.Equal(t, tc.want, isKeyframe("video/VP8", tc.p))
			require.Equal(t, tc.want, isKeyframe("video/vp8", tc.p))
		})
	}
}

func TestH264Keyframe(t *testing.T) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	slice := []byte{0x41, 0x9a, 0x24, 0x6c}
	sei := []byte{0x06, 0x05, 0x10}
	stap := func(nals ...[]byte) []byte {
		out := []byte{0x78} // F=0, NRI=3, type 24
		for _, n := range nals {
			out = append(out, byte(len(n)>>8), byte(len(n)))
			out = append(out, n...)
		}
		return out
	}
	fu := func(start, end bool, typ byte) []byte {
		h := typ
		if start {
			h |= 0x80
		}
		if end {
			h |= 0x40
		}
		return []byte{0x7c, h, 0x88, 0x84, 0x00} // indicator: NRI=3, type 28
	}
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"IDR slice", idr, true},
		{"IDR slice, NRI=0", []byte{0x05, 0x88}, true},
		{"SPS", sps, true},
		{"PPS", pps, false},
		{"non-IDR slice", slice, false},
		{"SEI", sei, false},
		{"STAP-A: SPS, PPS", stap(sps, pps), true},
		{"STAP-A: SEI, PPS, IDR", stap(sei, pps, idr), true},
		{"STAP-A: one-byte IDR last", stap(pps, []byte{0x65}), true},
		{"STAP-A: PPS, slice", stap(pps, slice), false},
		{"STAP-A: header only", []byte{0x78}, false},
		{"STAP-A: size only", []byte{0x78, 0x00, 0x05}, false},
		{"STAP-A: size beyond the packet", []byte{0x78, 0x00, 0x09, 0x65, 0x88}, false},
		{"STAP-A: zero size", []byte{0x78, 0x00, 0x00, 0x65, 0x88}, false},
		{"STAP-A: second size beyond the packet", cat(stap(pps), []byte{0x00, 0x10, 0x65}), false},
		{"FU-A start of IDR", fu(true, false, 5), true},
		{"FU-A middle of IDR", fu(false, false, 5), false},
		{"FU-A end of IDR", fu(false, true, 5), false},
		{"FU-A start of non-IDR slice", fu(true, false, 1), false},
		{"FU-A start of SPS", fu(true, false, 7), true},
		{"FU-A indicator only", []byte{0x7c}, false},
		{"FU-B (not used by WebRTC)", []byte{0x7d, 0x85, 0x00}, false},
		{"STAP-B", []byte{0x79, 0x00, 0x01, 0x00, 0x01, 0x65}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, h264Keyframe(tc.p))
			require.Equal(t, tc.want, isKeyframe("video/H264", tc.p))
		})
	}
}

func TestIsKeyframeOtherCodecs(t *testing.T) {
	require.True(t, isKeyframe("audio/opus", []byte{0xfc}), "audio is always decodable")
	require.True(t, isKeyframe("audio/OPUS", nil))
	require.False(t, isKeyframe("video/VP9", []byte{0x8f, 0xa0}), "unparsed video codecs never start a picture")
	require.False(t, isKeyframe("", []byte{0x10, vp8Key}))
}

// FuzzKeyframe checks that the keyframe parsers never panic or read out of
// bounds, and that a keyframe verdict is stable under trailing garbage only
// where the format says so (a complete VP8 descriptor).
func FuzzKeyframe(f *testing.F) {
	for _, s := range [][]byte{
		nil, {0x10}, {0x10, vp8Key}, {0x90, 0xf0, 0x8a, 0xbd, 0x41, 0xe1, vp8Key}, {0x90, 0x80, 0x92},
		{0x65}, {0x7c, 0x85}, {0x78, 0x00, 0x02, 0x68, 0xce, 0x00, 0x01, 0x65}, {0x78, 0xff, 0xff},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		// Parse a copy with no spare capacity, so that any read past the
		// end panics rather than reading a neighbour's bytes.
		q := append(make([]byte, 0, len(p)), p...)
		vk := vp8Keyframe(q)
		hk := h264Keyframe(q)
		_ = isKeyframe("video/VP8", q)
		_ = isKeyframe("video/H264", q)
		if vk {
			// A VP8 verdict depends only on the descriptor and the first
			// payload header byte: appending bytes cannot change it.
			require.True(t, vp8Keyframe(append(q[:len(q):len(q)], 0xff, 0xff)))
		}
		if hk && len(q) > 0 && q[0]&0x1f != 24 {
			require.True(t, h264Keyframe(append(q[:len(q):len(q)], 0xff)))
		}
	})
}
