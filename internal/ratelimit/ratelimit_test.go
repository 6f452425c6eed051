package ratelimit

import (
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

func TestAllowBucket(t *testing.T) {
	l := New(60, 2, 0, Resolver{}) // one a second, two at once
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	for _, tc := range []struct {
		name  string
		addr  netip.Addr
		at    time.Duration
		ok    bool
		retry time.Duration
	}{
		{"first", a, 0, true, 0},
		{"burst", a, 0, true, 0},
		{"beyond the burst", a, 0, false, time.Second},
		{"refused attempts cost nothing", a, 0, false, time.Second},
		{"another address has its own bucket", b, 0, true, 0},
		{"half refilled", a, 500 * time.Millisecond, false, 500 * time.Millisecond},
		{"refilled one", a, time.Second, true, 0},
		{"empty again", a, time.Second, false, time.Second},
	} {
		ok, retry := l.allow(tc.addr, t0.Add(tc.at))
		require.Equal(t, tc.ok, ok, tc.name)
		require.Equal(t, tc.retry, retry, tc.name)
	}
}

func TestNilLimiterAllows(t *testing.T) {
	l := New(0, 10, 0, Resolver{})
	require.Nil(t, l)
	ok, _ := l.Allow(httptest.NewRequest("POST", "/", nil))
	require.True(t, ok)
}

func TestIPv6CountedBySlash64(t *testing.T) {
	l := New(1, 1, 0, Resolver{})
	ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:2::1"), t0)
	require.True(t, ok)
	ok, _ = l.allow(netip.MustParseAddr("2001:db8:1:2:ffff::9"), t0)
	require.False(t, ok, "same /64")
	ok, _ = l.allow(netip.MustParseAddr("2001:db8:1:3::1"), t0)
	require.True(t, ok, "another /64")
	ok, _ = l.allow(netip.MustParseAddr("::ffff:192.0.2.1"), t0)
	require.True(t, ok)
	ok, _ = l.allow(netip.MustParseAddr("192.0.2.1"), t0)
	require.False(t, ok, "an IPv4-mapped address is the IPv4 address")
}

// Memory stays bounded by maxClients however many addresses come, and the addresses dropped
// first are those whose bucket is full again, then the least recently seen.
func TestMaxClients(t *testing.T) {
	l := New(1, 1, 3, Resolver{})
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), t0.Add(time.Duration(i)*time.Millisecond))
		require.LessOrEqual(t, len(l.clients), 3)
	}
	// The three most recent are remembered: the newest of them is still limited.
	ok, _ := l.allow(netip.AddrFrom4([4]byte{10, 0, 3, 231}), t0.Add(time.Second))
	require.False(t, ok)

	// After a minute every bucket is full: all are forgotten to make room.
	later := t0.Add(2 * time.Minute)
	l.allow(netip.MustParseAddr("192.0.2.99"), later)
	require.Len(t, l.clients, 1)
}

func TestClientAddr(t *testing.T) {
	trusted := NewResolver([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")})
	for _, tc := range []struct {
		name   string
		res    Resolver
		remote string
		xff    []string
		want   string
	}{
		{"no proxy configured: header ignored", Resolver{}, "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"untrusted peer: header ignored", trusted, "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"trusted peer", trusted, "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client-written entries skipped", trusted, "10.1.2.3:4000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", trusted, "[::1]:4000", []string{"198.51.100.1, 10.0.0.7"}, "198.51.100.1"},
		{"several header lines", trusted, "10.1.2.3:4000", []string{"1.2.3.4", "198.51.100.1"}, "198.51.100.1"},
		{"trusted peer without header", trusted, "10.1.2.3:4000", nil, "10.1.2.3"},
		{"malformed hop", trusted, "10.1.2.3:4000", []string{"198.51.100.1, garbage"}, "10.1.2.3"},
		{"all hops trusted", trusted, "10.1.2.3:4000", []string{"10.9.9.9"}, "10.9.9.9"},
		{"mapped peer", trusted, "[::ffff:10.1.2.3]:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"unreadable peer", Resolver{}, "pipe", nil, "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			require.Equal(t, netip.MustParseAddr(tc.want), tc.res.ClientAddr(r))
		})
	}
}
