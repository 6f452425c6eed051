package turn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/rs/zerolog"
)

// Config is what the TURN server needs. cmd/ fills it from the node's
// configuration.
type Config struct {
	// BindAddress is the IP the TURN ports and the relay sockets listen on.
	BindAddress net.IP
	// UDPPort is the TURN port over UDP; 0 for none.
	UDPPort int
	// TLSPort is the TURN port over TLS (TCP); 0 for none.
	TLSPort int
	// Certificate is the TLS port's certificate; nil generates a
	// self-signed one for Host at start (tests: browsers refuse it unless
	// told to trust it).
	Certificate *tls.Certificate
	// Host is the name or address clients reach the TURN ports at, as put
	// in the URLs; the certificate must be valid for it.
	Host string
	// Realm is the TURN realm (RFC 8656 section 9.2).
	Realm string
	// CredentialLifetime is how long minted credentials can create
	// allocations; an allocation made in time lives on through refreshes.
	CredentialLifetime time.Duration
	// MediaPort is the node's media UDP port, and MediaAddresses the
	// addresses clients are told it is at (the announced ones): the only
	// peers the server relays to.
	MediaPort      int
	MediaAddresses []net.IP
	// MediaLocal is where relayed packets are sent to reach the media
	// port from this host (its bind address; loopback when it binds every
	// interface), so that a 1:1 NAT in front of the node needs no
	// hairpin.
	MediaLocal net.IP
}

// Limits on what clients can hold (every outside input bounded).
const (
	// maxAllocationsPerUser: a participant has two connections, each
	// allocating over UDP and TLS at most, and a few restarts.
	maxAllocationsPerUser = 8
	// maxAllocations is the whole server's.
	maxAllocations = 4096
)

// Server is the embedded TURN server.
type Server struct {
	srv   *turn.Server
	creds *Credentials
	cfg   Config
	log   zerolog.Logger
	spki  string // base64 SHA-256 of the TLS certificate's public key

	mu      sync.Mutex
	perUser map[string]int
	total   atomic.Int64
}

