//go:build linux && (amd64 || arm64)

package rtc

import (
	"net"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestRawSockaddrFamily: an IPv4 destination is written as sockaddr_in on
// an IPv4 socket and as an IPv4-mapped sockaddr_in6 on an IPv6 (possibly
// dual-stack, bound to [::]) socket, which refuses sockaddr_in.
func TestRawSockaddrFamily(t *testing.T) {
	v4 := []byte{192, 0, 2, 7}
	var sa unix.RawSockaddrInet6

	n := (&rawUDP{v6: false}).sockaddr(&sa, v4, 5000)
	require.EqualValues(t, unix.SizeofSockaddrInet4, n)
	s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
	require.EqualValues(t, unix.AF_INET, s4.Family)
	require.Equal(t, [4]byte{192, 0, 2, 7}, s4.Addr)
	require.EqualValues(t, 5000, htons(s4.Port))

	n = (&rawUDP{v6: true}).sockaddr(&sa, v4, 5000)
	require.EqualValues(t, unix.SizeofSockaddrInet6, n)
	require.EqualValues(t, unix.AF_INET6, sa.Family)
	require.Equal(t, net.ParseIP("::ffff:192.0.2.7").To16(), net.IP(sa.Addr[:]))
	require.EqualValues(t, 5000, htons(sa.Port))
	require.Equal(t, "[::ffff:192.0.2.7]:5000", sockaddrAddrPort(&sa).String())

	v6 := net.ParseIP("2001:db8::7").To16()
	n = (&rawUDP{v6: true}).sockaddr(&sa, v6, 443)
	require.EqualValues(t, unix.SizeofSockaddrInet6, n)
	require.Equal(t, v6, net.IP(sa.Addr[:]))
	require.Equal(t, "[2001:db8::7]:443", sockaddrAddrPort(&sa).String())
}

// TestRawSocketDoesNotAllocate: once warm, a batched fan-out, a single
// send and a read allocate nothing (they run per packet).
func TestRawSocketDoesNotAllocate(t *testing.T) {
	b := newBatchConn(loopbackUDP(t))
	require.NotNil(t, b.raw)
	rx := loopbackUDP(t)
	require.NoError(t, rx.SetReadBuffer(4<<20))
	to := addrPort(rx)
	pkt := make([]byte, 1000)
	fanout := func() {
		b.begin()
		for i := 0; i < 10; i++ {
			_, _ = b.WriteToAddrPort(pkt, to)
		}
		b.end()
	}
	fanout() // the first batch allocates its headers once
	require.Zero(t, testing.AllocsPerRun(50, fanout), "batched fan-out")
	require.Zero(t, testing.AllocsPerRun(50, func() { _, _ = b.WriteToAddrPort(pkt, to) }), "single send")

	// Reads: the peer sends, the node reads.
	peer := loopbackUDP(t)
	self := addrPort(b.UDPConn)
	buf := make([]byte, 2000)
	read := func() {
		_, _ = peer.WriteToUDPAddrPort(pkt, self)
		_, _, _ = b.ReadFromAddrPort(buf)
	}
	read()
	require.Zero(t, testing.AllocsPerRun(50, read), "read (and the peer's send)")
}
