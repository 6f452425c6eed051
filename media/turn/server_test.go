package turn

import (
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// freePort is a port free on 127.0.0.1 for network ("udp" or "tcp").
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testServer starts a TURN server on loopback relaying to media, a UDP
// socket standing for the node's media port, announced as announce.
func testServer(t *testing.T, media *net.UDPConn, announce net.IP) *Server {
	t.Helper()
	s, err := New(Config{
		BindAddress: net.IPv4(127, 0, 0, 1), UDPPort: freePort(t, "udp"), TLSPort: freePort(t, "tcp"),
		Host: "127.0.0.1", Realm: "entente.test", CredentialLifetime: time.Minute,
		MediaPort: media.LocalAddr().(*net.UDPAddr).Port, MediaAddresses: []net.IP{announce}, MediaLocal: net.IPv4(127, 0, 0, 1),
	}, zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func listenMedia(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// client is a pion TURN client of s over conn, with the credentials given.
func client(t *testing.T, s *Server, conn net.PacketConn, server, user, pass string) *turn.Client {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: server, STUNServerAddr: server, Username: user, Password: pass, Realm: s.cfg.Realm, Conn: conn,
		RTO: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, c.Listen())
	t.Cleanup(c.Close)
	return c
}

func udpClient(t *testing.T, s *Server, user, pass string) *turn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return client(t, s, conn, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.UDPPort)), user, pass)
}

// TestRelaysOnlyToTheNode: an allocation may reach the node's media port
// and nothing else. A permission for another address is refused (403,
// pion's PermissionHandler), and a packet to another port of the node's
// address never leaves the relay.
func TestRelaysOnlyToTheNode(t *testing.T) {
	media := listenMedia(t)
	mediaAddr := media.LocalAddr().(*net.UDPAddr)
	s := testServer(t, media, mediaAddr.IP)
	user, pass := s.Credentials().Mint("alice", time.Now())
	c := udpClient(t, s, user, pass)
	relay, err := c.Allocate()
	require.NoError(t, err)
	defer relay.Close()
	require.Eventually(t, func() bool { return s.Allocations() == 1 }, 5*time.Second, 10*time.Millisecond)

	// Another host: refused.
	for _, peer := range []string{"192.0.2.1:7882", "10.77.9.9:7882", "127.0.0.2:" + strconv.Itoa(mediaAddr.Port)} {
		addr, err := net.ResolveUDPAddr("udp4", peer)
		require.NoError(t, err)
		err = c.CreatePermission(addr)
		require.Error(t, err, "permission for %s", peer)
		require.Contains(t, err.Error(), "403", "permission for %s", peer)
	}

	// The node's media port: relayed both ways.
	require.NoError(t, c.CreatePermission(mediaAddr))
	_, err = relay.WriteTo([]byte("ping"), mediaAddr)
	require.NoError(t, err)
	buf := make([]byte, 1500)
	require.NoError(t, media.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, from, err := media.ReadFromUDP(buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf[:n]))
	_, err = media.WriteToUDP([]byte("pong"), from)
	require.NoError(t, err)
	require.NoError(t, relay.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, src, err := relay.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "pong", string(buf[:n]))
	require.Equal(t, mediaAddr.String(), src.String())

	// Another port of the node's address (its HTTP or TURN port, a
	// database): the permission exists (permissions are per IP, RFC 8656
	// section 9), but the relay socket refuses the destination.
	other := listenMedia(t)
	_, err = relay.WriteTo([]byte("sneak"), other.LocalAddr())
	require.NoError(t, err) // a Send indication: no answer either way
	require.NoError(t, other.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
	_, _, err = other.ReadFromUDP(buf)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "a packet reached another port: %v", err)
	// Nor does another port reach the client through the relay.
	_, err = other.WriteToUDP([]byte("in"), relay.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	_, err = media.WriteToUDP([]byte("pong2"), from)
	require.NoError(t, err)
	require.NoError(t, relay.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, _, err = relay.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "pong2", string(buf[:n]))
}

// TestRelaysToTheAnnouncedAddress: behind a 1:1 NAT clients know the node
// by its public address; the relay reaches the media port at its local one.
func TestRelaysToTheAnnouncedAddress(t *testing.T) {
	media := listenMedia(t)
	public := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 7), Port: media.LocalAddr().(*net.UDPAddr).Port}
	s := testServer(t, media, public.IP)
	user, pass := s.Credentials().Mint("bob", time.Now())
	c := udpClient(t, s, user, pass)
	relay, err := c.Allocate()
	require.NoError(t, err)
	defer relay.Close()
	_, err = relay.WriteTo([]byte("ping"), public)
	require.NoError(t, err)
	buf := make([]byte, 1500)
	require.NoError(t, media.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, from, err := media.ReadFromUDP(buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf[:n]))
	_, err = media.WriteToUDP([]byte("pong"), from)
	require.NoError(t, err)
	require.NoError(t, relay.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, src, err := relay.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "pong", string(buf[:n]))
	require.Equal(t, public.String(), src.String())
}

