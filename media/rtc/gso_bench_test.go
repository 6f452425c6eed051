//go:build linux && (amd64 || arm64)

package rtc

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkGSOSend measures what UDP GSO would buy the fan-out: a
// simulcast frame of 4 equal packets to 80 subscribers on loopback, sent
// as 320 datagrams in sendmmsg(2) calls, or as 80 messages of 4 segments
// each (UDP_SEGMENT). GSO needs several packets to one subscriber in one
// call, so the node would have to hold a frame's packets until its last;
// BENCHMARKS.md records why that was not done (on this VM GSO saved about
// a fifth of the kernel's per-packet time, because on loopback the
// receiving side still handles every segment).
func BenchmarkGSOSend(b *testing.B) {
	const subs, segs, size = 80, 4, 1128
	sas := make([]unix.RawSockaddrInet4, subs)
	for i := range sas {
		rx := loopbackUDP(b)
		_ = rx.SetReadBuffer(4 << 20)
		putSockaddr((*unix.RawSockaddrInet6)(unsafe.Pointer(&sas[i])), []byte{127, 0, 0, 1}, int(addrPort(rx).Port()))
		go func() {
			buf := make([]byte, 2000)
			for {
				if _, _, err := rx.ReadFromUDP(buf); err != nil {
					return
				}
			}
		}()
	}
	rc, err := loopbackUDP(b).SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	bufs := make([][]byte, subs*segs)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	for _, gso := range []bool{false, true} {
		name := "datagrams"
		if gso {
			name = "gso"
		}
		b.Run(name, func(b *testing.B) {
			var hdrs []mmsghdr
			iovs := make([]unix.Iovec, subs*segs)
			if !gso {
				hdrs = make([]mmsghdr, subs*segs)
				for i := range hdrs {
					iovs[i].Base = &bufs[i][0]
					iovs[i].SetLen(size)
					hdrs[i].hdr = unix.Msghdr{Iov: &iovs[i], Iovlen: 1,
						Name: (*byte)(unsafe.Pointer(&sas[i%subs])), Namelen: unix.SizeofSockaddrInet4}
				}
			} else {
				hdrs = make([]mmsghdr, subs)
				cmsg := make([]byte, subs*unix.CmsgSpace(2))
				for s := range hdrs {
					for k := 0; k < segs; k++ {
						iovs[s*segs+k].Base = &bufs[k*subs+s][0]
						iovs[s*segs+k].SetLen(size)
					}
					c := cmsg[s*unix.CmsgSpace(2):]
					h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
					h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
					h.SetLen(unix.CmsgLen(2))
					*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = size
					hdrs[s].hdr = unix.Msghdr{Iov: &iovs[s*segs], Iovlen: segs,
						Name: (*byte)(unsafe.Pointer(&sas[s])), Namelen: unix.SizeofSockaddrInet4,
						Control: &c[0]}
					hdrs[s].hdr.SetControllen(unix.CmsgSpace(2))
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				off := 0
				err := rc.Write(func(fd uintptr) bool {
					for off < len(hdrs) {
						n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd,
							uintptr(unsafe.Pointer(&hdrs[off])), uintptr(len(hdrs)-off), unix.MSG_DONTWAIT, 0, 0)
						switch {
						case e == unix.EAGAIN:
							return false
						case e != 0:
							b.Fatalf("sendmmsg: %v", e)
						}
						off += int(n)
					}
					return true
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs*segs), "ns/packet")
		})
	}
}
