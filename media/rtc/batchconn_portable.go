//go:build !(linux && (amd64 || arm64))

package rtc

import (
	"net"
	"net/netip"
)

type sysHeaders struct{}

// rawSocket is the socket's system calls made without the Go scheduler's
// bookkeeping (batchconn_raw.go); this platform has none.
type rawSocket interface {
	send(bt *udpBatch) bool
	readFrom(p []byte) (int, netip.AddrPort, error)
	writeTo(p []byte, a netip.AddrPort) (int, error)
	close()
}

func newRawSocket(*net.UDPConn) rawSocket { return nil }

// listenMedia opens the media socket (batchconn_raw.go adds a socket that
// sends for it where the platform allows).
func listenMedia(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
	return net.ListenUDP(network, laddr)
}

// readBufferSize is unknown here.
func readBufferSize(*net.UDPConn) int { return 0 }
