package media

// packetCacheSize is how many packets of one incoming stream are kept for
// retransmission: about 2 s of a 1.5 Mbit/s layer, 10 s of Opus.
const packetCacheSize = 512

// seqRestart is how far behind the newest packet a sequence number must be
// for the stream to count as restarted (a publisher that reset its
// sequence numbers) rather than reordered: no network holds a packet back
// that long (4096 packets are seconds of the largest layer).
const seqRestart = 4096

// packetCache keeps the most recent packets of one incoming RTP stream,
// indexed by sequence number, in preallocated slots: storing and fetching
// never allocate. It is written only by the stream's reader goroutine;
// fetches from RTCP goroutines take the lock.
//
// A slot only ever holds the first copy of a packet: down tracks forward
// only what store accepts, and answer NACKs from here under the sequence
// number they forwarded it with, so the bytes a NACK resends must be the
// bytes that were sent (see sendWindow).
type packetCache struct {
	mu      spinMutex
	started bool
	highest uint16 // the newest sequence number stored
	// epoch counts restarts: a packet is fetched only in the epoch it was
	// forwarded in. Written under mu by the stream's reader goroutine, which
	// alone reads it without (down tracks' forward).
	epoch uint32
	slots [packetCacheSize]cacheSlot
}

type cacheSlot struct {
	seq   uint16
	valid bool
	n     int
	buf   [MaxPacketSize]byte
}

// store copies one raw RTP packet into the slot for its sequence number
// and reports whether it is to be forwarded. It is not when the slot
// already holds that sequence number (a duplicate, which may differ from
// the copy forwarded, so it must be neither kept nor sent), or when the
// packet is as old as the whole cache: its slot has been reused by a newer
// packet, and storing it would replace that one. A packet seqRestart or
// more behind starts the stream afresh.
func (c *packetCache) store(seq uint16, pkt []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ahead := seq - c.highest; {
	case !c.started:
		c.started, c.highest = true, seq
	case ahead != 0 && ahead < 0x8000:
		c.highest = seq
	case c.highest-seq >= seqRestart:
		for i := range c.slots {
			c.slots[i].valid = false
		}
		c.highest = seq
		c.epoch++
	case c.highest-seq >= packetCacheSize:
		return false
	}
	s := &c.slots[seq%packetCacheSize]
	if s.valid && s.seq == seq {
		return false
	}
	if len(pkt) > MaxPacketSize {
		s.valid = false
		return true
	}
	s.seq = seq
	s.valid = true
	s.n = copy(s.buf[:], pkt)
	return true
}

// get copies the packet with sequence number seq stored in the given
// epoch into dst and returns its length, or 0 when it is no longer (or
// never was) in the cache.
func (c *packetCache) get(seq uint16, epoch uint32, dst []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.slots[seq%packetCacheSize]
	if !s.valid || s.seq != seq || c.epoch != epoch || len(dst) < s.n {
		return 0
	}
	return copy(dst, s.buf[:s.n])
}
