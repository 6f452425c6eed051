package rtc

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const (
	// batchMax is the most packets one sendmmsg(2) carries.
	batchMax = 64
	// batchSlot holds one SRTP packet (an MTU-sized RTP packet plus its tag).
	batchSlot = receiveMTU + 100
)

// batchWriter is sendmmsg(2) as golang.org/x/net exposes it for IPv4 and
// IPv6 sockets (ipv4.Message and ipv6.Message are the same type).
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// batchConn is the UDP socket under the ICE mux. pion writes every packet
// of every peer connection through WriteToAddrPort. Outside a batch a
// packet is sent at once. While a fan-out runs (one incoming packet handed
// to all its subscribers, between begin and end) packets are copied into a
// batch that end sends with one sendmmsg(2): one system call per incoming
// packet instead of one per subscriber. The lock is held only to copy a
// packet; system calls are made outside it.
type batchConn struct {
	*net.UDPConn
	w   batchWriter
	raw rawSocket // nil where the platform has no raw system calls (batchconn_raw.go)

	mu    sync.Mutex
	depth int
	cur   *udpBatch
	free  []*udpBatch

	private sync.Pool // of *udpBatch, for fan-outs' direct sends
	// shared is the Batch a fan-out holds while pion's writes go into the
	// shared batch (begin to end).
	shared *sharedBatch

	batches atomic.Uint64
	packets atomic.Uint64
}

type udpBatch struct {
	conn  *batchConn
	n     int
	msgs  [batchMax]ipv4.Message
	views [batchMax][1][]byte
	addrs [batchMax]net.UDPAddr
	ips   [batchMax][16]byte
	bufs  [batchMax][batchSlot]byte
	sys   sysHeaders // the kernel's view of the batch, where raw sends are used
}

func newBatchConn(c *net.UDPConn) *batchConn {
	b := &batchConn{UDPConn: c}
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		b.w = ipv4.NewPacketConn(c)
	} else {
		b.w = ipv6.NewPacketConn(c)
	}
	b.raw = newRawSocket(c)
	b.cur = &udpBatch{}
	b.shared = &sharedBatch{conn: b}
	return b
}

// Close closes the socket and the one that sends for it, if any. Call it
// once nothing sends any more.
func (b *batchConn) Close() error {
	if b.raw != nil {
		b.raw.close()
	}
	return b.UDPConn.Close()
}

// ReadFromAddrPort lets pion's ICE mux read without allocating.
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	if b.raw != nil {
		return b.raw.readFrom(p)
	}
	return b.UDPConn.ReadFromUDPAddrPort(p)
}

// WriteToAddrPort sends p to a, or queues it while a batch is open.
func (b *batchConn) WriteToAddrPort(p []byte, a netip.AddrPort) (int, error) {
	b.mu.Lock()
	if b.depth == 0 || len(p) > batchSlot {
		b.mu.Unlock()
		if b.raw != nil {
			return b.raw.writeTo(p, a)
		}
		return b.UDPConn.WriteToUDPAddrPort(p, a)
	}
	bt := b.cur
	i := bt.n
	n := copy(bt.bufs[i][:], p)
	bt.put(i, bt.bufs[i][:n], a)
	var full *udpBatch
	if bt.n == batchMax {
		full = bt
		b.cur = b.takeLocked()
	}
	b.mu.Unlock()
	if full != nil {
		b.send(full)
	}
	return len(p), nil
}

// begin opens a batch; every begin is followed by one end.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.depth++
	b.mu.Unlock()
}

// end closes a batch and sends what is queued, whoever queued it, so no
// packet waits longer than the fan-out running when it was written.
func (b *batchConn) end() {
	b.mu.Lock()
	b.depth--
	var out *udpBatch
	if b.cur.n > 0 {
		out = b.cur
		b.cur = b.takeLocked()
	}
	b.mu.Unlock()
	if out != nil {
		b.send(out)
	}
}

// put makes slot i, holding p, the batch's last packet, to be sent to a.
func (bt *udpBatch) put(i int, p []byte, a netip.AddrPort) {
	bt.views[i][0] = p
	addr := &bt.addrs[i]
	if ip := a.Addr(); ip.Is4() {
		v := ip.As4()
		addr.IP = bt.ips[i][:4]
		copy(addr.IP, v[:])
	} else {
		v := ip.As16()
		addr.IP = bt.ips[i][:16]
		copy(addr.IP, v[:])
	}
	addr.Port = int(a.Port())
	bt.n = i + 1
}

// acquire is a batch private to one fan-out, for packets sealed straight
// into it (direct.go); release gives it back. Private batches take no lock
// on the packet path: sync.Pool keeps them per processor.
func (b *batchConn) acquire() *udpBatch {
	if bt, ok := b.private.Get().(*udpBatch); ok {
		return bt
	}
	return &udpBatch{conn: b}
}

// Between sends the batch if it has no free slot: a fan-out calls it
// between two subscribers (media.Batch).
func (bt *udpBatch) Between() {
	if bt.n == batchMax {
		bt.conn.flush(bt)
	}
}

// Finish sends what the batch holds and gives it back (media.Batch).
func (bt *udpBatch) Finish() {
	bt.conn.flush(bt)
	bt.conn.release(bt)
}

// sharedBatch is the media.Batch of a fan-out whose packets written
// through pion go into the socket's shared batch.
type sharedBatch struct{ conn *batchConn }

func (s *sharedBatch) Between() {}
func (s *sharedBatch) Finish()  { s.conn.end() }

func (b *batchConn) release(bt *udpBatch) {
	bt.n = 0
	b.private.Put(bt)
}

// flush sends a private batch's packets now and empties it.
func (b *batchConn) flush(bt *udpBatch) {
	if bt.n == 0 {
		return
	}
	if b.raw == nil || !b.raw.send(bt) {
		b.sendPortable(bt)
	}
	b.batches.Add(1)
	b.packets.Add(uint64(bt.n))
	bt.n = 0
}

func (b *batchConn) takeLocked() *udpBatch {
	if n := len(b.free); n > 0 {
		bt := b.free[n-1]
		b.free = b.free[:n-1]
		return bt
	}
	return &udpBatch{}
}

// send writes a batch with as few sendmmsg calls as the kernel allows. A
// packet the kernel refuses is dropped, as a failed UDP send would be.
func (b *batchConn) send(bt *udpBatch) {
	b.flush(bt)
	b.mu.Lock()
	b.free = append(b.free, bt)
	b.mu.Unlock()
}

// sendPortable sends through golang.org/x/net, a system call the Go
// scheduler knows about.
func (b *batchConn) sendPortable(bt *udpBatch) {
	ms := bt.msgs[:bt.n]
	for i := range ms {
		ms[i].Buffers = bt.views[i][:]
		ms[i].Addr = &bt.addrs[i]
	}
	for len(ms) > 0 {
		n, err := b.w.WriteBatch(ms, 0)
		if err != nil && n <= 0 {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			n = 1 // skip the packet that failed
		}
		ms = ms[n:]
	}
}
