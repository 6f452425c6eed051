package rtc

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func loopbackUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addrPort(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// receive reads n packets from c.
func receive(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 2000)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	for len(out) < n {
		k, _, err := c.ReadFromUDP(buf)
		require.NoError(t, err, "after %d of %d packets", len(out), n)
		out = append(out, append([]byte(nil), buf[:k]...))
	}
	return out
}

func TestBatchConnSendsDirectlyOutsideABatch(t *testing.T) {
	b := newBatchConn(loopbackUDP(t))
	rx := loopbackUDP(t)
	_, err := b.WriteToAddrPort([]byte("now"), addrPort(rx))
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("now")}, receive(t, rx, 1))
	require.Zero(t, b.batches.Load())
}

func TestBatchConnBatchesAFanOut(t *testing.T) {
	b := newBatchConn(loopbackUDP(t))
	rx1, rx2 := loopbackUDP(t), loopbackUDP(t)
	const n = batchMax + 6 // one full batch sent early, the rest at end
	b.begin()
	for i := 0; i < n; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 100+i)
		to := rx1
		if i%2 == 1 {
			to = rx2
		}
		_, err := b.WriteToAddrPort(p, addrPort(to))
		require.NoError(t, err)
		p[0] = 0xff // the caller may reuse its buffer at once
	}
	require.EqualValues(t, 1, b.batches.Load(), "a full batch goes out before end")
	b.end()
	require.EqualValues(t, 2, b.batches.Load())
	require.EqualValues(t, n, b.packets.Load())
	got := append(receive(t, rx1, n/2), receive(t, rx2, n/2)...)
	seen := map[int]bool{}
	for _, p := range got {
		i := int(p[0])
		require.Len(t, p, 100+i, "packet %d intact", i)
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, 100+i), p)
		seen[i] = true
	}
	require.Len(t, seen, n)
}

func TestBatchConnNestedAndConcurrent(t *testing.T) {
	b := newBatchConn(loopbackUDP(t))
	rx := loopbackUDP(t)
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				b.begin()
				_, _ = b.WriteToAddrPort([]byte{byte(w), byte(i)}, addrPort(rx))
				b.end()
			}
		}()
	}
	wg.Wait()
	require.Len(t, receive(t, rx, writers*each), writers*each)
	b.mu.Lock()
	require.Zero(t, b.depth)
	require.Zero(t, b.cur.n, "nothing left queued")
	b.mu.Unlock()
}

// BenchmarkFanOutSend compares sending one packet to 40 subscribers with
// 40 sendto(2) calls and with one sendmmsg(2), on loopback.
func BenchmarkFanOutSend(b *testing.B) {
	const subs = 40
	pkt := make([]byte, 1200)
	for _, batched := range []bool{false, true} {
		name := "sendto"
		if batched {
			name = "sendmmsg"
		}
		b.Run(name, func(b *testing.B) {
			bc := newBatchConn(loopbackUDP(b))
			rx := loopbackUDP(b)
			_ = rx.SetReadBuffer(8 << 20)
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 2000)
				for {
					if _, _, err := rx.ReadFromUDP(buf); err != nil {
						return
					}
				}
			}()
			to := addrPort(rx)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if batched {
					bc.begin()
				}
				for s := 0; s < subs; s++ {
					_, _ = bc.WriteToAddrPort(pkt, to)
				}
				if batched {
					bc.end()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/packet")
			_ = rx.Close()
			<-done
		})
	}
}

// TestBatchConnReadsAndWritesDatagrams covers the socket's own reads and
// single writes (raw system calls on Linux): the sender's address comes
// back, nothing is cut, an empty datagram is a datagram, and closing the
// socket ends a blocked read with net.ErrClosed, as the ICE mux expects.
func TestBatchConnReadsAndWritesDatagrams(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			ip := net.IPv4(127, 0, 0, 1)
			if network == "udp6" {
				ip = net.IPv6loopback
			}
			c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
			if err != nil && network == "udp6" && os.Getenv("CI") != "true" {
				t.Skipf("no IPv6 loopback here: %v", err)
			}
			require.NoError(t, err)
			b := newBatchConn(c)
			peer, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
			require.NoError(t, err)
			defer peer.Close()

			for _, size := range []int{0, 1, 1200, batchSlot + 10} {
				p := bytes.Repeat([]byte{7}, size)
				_, err = peer.WriteToUDPAddrPort(p, addrPort(c))
				require.NoError(t, err)
				buf := make([]byte, 2000)
				n, from, err := b.ReadFromAddrPort(buf)
				require.NoError(t, err)
				require.Equal(t, size, n)
				require.Equal(t, addrPort(peer), from)

				n, err = b.WriteToAddrPort(p, from)
				require.NoError(t, err)
				require.Equal(t, size, n)
				require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
				n, back, err := peer.ReadFromUDPAddrPort(buf)
				require.NoError(t, err)
				require.Equal(t, size, n)
				require.Equal(t, addrPort(c), back)
			}

			done := make(chan error, 1)
			go func() {
				_, _, err := b.ReadFromAddrPort(make([]byte, 100))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, b.Close())
			select {
			case err := <-done:
				require.ErrorIs(t, err, net.ErrClosed)
			case <-time.After(5 * time.Second):
				t.Fatal("a blocked read outlived the socket")
			}
		})
	}
}
