//go:build linux && (amd64 || arm64)

package rtc

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The media socket's system calls (recvfrom, sendto, sendmmsg) are made as
// raw system calls. The socket is non-blocking, so none of them waits in
// the kernel, and they need not tell the Go scheduler they are entering it.
// That bookkeeping is what costs under load: the first system call after
// the node went idle wakes the scheduler's monitor thread (sysmon), which
// then polls every 20 us for at least a millisecond before backing off. A
// node forwarding media goes idle and wakes hundreds of times a second, so
// the monitor never backs off; in the profile of the audio 10 x 40 load it
// was 16 % of the node's CPU (BENCHMARKS.md). When the socket has nothing
// to read, or its send buffer is full (EAGAIN), the call waits through the
// poller as a normal read or write does.

// mmsghdr is struct mmsghdr of <sys/socket.h> on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// sysHeaders holds a batch as the kernel reads it, and the state of its
// sendmmsg loop (so that no closure is allocated per batch).
type sysHeaders struct {
	hdrs [batchMax]mmsghdr
	iovs [batchMax]unix.Iovec
	sas  [batchMax]unix.RawSockaddrInet6
	off  int
	n    int
	fn   func(fd uintptr) bool
}

// rawSocket is the socket's system calls made without the Go scheduler's
// bookkeeping.
type rawSocket interface {
	send(bt *udpBatch) bool
	readFrom(p []byte) (int, netip.AddrPort, error)
	writeTo(p []byte, a netip.AddrPort) (int, error)
}

// rawOp is one recvfrom or sendto in flight. Each rawUDP has one of each,
// guarded by a mutex, so a call allocates nothing: the ICE mux has a single
// reader, and single writes (RTCP, STUN, DTLS) are rare.
type rawOp struct {
	buf   []byte
	sa    unix.RawSockaddrInet6
	salen uint32
	n     int
	errn  unix.Errno
	fn    func(fd uintptr) bool
}

type rawUDP struct {
	c  *net.UDPConn
	rc syscall.RawConn
	// v6 is an AF_INET6 socket (possibly dual-stack): it is given every
	// address as a sockaddr_in6, IPv4 ones mapped (::ffff:a.b.c.d), as Go's
	// net package does.
	v6 bool

	rmu sync.Mutex
	rd  rawOp
	wmu sync.Mutex
	wr  rawOp
}

func newRawSocket(c *net.UDPConn) rawSocket {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	r := &rawUDP{c: c, rc: rc, v6: la == nil || la.IP.To4() == nil}
	r.rd.fn = r.rd.recvfrom
	r.wr.fn = r.wr.sendto
	return r
}

// recvfrom is called by the poller with the socket's descriptor; false
// means "nothing to read yet, wait".
func (o *rawOp) recvfrom(fd uintptr) bool {
	for {
		o.salen = unix.SizeofSockaddrInet6
		k, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(bufPtr(o.buf)), uintptr(len(o.buf)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&o.sa)), uintptr(unsafe.Pointer(&o.salen)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		o.n, o.errn = int(k), e
		return true
	}
}

// sendto is the same for one outgoing datagram.
func (o *rawOp) sendto(fd uintptr) bool {
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(bufPtr(o.buf)), uintptr(len(o.buf)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&o.sa)), uintptr(o.salen))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		o.errn = e
		return true
	}
}

func bufPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// readFrom is recvfrom(2). Errors are wrapped as net.UDPConn's are, so the
// ICE mux sees net.ErrClosed when the socket closes.
func (r *rawUDP) readFrom(p []byte) (int, netip.AddrPort, error) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	o := &r.rd
	o.buf, o.errn = p, 0
	err := r.rc.Read(o.fn)
	o.buf = nil
	if err == nil && o.errn != 0 {
		err = o.errn
	}
	if err != nil {
		return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Source: r.c.LocalAddr(), Err: err}
	}
	return o.n, sockaddrAddrPort(&o.sa), nil
}

// writeTo is sendto(2), for packets outside a fan-out (RTCP, STUN, DTLS).
func (r *rawUDP) writeTo(p []byte, a netip.AddrPort) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	o := &r.wr
	o.buf, o.errn = p, 0
	ip := a.Addr()
	if ip.Is4() {
		v := ip.As4()
		o.salen = r.sockaddr(&o.sa, v[:], int(a.Port()))
	} else {
		v := ip.As16()
		o.salen = r.sockaddr(&o.sa, v[:], int(a.Port()))
	}
	err := r.rc.Write(o.fn)
	o.buf = nil
	if err == nil && o.errn != 0 {
		err = o.errn
	}
	if err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: r.c.LocalAddr(), Addr: net.UDPAddrFromAddrPort(a), Err: err}
	}
	return len(p), nil
}

// send sends every packet of bt, dropping any the kernel refuses as a
// failed UDP send would. It reports false when it could not reach the
// socket at all (closed), leaving nothing sent.
func (r *rawUDP) send(bt *udpBatch) bool {
	h := &bt.sys
	for i := 0; i < bt.n; i++ {
		a := &bt.addrs[i]
		m := &h.hdrs[i]
		buf := bt.views[i][0]
		h.iovs[i].Base = unsafe.SliceData(buf)
		h.iovs[i].SetLen(len(buf))
		m.hdr = unix.Msghdr{Iov: &h.iovs[i], Iovlen: 1}
		m.hdr.Namelen = r.sockaddr(&h.sas[i], a.IP, a.Port)
		m.hdr.Name = (*byte)(unsafe.Pointer(&h.sas[i]))
	}
	h.off, h.n = 0, bt.n
	if h.fn == nil {
		h.fn = h.sendmmsg
	}
	err := r.rc.Write(h.fn)
	return err == nil || !errors.Is(err, net.ErrClosed) || h.off > 0
}

// sendmmsg sends h.hdrs[h.off:h.n], called by the poller.
func (h *sysHeaders) sendmmsg(fd uintptr) bool {
	for h.off < h.n {
		sent, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&h.hdrs[h.off])), uintptr(h.n-h.off), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EAGAIN:
			return false // wait until the socket can take more
		case e == unix.EINTR:
		case e != 0:
			h.off++ // the first packet failed: drop it
		default:
			h.off += int(sent)
		}
	}
	return true
}

// sockaddr writes ip:port into sa in the socket's family: on an AF_INET6
// socket an IPv4 address becomes IPv4-mapped.
func (r *rawUDP) sockaddr(sa *unix.RawSockaddrInet6, ip []byte, port int) uint32 {
	if r.v6 && len(ip) == 4 {
		ip = net.IP(ip).To16()
	}
	return putSockaddr(sa, ip, port)
}

// putSockaddr writes ip:port into sa as a sockaddr_in (4-byte ip) or
// sockaddr_in6 and returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, ip []byte, port int) uint32 {
	if len(ip) == 4 {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET}
		copy(s4.Addr[:], ip)
		s4.Port = htons(uint16(port))
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6}
	copy(sa.Addr[:], ip)
	sa.Port = htons(uint16(port))
	return unix.SizeofSockaddrInet6
}

func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), htons(s4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), htons(sa.Port))
	}
	return netip.AddrPort{}
}

func htons(v uint16) uint16 {
	b := [2]byte{byte(v >> 8), byte(v)}
	return *(*uint16)(unsafe.Pointer(&b))
}