// TestAllocationNeedsGoodCredentials: expired, forged or foreign
// credentials allocate nothing.
func TestAllocationNeedsGoodCredentials(t *testing.T) {
	media := listenMedia(t)
	s := testServer(t, media, media.LocalAddr().(*net.UDPAddr).IP)
	user, pass := s.Credentials().Mint("carol", time.Now())
	expiredUser, expiredPass := s.Credentials().Mint("carol", time.Now().Add(-2*time.Minute))
	other, err := NewCredentials(time.Minute)
	require.NoError(t, err)
	foreignUser, foreignPass := other.Mint("carol", time.Now())
	for _, tc := range []struct{ name, user, pass string }{
		{"expired", expiredUser, expiredPass},
		{"wrong password", user, flipFirst(pass)},
		{"another node's", foreignUser, foreignPass},
		{"not a TURN REST username", "carol", pass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := udpClient(t, s, tc.user, tc.pass)
			_, err := c.Allocate()
			require.Error(t, err)
		})
	}
	require.Equal(t, 0, s.Allocations())
}

// TestTLS: the TLS port serves TURN with the configured (here generated)
// certificate.
func TestTLS(t *testing.T) {
	media := listenMedia(t)
	s := testServer(t, media, media.LocalAddr().(*net.UDPAddr).IP)
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.TLSPort))
	conn, err := tls.Dial("tcp", server, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // self-signed test certificate
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NotEmpty(t, s.CertificateSPKI())
	user, pass := s.Credentials().Mint("dan", time.Now())
	c := client(t, s, turn.NewSTUNConn(conn), server, user, pass)
	relay, err := c.Allocate()
	require.NoError(t, err)
	defer relay.Close()
	_, err = relay.WriteTo([]byte("over tls"), media.LocalAddr())
	require.NoError(t, err)
	buf := make([]byte, 1500)
	require.NoError(t, media.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, _, err := media.ReadFromUDP(buf)
	require.NoError(t, err)
	require.Equal(t, "over tls", string(buf[:n]))
}

func TestICEServers(t *testing.T) {
	media := listenMedia(t)
	s := testServer(t, media, media.LocalAddr().(*net.UDPAddr).IP)
	now := time.Now()
	servers := s.ICEServers("erin", now)
	require.Len(t, servers, 1)
	require.Equal(t, []string{
		"turn:127.0.0.1:" + strconv.Itoa(s.cfg.UDPPort) + "?transport=udp",
		"turns:127.0.0.1:" + strconv.Itoa(s.cfg.TLSPort) + "?transport=tcp",
	}, servers[0].URLs)
	require.NoError(t, s.Credentials().Verify(servers[0].Username, servers[0].Credential, now))
}

// flipFirst changes the first character of a base64 string.
func flipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// TestCloseStopsEverything: closing the server ends its goroutines, the
// relays' included.
func TestCloseStopsEverything(t *testing.T) {
	media := listenMedia(t)
	s, err := New(Config{
		BindAddress: net.IPv4(127, 0, 0, 1), UDPPort: freePort(t, "udp"), TLSPort: freePort(t, "tcp"),
		Host: "127.0.0.1", Realm: "entente.test", CredentialLifetime: time.Minute,
		MediaPort: media.LocalAddr().(*net.UDPAddr).Port, MediaAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, MediaLocal: net.IPv4(127, 0, 0, 1),
	}, zerolog.Nop())
	require.NoError(t, err)
	user, pass := s.Credentials().Mint("fay", time.Now())
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.UDPPort)), Username: user, Password: pass,
		Realm: s.cfg.Realm, Conn: conn, RTO: 20 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, c.Listen())
	relay, err := c.Allocate()
	require.NoError(t, err)
	require.Equal(t, 1, s.Allocations())
	// pion's client leaves its refresh timers running when its server is
	// gone; only the server's goroutines are counted.
	serverGoroutines := func() int {
		n := 0
		for _, g := range strings.Split(stacks(), "\n\n") {
			if strings.Contains(g, "pion/turn/v5/internal/allocation") || strings.Contains(g, "pion/turn/v5.NewServer") ||
				strings.Contains(g, "pion/turn/v5.(*Server)") || strings.Contains(g, "media/turn.") && !strings.Contains(g, "TestCloseStopsEverything") {
				n++
			}
		}
		return n
	}
	require.Positive(t, serverGoroutines(), "the filter sees the server's goroutines")
	// The server goes first, with the allocation live.
	require.NoError(t, s.Close())
	_ = relay.Close() // the client's refresh timers; its deallocation finds no server
	c.Close()
	_ = conn.Close()
	require.Eventually(t, func() bool { return serverGoroutines() == 0 }, 5*time.Second, 20*time.Millisecond,
		"the server's goroutines are still running:\n%s", stacks())
}

func stacks() string {
	b := make([]byte, 1<<20)
	return string(b[:runtime.Stack(b, true)])
}
