package loadgen

import (
	"encoding/binary"
	"time"

	"entente.dev/entente/internal/rtpgen"
)

// parseRTP returns the sequence number and payload of a raw RTP packet
// (RFC 3550 section 5.1: CSRCs, the header extension of section 5.3.1 and
// padding skipped) without allocating.
func parseRTP(b []byte) (seq uint16, payload []byte, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return 0, nil, false
	}
	off := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < off+4 {
			return 0, nil, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > 0 {
		end -= int(b[end-1])
	}
	if off > end {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(b[2:]), b[off:end], true
}

// vp8Stamp finds the send time rtpgen puts after the VP8 payload descriptor
// (RFC 7741 section 4.2) and the first payload header byte. Only the first
// packet of a frame (S=1, partition 0) carries one. The descriptor is parsed
// rather than assumed to be rtpgen's 4 bytes because an SFU may rewrite it.
func vp8Stamp(p []byte) (at time.Time, stamped bool) {
	if len(p) < 1 || p[0]&0x10 == 0 || p[0]&0x07 != 0 {
		return time.Time{}, false
	}
	i := 1
	if p[0]&0x80 != 0 {
		if len(p) < 2 {
			return time.Time{}, false
		}
		x := p[1]
		i = 2
		if x&0x80 != 0 { // I: picture id, 7 or 15 bits
			if len(p) <= i {
				return time.Time{}, false
			}
			if p[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX
			i++
		}
	}
	// Skip the VP8 payload header's first byte; the stamp follows.
	if len(p) < i+1 {
		return time.Time{}, false
	}
	return rtpgen.SentAt(p[i+1:], false)
}