// New starts the TURN server's listeners. Close stops them.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	if cfg.UDPPort == 0 && cfg.TLSPort == 0 {
		return nil, fmt.Errorf("%w: neither a UDP nor a TLS port", ErrConfig)
	}
	if cfg.MediaPort <= 0 || len(cfg.MediaAddresses) == 0 || cfg.MediaLocal == nil {
		return nil, fmt.Errorf("%w: no media address to relay to", ErrConfig)
	}
	if cfg.Host == "" || cfg.Realm == "" {
		return nil, fmt.Errorf("%w: host and realm are required", ErrConfig)
	}
	creds, err := NewCredentials(cfg.CredentialLifetime)
	if err != nil {
		return nil, err
	}
	s := &Server{creds: creds, cfg: cfg, log: log, perUser: map[string]int{}}
	network := "4"
	if cfg.BindAddress.To4() == nil {
		network = "6"
	}
	gen := &relayGenerator{bind: cfg.BindAddress, network: "udp" + network, s: s}
	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.auth,
		QuotaHandler:  s.quota,
		LoggerFactory: pionLoggerFactory{log},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(_, _ net.Addr, _, user, _ string, _ net.Addr, _ int) { s.count(user, 1) },
			OnAllocationDeleted: func(_, _ net.Addr, _, user, _ string) { s.count(user, -1) },
		},
	}
	var closers []func()
	fail := func(err error) (*Server, error) {
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	if cfg.UDPPort != 0 {
		pc, err := net.ListenUDP("udp"+network, &net.UDPAddr{IP: cfg.BindAddress, Port: cfg.UDPPort})
		if err != nil {
			return fail(fmt.Errorf("turn: listen on udp port %d: %w", cfg.UDPPort, err))
		}
		closers = append(closers, func() { _ = pc.Close() })
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn: pc, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	if cfg.TLSPort != 0 {
		cert := cfg.Certificate
		if cert == nil {
			if cert, err = selfSigned(cfg.Host); err != nil {
				return fail(err)
			}
			log.Warn().Str("host", cfg.Host).
				Msg("turn: no certificate configured, using a self-signed one: browsers refuse TURN over TLS with it unless told to trust it; set [turn] cert_file and key_file")
		}
		if s.spki, err = spkiHash(cert); err != nil {
			return fail(err)
		}
		ln, err := tls.Listen("tcp"+network, net.JoinHostPort(cfg.BindAddress.String(), strconv.Itoa(cfg.TLSPort)), &tls.Config{
			Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12,
		})
		if err != nil {
			return fail(fmt.Errorf("turn: listen on tls port %d: %w", cfg.TLSPort, err))
		}
		closers = append(closers, func() { _ = ln.Close() })
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: ln, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return fail(fmt.Errorf("turn: start: %w", err))
	}
	s.srv = srv
	return s, nil
}

// Close stops the listeners and every allocation.
func (s *Server) Close() error { return s.srv.Close() }

// Allocations is the number of live allocations.
func (s *Server) Allocations() int { return int(s.total.Load()) }

// CertificateSPKI is the base64 SHA-256 of the TLS certificate's public
// key (what Chromium's --ignore-certificate-errors-spki-list takes), ""
// without a TLS port.
func (s *Server) CertificateSPKI() string { return s.spki }

// Credentials are the server's credential minter.
func (s *Server) Credentials() *Credentials { return s.creds }

// ICEServer is one entry of a client's ICE server list.
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// ICEServers returns the TURN servers and fresh credentials for identity:
// UDP first, then TLS (browsers try them all and prefer what works best).
func (s *Server) ICEServers(identity string, now time.Time) []ICEServer {
	user, pass := s.creds.Mint(identity, now)
	var urls []string
	host := s.cfg.Host
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		host = "[" + host + "]"
	}
	if s.cfg.UDPPort != 0 {
		urls = append(urls, fmt.Sprintf("turn:%s:%d?transport=udp", host, s.cfg.UDPPort))
	}
	if s.cfg.TLSPort != 0 {
		urls = append(urls, fmt.Sprintf("turns:%s:%d?transport=tcp", host, s.cfg.TLSPort))
	}
	return []ICEServer{{URLs: urls, Username: user, Credential: pass}}
}

// auth is pion's AuthHandler: the key for a username the node minted. An
// expired credential still refreshes an allocation it made in time (and
// adds permissions to it): only Allocate needs a live one, so a call
// outlives its credentials.
func (s *Server) auth(ra *turn.RequestAttributes) (string, []byte, bool) {
	if ra.Realm != s.cfg.Realm {
		return "", nil, false
	}
	password, err := s.creds.Check(ra.Username, time.Now(), ra.Method != stun.MethodAllocate)
	if err != nil {
		s.log.Debug().Err(err).Str("client", ra.SrcAddr.String()).Str("method", ra.Method.String()).Msg("turn: credential refused")
		return "", nil, false
	}
	return ra.Username, turn.GenerateAuthKey(ra.Username, ra.Realm, password), true
}

func (s *Server) quota(username, _ string, _ net.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perUser[username] < maxAllocationsPerUser && s.total.Load() < maxAllocations
}

func (s *Server) count(user string, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perUser[user] += d
	if s.perUser[user] <= 0 {
		delete(s.perUser, user)
	}
	s.total.Add(int64(d))
}

// permit is pion's PermissionHandler: permissions and channels only
// towards the node's media addresses (RFC 8656 section 9: a server may
// refuse a peer; pion answers 403 Forbidden).
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	if s.mediaIP(peer) {
		return true
	}
	s.log.Debug().Str("client", client.String()).Str("peer", peer.String()).Msg("turn: permission refused: not the node's media address")
	return false
}

