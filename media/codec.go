package media

import "strings"

// codecKind is how the packet path tells codecs apart, decided once per
// track so no string is compared per packet.
type codecKind uint8

const (
	codecOther codecKind = iota
	codecAudio
	codecVP8
	codecH264
)

func kindOfCodec(mime string) codecKind {
	switch {
	case strings.EqualFold(mime, "video/VP8"):
		return codecVP8
	case strings.EqualFold(mime, "video/H264"):
		return codecH264
	case len(mime) > 6 && strings.EqualFold(mime[:6], "audio/"):
		return codecAudio
	}
	return codecOther
}

// isKeyframe reports whether an RTP payload starts a decodable picture for
// the codec named by mime. Audio is always "decodable".
func isKeyframe(mime string, payload []byte) bool {
	return kindOfCodec(mime).keyframe(payload)
}

func (k codecKind) keyframe(payload []byte) bool {
	switch k {
	case codecVP8:
		return vp8Keyframe(payload)
	case codecH264:
		return h264Keyframe(payload)
	case codecAudio:
		return true
	}
	return false
}

// vp8Keyframe parses the VP8 payload descriptor (RFC 7741 section 4.2) and
// the first byte of the VP8 payload header (RFC 6386 section 9.1): a keyframe
// starts a partition (S=1, PID=0) and has its P bit clear.
func vp8Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	b0 := p[0]
	if b0&0x10 == 0 || b0&0x07 != 0 { // S bit, partition index
		return false
	}
	i := 1
	if b0&0x80 != 0 { // X: extended control bits
		if len(p) <= i {
			return false
		}
		x := p[i]
		i++
		if x&0x80 != 0 { // I: PictureID
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 { // M: 15-bit picture id
				i += 2
			} else {
				i++
			}
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX byte
			i++
		}
	}
	if len(p) <= i {
		return false
	}
	return p[i]&0x01 == 0
}

// h264Keyframe reports whether an H.264 RTP payload (RFC 6184) carries an IDR
// slice or an SPS, in a single NAL unit, a STAP-A or the start of an FU-A.
func h264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch nal := p[0] & 0x1f; {
	case nal == 5 || nal == 7:
		return true
	case nal == 24: // STAP-A: 2-byte sizes, then NAL units
		i := 1
		for i+2 < len(p) {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if t := p[i] & 0x1f; t == 5 || t == 7 {
				return true
			}
			i += size
		}
	case nal == 28: // FU-A
		if len(p) < 2 {
			return false
		}
		return p[1]&0x80 != 0 && (p[1]&0x1f == 5 || p[1]&0x1f == 7)
	}
	return false
}
