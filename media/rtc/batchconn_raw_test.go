//go:build linux && (amd64 || arm64)

package rtc

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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

// TestSendSocket: the media socket has a socket that sends for it
// (sendSocket), from the same port, while every datagram sent to that
// port, from many source ports, reaches the media socket; a second bind of
// the port is refused as before; and Close closes both.
func TestSendSocket(t *testing.T) {
	for _, tc := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(tc.network, func(t *testing.T) {
			c, err := listenMedia(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.ip)})
			if tc.network == "udp6" && err != nil {
				t.Skipf("no IPv6 loopback here: %v", err)
			}
			require.NoError(t, err)
			b := newBatchConn(c)
			raw := b.raw.(*rawUDP)
			require.GreaterOrEqual(t, raw.out, 0, "a send socket")
			port := c.LocalAddr().(*net.UDPAddr).Port

			_, err = net.ListenUDP(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.ip), Port: port})
			require.Error(t, err, "the port is still taken")

			// From the node: the peer sees the media port.
			peer, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.ip)})
			require.NoError(t, err)
			defer peer.Close()
			_, err = b.WriteToAddrPort([]byte("hello"), peer.LocalAddr().(*net.UDPAddr).AddrPort())
			require.NoError(t, err)
			buf := make([]byte, 100)
			require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
			n, from, err := peer.ReadFromUDP(buf)
			require.NoError(t, err)
			require.Equal(t, "hello", string(buf[:n]))
			require.Equal(t, port, from.Port)

			// To the node: all of it reaches the media socket.
			const senders = 64
			for i := 0; i < senders; i++ {
				s, err := net.DialUDP(tc.network, nil, c.LocalAddr().(*net.UDPAddr))
				require.NoError(t, err)
				_, err = s.Write([]byte{byte(i)})
				require.NoError(t, err)
				_ = s.Close()
			}
			got := map[byte]bool{}
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			for len(got) < senders {
				n, _, err := b.ReadFromAddrPort(buf)
				require.NoError(t, err, "received %d of %d", len(got), senders)
				require.Equal(t, 1, n)
				got[buf[0]] = true
			}
			out := raw.out
			require.NoError(t, b.Close())
			require.Equal(t, -1, raw.out)
			_, err = unix.GetsockoptInt(out, unix.SOL_SOCKET, unix.SO_TYPE)
			require.Error(t, err, "the send socket is closed")
		})
	}
}

// TestEngineSocketBuffers: the media socket's receive buffer is as large as
// the node asks (socketBuffer) or as net.core.rmem_max lets it be, not the
// kernel's default, which loses packets when the node is busy a few ms.
func TestEngineSocketBuffers(t *testing.T) {
	e := newTestEngine(t)
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	require.NoError(t, err)
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.GreaterOrEqual(t, readBufferSize(e.batch.UDPConn), min(socketBuffer, rmemMax))
	out := e.batch.raw.(*rawUDP).out
	require.GreaterOrEqual(t, out, 0)
	b, err = os.ReadFile("/proc/sys/net/core/wmem_max")
	require.NoError(t, err)
	wmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	snd, err := unix.GetsockoptInt(out, unix.SOL_SOCKET, unix.SO_SNDBUF)
	require.NoError(t, err)
	require.GreaterOrEqual(t, snd/2, min(socketBuffer, wmemMax))
}