func (s *Server) mediaIP(ip net.IP) bool {
	for _, a := range s.cfg.MediaAddresses {
		if a.Equal(ip) {
			return true
		}
	}
	return false
}

// relayGenerator makes the relay sockets: UDP only, each wrapped so that
// it exchanges packets with the node's media port and nothing else.
type relayGenerator struct {
	bind    net.IP
	network string
	s       *Server
}

func (g *relayGenerator) Validate() error { return nil }

func (g *relayGenerator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	network := conf.Network
	if network == "udp" {
		network = g.network
	}
	if network != g.network {
		return nil, nil, fmt.Errorf("%w: relay family %s", ErrPeerRefused, conf.Network)
	}
	pc, err := net.ListenUDP(network, &net.UDPAddr{IP: g.bind})
	if err != nil {
		return nil, nil, err
	}
	relay := *pc.LocalAddr().(*net.UDPAddr)
	if relay.IP.IsUnspecified() {
		relay.IP = g.s.cfg.MediaAddresses[0]
	}
	local := &net.UDPAddr{IP: g.s.cfg.MediaLocal, Port: g.s.cfg.MediaPort}
	return &mediaOnlyConn{UDPConn: pc, s: g.s, local: local}, &relay, nil
}

func (g *relayGenerator) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, ErrTCPRelay
}

func (g *relayGenerator) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, ErrTCPRelay
}

// mediaOnlyConn is a relay socket that sends only to the node's media
// port, reached at its local address whatever announced address the
// client named, and receives only from it (reported as the announced
// address the client last sent to, for which it holds the permission).
type mediaOnlyConn struct {
	*net.UDPConn
	s     *Server
	local *net.UDPAddr
	peer  atomic.Pointer[net.UDPAddr]
}

func (c *mediaOnlyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua.Port != c.s.cfg.MediaPort || !c.s.mediaIP(ua.IP) {
		return 0, fmt.Errorf("%w: %s", ErrPeerRefused, addr)
	}
	if old := c.peer.Load(); old == nil || !old.IP.Equal(ua.IP) {
		peer := &net.UDPAddr{IP: append(net.IP(nil), ua.IP...), Port: ua.Port}
		c.peer.Store(peer)
	}
	return c.UDPConn.WriteTo(p, c.local)
}

func (c *mediaOnlyConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.UDPConn.ReadFromUDP(p)
		if err != nil {
			return n, from, err
		}
		if !from.IP.Equal(c.local.IP) || from.Port != c.local.Port {
			continue // not the node's media port: never relayed
		}
		peer := c.peer.Load()
		if peer == nil {
			continue
		}
		return n, peer, nil
	}
}

// selfSigned makes a certificate for host valid for a year.
func selfSigned(host string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("turn: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("turn: self-signed certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func spkiHash(cert *tls.Certificate) (string, error) {
	if len(cert.Certificate) == 0 {
		return "", errors.New("turn: empty certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("turn: certificate: %w", err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// pionLoggerFactory routes pion's logs into zerolog, warnings and errors at
// debug (a client's bad request is not the operator's problem), the rest
// dropped: pion logs usernames at trace.
type pionLoggerFactory struct{ log zerolog.Logger }

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With().Str("pion", scope).Logger()}
}

type pionLogger struct{ log zerolog.Logger }

func (pionLogger) Trace(string)                {}
func (pionLogger) Tracef(string, ...any)       {}
func (pionLogger) Debug(string)                {}
func (pionLogger) Debugf(string, ...any)       {}
func (pionLogger) Info(string)                 {}
func (pionLogger) Infof(string, ...any)        {}
func (l pionLogger) Warn(msg string)           { l.log.Debug().Msg(msg) }
func (l pionLogger) Warnf(f string, a ...any)  { l.log.Debug().Msgf(f, a...) }
func (l pionLogger) Error(msg string)          { l.log.Debug().Msg(msg) }
func (l pionLogger) Errorf(f string, a ...any) { l.log.Debug().Msgf(f, a...) }
