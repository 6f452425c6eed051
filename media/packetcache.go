package media

// packetCacheSize is how many packets of one incoming stream are kept for
// retransmission: about 2 s of a 1.5 Mbit/s layer, 10 s of Opus.
const packetCacheSize = 512

// packetCache keeps the most recent packets of one incoming RTP stream,
// indexed by sequence number, in preallocated slots: storing and fetching
// never allocate. It is written only by the stream's reader goroutine;
// fetches from RTCP goroutines take the lock.
type packetCache struct {
	mu    spinMutex
	slots [packetCacheSize]cacheSlot
}

type cacheSlot struct {
	seq   uint16
	valid bool
	n     int
	buf   [receiveMTU]byte
}

// store copies one raw RTP packet into the slot for its sequence number.
func (c *packetCache) store(seq uint16, pkt []byte) {
	if len(pkt) > receiveMTU {
		return
	}
	c.mu.Lock()
	s := &c.slots[seq%packetCacheSize]
	s.seq = seq
	s.valid = true
	s.n = copy(s.buf[:], pkt)
	c.mu.Unlock()
}

// get copies the packet with sequence number seq into dst and returns its
// length, or 0 when it is no longer (or never was) in the cache.
func (c *packetCache) get(seq uint16, dst []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.slots[seq%packetCacheSize]
	if !s.valid || s.seq != seq || len(dst) < s.n {
		return 0
	}
	return copy(dst, s.buf[:s.n])
}
