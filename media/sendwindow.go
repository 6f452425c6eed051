package media

// sendWindowSize is how many of a down track's latest outgoing sequence
// numbers it remembers: as many as the publisher's packet cache holds, so
// that every packet a NACK could be answered with is covered.
const sendWindowSize = packetCacheSize

const (
	// rtxIntervalMs is the shortest time between two retransmissions of one
	// packet. livekit/livekit pkg/sfu/sequencer.go waits min(100 ms, 2 RTT)
	// (ignoreRetransmission); the node has no RTT estimate, so it takes
	// the upper bound: a NACK repeated sooner than that is a receiver's
	// retry for a retransmission still in flight, or an attack.
	rtxIntervalMs = 100
	// rtxMaxPerPacket is how often one packet is retransmitted at most, as
	// livekit's sequencer (maxAck): a packet whose retransmissions were
	// lost three times is better replaced by a keyframe.
	rtxMaxPerPacket = 3
)

// sendWindow is a down track's record of the outgoing sequence numbers it
// has used, kept so that no sequence number is sent twice with different
// contents. Under one SRTP key a packet index (ROC and sequence number,
// RFC 3711 section 3.3.1) sent twice with different bytes reuses the
// AES-GCM nonce (RFC 7714 section 8.1) or the AES-CM keystream
// (RFC 3711 section 4.1.1), which gives away the XOR of the two payloads
// and, for GCM, the authentication key. Like livekit/livekit
// pkg/sfu/rtpmunger.go and pkg/sfu/sequencer.go it drops what falls behind
// a layer switch, duplicates, and packets too old to tell; unlike them it
// needs no allocation: one bit per sequence number in a ring.
//
// It also keeps the rollover counter of each outgoing sequence number, so
// the sink (and its SRTP sealer) is told the counter rather than guessing it, and when
// each was last retransmitted, to answer a NACK at most once per interval.
// It is guarded by the down track's lock.
type sendWindow struct {
	highest uint16 // the highest outgoing sequence number used
	roc     uint32 // the rollover counter of highest
	// seg is how many sequence numbers up to and including highest belong
	// to the current segment (since the last layer switch), at most
	// sendWindowSize: only those may be retransmitted.
	seg uint16
	// used has bit seq%sendWindowSize set when seq was sent, or passed
	// over at a layer switch, within the window.
	used [sendWindowSize / 64]uint64
	// rtxN is how many times seq%sendWindowSize was retransmitted, rtxAt
	// when it last was, in milliseconds (wrapping).
	rtxAt [sendWindowSize]uint32
	rtxN  [sendWindowSize]uint8
}

// start begins a stream whose first outgoing sequence number is first,
// sent under rollover counter 0, with nothing before it sendable.
func (w *sendWindow) start(first uint16) {
	w.highest = first - 1
	w.roc = 0
	if first == 0 {
		// highest is 65535 of the counter before 0, so that first, one
		// ahead, wraps it to 0.
		w.roc = ^uint32(0)
	}
	w.restart()
}

// newStream keeps the sequence numbers going on a new SSRC, whose rollover
// counter starts at zero (RFC 3711 section 3.3.1).
func (w *sendWindow) newStream() { w.start(w.highest + 1) }

// restart begins a new segment at highest+1 (a layer switch): every
// sequence number up to highest counts as used, so a packet of the new
// layer that maps behind the switch point is dropped rather than sent
// under a number already used for another packet.
func (w *sendWindow) restart() {
	for i := range w.used {
		w.used[i] = ^uint64(0)
	}
	w.seg = 0
}

func (w *sendWindow) isUsed(seq uint16) bool {
	i := seq % sendWindowSize
	return w.used[i/64]&(1<<(i%64)) != 0
}

func (w *sendWindow) mark(seq uint16) {
	i := seq % sendWindowSize
	w.used[i/64] |= 1 << (i % 64)
}

// forget frees seq's slot for a sequence number sendWindowSize later.
func (w *sendWindow) forget(seq uint16) {
	i := seq % sendWindowSize
	w.used[i/64] &^= 1 << (i % 64)
	w.rtxAt[i], w.rtxN[i] = 0, 0
}

// peek reports whether seq may be sent, the rollover counter to send it
// under, and whether it is the newest so far. It may not when seq was used
// already, lies before the current segment, or is too far behind the
// newest to tell: the packet must be dropped. A seq less than half the
// sequence space ahead of the newest is new (RFC 3711 appendix A's
// estimate, which receivers apply too); anything else is behind it.
func (w *sendWindow) peek(seq uint16) (roc uint32, newest, ok bool) {
	if ahead := seq - w.highest; ahead != 0 && ahead < 0x8000 {
		roc = w.roc
		if seq < w.highest {
			roc++
		}
		return roc, true, true
	}
	if w.highest-seq >= sendWindowSize || w.isUsed(seq) {
		return 0, false, false
	}
	return w.rocOf(seq), false, true
}

// take claims seq, as peek allows, for a packet about to be sent.
func (w *sendWindow) take(seq uint16) (roc uint32, newest, ok bool) {
	roc, newest, ok = w.peek(seq)
	if !ok {
		return roc, newest, ok
	}
	if newest {
		ahead := seq - w.highest
		if ahead >= sendWindowSize {
			w.used = [len(w.used)]uint64{}
			w.rtxAt = [sendWindowSize]uint32{}
			w.rtxN = [sendWindowSize]uint8{}
		} else {
			for s := w.highest + 1; s != seq; s++ {
				w.forget(s)
			}
		}
		w.forget(seq)
		w.roc, w.highest = roc, seq
		w.seg = uint16(min(int(w.seg)+int(ahead), sendWindowSize))
	}
	w.mark(seq)
	return roc, newest, ok
}

// rocOf is the rollover counter of seq, which is not ahead of highest.
func (w *sendWindow) rocOf(seq uint16) uint32 {
	if seq > w.highest {
		return w.roc - 1
	}
	return w.roc
}

// sent reports whether seq was sent in the current segment and is still
// in the window, and its rollover counter: only such a packet may be
// retransmitted, since its number stands for one packet only.
func (w *sendWindow) sent(seq uint16) (roc uint32, ok bool) {
	if w.highest-seq >= w.seg || !w.isUsed(seq) {
		return 0, false
	}
	return w.rocOf(seq), true
}

// mayResend reports whether seq, sent in the current segment, may be
// retransmitted at nowMs: not within rtxIntervalMs of its last
// retransmission and not more than rtxMaxPerPacket times.
func (w *sendWindow) mayResend(seq uint16, nowMs uint32) bool {
	if _, ok := w.sent(seq); !ok {
		return false
	}
	i := seq % sendWindowSize
	return w.rtxN[i] == 0 || w.rtxN[i] < rtxMaxPerPacket && nowMs-w.rtxAt[i] >= rtxIntervalMs
}

// resent records that seq was retransmitted at nowMs.
func (w *sendWindow) resent(seq uint16, nowMs uint32) {
	i := seq % sendWindowSize
	w.rtxAt[i] = nowMs
	w.rtxN[i]++
}
