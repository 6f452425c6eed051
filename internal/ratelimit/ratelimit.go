package ratelimit

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxClients bounds the addresses a Limiter remembers: at about 200 bytes each, 10 000
// addresses hold 2 MB.
const DefaultMaxClients = 10_000

// ipv6Bits is the prefix an IPv6 client is counted by: one subscriber usually holds a whole /64,
// and counting each address would give them 2^64 buckets.
const ipv6Bits = 64

// Limiter allows each client address perMinute events per minute, with bursts of burst, and
// remembers at most maxClients addresses. It is safe for concurrent use.
type Limiter struct {
	limit      rate.Limit
	burst      int
	maxClients int
	addrs      Resolver
	now        func() time.Time // time.Now; tests set a fixed clock

	mu      sync.Mutex
	clients map[netip.Addr]*client
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a limiter of perMinute events per minute and bursts of burst per client address,
// resolved by addrs. maxClients <= 0 means DefaultMaxClients. perMinute <= 0 means no limit:
// New returns nil, whose Allow allows everything.
func New(perMinute float64, burst, maxClients int, addrs Resolver) *Limiter {
	if perMinute <= 0 {
		return nil
	}
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	return &Limiter{
		limit: rate.Limit(perMinute / 60), burst: max(burst, 1), maxClients: maxClients,
		addrs: addrs, now: time.Now, clients: make(map[netip.Addr]*client),
	}
}

// Allow reports whether the client r comes from may have one more event now; when not, it
// returns how long the client should wait before trying again.
func (l *Limiter) Allow(r *http.Request) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	return l.allow(l.addrs.ClientAddr(r), l.now())
}

func (l *Limiter) allow(addr netip.Addr, now time.Time) (bool, time.Duration) {
	key := clientKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[key]
	if c == nil {
		if len(l.clients) >= l.maxClients {
			l.evict(now)
		}
		c = &client{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = c
	}
	c.seen = now
	res := c.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now) // a refused event costs nothing
		return false, d
	}
	return true, 0
}

// evict makes room for one more address: it forgets every address whose bucket has refilled
// (forgetting it changes nothing), or, if none has, the one seen least recently. The caller
// holds l.mu. It scans the map, which happens only when the map is full.
func (l *Limiter) evict(now time.Time) {
	var oldest netip.Addr
	var oldestSeen time.Time
	for k, c := range l.clients {
		if c.lim.TokensAt(now) >= float64(l.burst) {
			delete(l.clients, k)
			continue
		}
		if oldestSeen.IsZero() || c.seen.Before(oldestSeen) {
			oldest, oldestSeen = k, c.seen
		}
	}
	if len(l.clients) >= l.maxClients {
		delete(l.clients, oldest)
	}
}

// clientKey is the address counted: an IPv4 address, or an IPv6 address's /64.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(ipv6Bits) // cannot fail for 64 bits of an IPv6 address
		return p.Addr()
	}
	return a
}

// Resolver tells the address a request comes from. Its zero value trusts no proxy.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver returns a Resolver that honours X-Forwarded-For on requests from the given
// proxies.
func NewResolver(trustedProxies []netip.Prefix) Resolver {
	return Resolver{trusted: trustedProxies}
}

// ClientAddr is the address r comes from: its peer address, or, when the peer is a trusted
// proxy, the rightmost X-Forwarded-For entry that is not itself a trusted proxy (entries left of
// it were written by the client and prove nothing). A request whose peer address cannot be
// read counts as the unspecified address, so all such requests share one bucket.
func (r Resolver) ClientAddr(req *http.Request) netip.Addr {
	peer := remoteAddr(req.RemoteAddr)
	if !r.isTrusted(peer) {
		return peer
	}
	// Proxies append: the last header line, and its last entry, are the nearest hop.
	hops := req.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		entries := strings.Split(hops[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(entries[j]))
			if err != nil {
				return peer // a malformed hop: the chain cannot be followed further
			}
			a = a.Unmap()
			if !r.isTrusted(a) {
				return a
			}
			peer = a
		}
	}
	return peer
}

func (r Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func remoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap()
	}
	return netip.IPv4Unspecified()
}
