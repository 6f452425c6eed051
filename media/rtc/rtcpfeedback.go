package rtc

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/pion/rtcp"
)

// maxNackPairs bounds the NACK pairs taken from one compound RTCP packet:
// 64 pairs name up to 1,088 lost packets, more than the packet cache holds.
const maxNackPairs = 64

// errBadRTCP means a compound RTCP packet is malformed; what was parsed
// before the fault is still used.
var errBadRTCP = errors.New("malformed rtcp packet")

// parseFeedback reads, from one decrypted compound RTCP packet a
// subscriber sent, the feedback that concerns the stream it receives under
// ssrc: whether it asks for a keyframe (PLI, RFC 4585 section 6.3.1, or
// FIR, RFC 5104 section 4.3.1) and which packets it lost (generic NACK,
// RFC 4585 section 6.2.1), appended to nacks up to its capacity. Reports
// and other feedback are skipped without being decoded. pion hands a
// sender every compound packet that names its SSRC anywhere, so feedback
// for the subscriber's other streams is in it too and is ignored here.
func parseFeedback(b []byte, ssrc uint32, nacks []rtcp.NackPair) (keyframe bool, _ []rtcp.NackPair, err error) {
	for len(b) > 0 {
		if len(b) < 4 || b[0]>>6 != 2 {
			return keyframe, nacks, errBadRTCP
		}
		n := (int(binary.BigEndian.Uint16(b[2:])) + 1) * 4
		if n > len(b) {
			return keyframe, nacks, errBadRTCP
		}
		p := b[:n]
		b = b[n:]
		if p[0]&0x20 != 0 { // padding: its last octet counts it
			pad := int(p[n-1])
			if pad == 0 || pad > n-4 {
				return keyframe, nacks, errBadRTCP
			}
			p = p[:n-pad]
		}
		if len(p) < 12 {
			continue // no media SSRC: not feedback for us
		}
		format, media := p[0]&0x1f, binary.BigEndian.Uint32(p[8:])
		switch rtcp.PacketType(p[1]) {
		case rtcp.TypePayloadSpecificFeedback:
			switch format {
			case rtcp.FormatPLI:
				keyframe = keyframe || media == ssrc
			case rtcp.FormatFIR:
				for fci := p[12:]; len(fci) >= 8; fci = fci[8:] {
					keyframe = keyframe || binary.BigEndian.Uint32(fci) == ssrc
				}
			}
		case rtcp.TypeTransportSpecificFeedback:
			if format != rtcp.FormatTLN || media != ssrc {
				continue
			}
			for fci := p[12:]; len(fci) >= 4 && len(nacks) < cap(nacks); fci = fci[4:] {
				nacks = append(nacks, rtcp.NackPair{
					PacketID:    binary.BigEndian.Uint16(fci),
					LostPackets: rtcp.PacketBitmap(binary.BigEndian.Uint16(fci[2:])),
				})
			}
		}
	}
	return keyframe, nacks, nil
}

// reportBlock is what a subscriber's receiver report says of one stream
// (RFC 3550 section 6.4.1).
type reportBlock struct {
	fractionLost uint8
	jitter       uint32
	lsr, dlsr    uint32
}

// parseReport finds, in one decrypted compound RTCP packet, the report
// block about ssrc. A compound packet starts with its sender or receiver
// report (RFC 3550 section 6.1), so only the first packet is read.
func parseReport(b []byte, ssrc uint32) (rb reportBlock, ok bool) {
	if len(b) < 8 || b[0]>>6 != 2 {
		return rb, false
	}
	n := (int(binary.BigEndian.Uint16(b[2:])) + 1) * 4
	if n < 8 || n > len(b) {
		return rb, false
	}
	count := int(b[0] & 0x1f)
	var blocks []byte
	switch rtcp.PacketType(b[1]) {
	case rtcp.TypeReceiverReport:
		blocks = b[8:n]
	case rtcp.TypeSenderReport:
		if n < 28 {
			return rb, false
		}
		blocks = b[28:n]
	default:
		return rb, false
	}
	for i := 0; i < count && len(blocks) >= 24; i, blocks = i+1, blocks[24:] {
		if binary.BigEndian.Uint32(blocks) != ssrc {
			continue
		}
		return reportBlock{
			fractionLost: blocks[4],
			jitter:       binary.BigEndian.Uint32(blocks[12:]),
			lsr:          binary.BigEndian.Uint32(blocks[16:]),
			dlsr:         binary.BigEndian.Uint32(blocks[20:]),
		}, true
	}
	return rb, false
}

// roundTrip is the round trip a report block measures when it arrives at
// now (RFC 3550 section 6.4.1: arrival less LSR less DLSR, in 1/65536 s),
// 0 when the receiver had no sender report yet or the clocks disagree.
func (rb reportBlock) roundTrip(now time.Time) time.Duration {
	if rb.lsr == 0 {
		return 0
	}
	const unixToNTP = 2208988800
	secs := uint64(now.Unix() + unixToNTP)
	frac := uint64(now.Nanosecond()) << 32 / uint64(time.Second)
	arrival := uint32((secs<<32 | frac) >> 16)
	d := arrival - rb.lsr - rb.dlsr
	if int32(d) <= 0 {
		return 0
	}
	return time.Duration(uint64(d) * uint64(time.Second) >> 16)
}
