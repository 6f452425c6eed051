//go:build linux && (amd64 || arm64)

package rtc

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
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
	close()
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

	// out, when not -1, is a socket of the same address that only sends
	// (sendSocket), unknown to Go's poller. omu keeps it from being closed
	// (and its number reused) during a send.
	omu sync.RWMutex
	out int
}

func newRawSocket(c *net.UDPConn) rawSocket {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	la, _ := c.LocalAddr().(*net.UDPAddr)
	r := &rawUDP{c: c, rc: rc, v6: la == nil || la.IP.To4() == nil, out: -1}
	r.rd.fn = r.rd.recvfrom
	r.wr.fn = r.wr.sendto
	if la != nil {
		if fd, err := sendSocket(rc, la, r.v6); err == nil {
			r.out = fd
		}
	}
	return r
}

// sendSocket opens the socket the node sends its media from: bound to the
// media socket's own address, so peers see packets from the port they
// talk to, but never registered with Go's poller. Every datagram a socket
// sends gives back send buffer space, which the kernel announces to epoll
// as writability; Go registers its sockets for that, so each sendmmsg on
// the media socket woke a thread waiting in epoll_wait for nothing, about
// a third of the CPU of a 50-subscriber fan-out (BENCHMARKS.md). The two
// sockets form a SO_REUSEPORT group whose program sends every incoming
// datagram to the media socket, the group's first. It works only when
// the media socket was opened with SO_REUSEPORT (listenMedia); otherwise
// it returns an error and the media socket sends for itself.
func sendSocket(rc syscall.RawConn, la *net.UDPAddr, v6 bool) (int, error) {
	var reuse, v6only int
	var serr error
	err := rc.Control(func(fd uintptr) {
		if reuse, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT); serr != nil || reuse == 0 {
			return
		}
		if v6 {
			if v6only, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); serr != nil {
				return
			}
		}
		// Index 0 of the group, whatever the datagram: the media socket.
		prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return -1, err
	}
	if reuse == 0 {
		return -1, errors.New("media socket is not in a SO_REUSEPORT group")
	}
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, err
	}
	var sa unix.Sockaddr
	if v6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only)
		a := &unix.SockaddrInet6{Port: la.Port}
		copy(a.Addr[:], la.IP.To16())
		sa = a
	} else {
		a := &unix.SockaddrInet4{Port: la.Port}
		copy(a.Addr[:], la.IP.To4())
		sa = a
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err == nil {
		// Capped by net.core.wmem_max; a smaller buffer only means an
		// EAGAIN sooner, which waitWritable covers.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// listenMedia opens the media socket in a SO_REUSEPORT group of its own,
// for sendSocket. The address is first bound without SO_REUSEPORT, so that
// a port another socket holds is refused as before; SO_REUSEPORT only lets
// sockets of the same user join, and the group's program gives every
// datagram to this one.
func listenMedia(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
	probe, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	addr := *probe.LocalAddr().(*net.UDPAddr)
	_ = probe.Close()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// readBufferSize is the receive buffer the kernel gave c, in the bytes it
// was asked for (Linux reports twice that, for its bookkeeping), or 0.
func readBufferSize(c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil {
			n = v / 2
		}
	})
	return n
}

// close closes the send socket, once nothing sends any more.
func (r *rawUDP) close() {
	r.omu.Lock()
	defer r.omu.Unlock()
	if r.out >= 0 {
		_ = unix.Close(r.out)
		r.out = -1
	}
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
	var err error
	r.omu.RLock()
	if out := r.out; out >= 0 {
		for !o.sendto(uintptr(out)) {
			if !waitWritable(out) {
				o.errn = unix.EAGAIN
				break
			}
		}
	} else {
		err = r.rc.Write(o.fn)
	}
	r.omu.RUnlock()
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
	r.omu.RLock()
	if out := r.out; out >= 0 {
		for !h.sendmmsg(uintptr(out)) {
			if !waitWritable(out) {
				break // still full: the rest is dropped
			}
		}
		r.omu.RUnlock()
		return true
	}
	r.omu.RUnlock()
	if h.fn == nil {
		h.fn = h.sendmmsg
	}
	err := r.rc.Write(h.fn)
	return err == nil || !errors.Is(err, net.ErrClosed) || h.off > 0
}

// waitWritable waits up to sendWait for fd to take more, with poll(2): the
// send socket is not the poller's. It reports false on a timeout or error.
func waitWritable(fd int) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	n, err := unix.Poll(fds[:], int(sendWait/time.Millisecond))
	return err == nil && n > 0
}

// sendWait is how long a full send buffer may hold a batch up.
const sendWait = 20 * time.Millisecond

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
