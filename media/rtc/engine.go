package rtc

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/logging"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"golang.org/x/net/netutil"

	"entente.dev/entente/media"
)

// Header extension URIs the SFU negotiates (RFC 8285 identifiers).
const (
	extAudioLevel  = sdp.AudioLevelURI            // RFC 6464
	extMid         = sdp.SDESMidURI               // RFC 8843
	extRID         = sdp.SDESRTPStreamIDURI       // RFC 8852
	extRepairedRID = sdp.SDESRepairRTPStreamIDURI // RFC 8852
	extTransportCC = sdp.TransportCCURI           // draft-holmer-rmcat-transport-wide-cc
	maxDataMessage = media.MaxDataMessage
	receiveMTU     = media.MaxPacketSize
)

// The ICE-TCP mux's buffers per connection, and how long an accepted
// connection may stay silent before its first STUN binding request.
const (
	tcpReadBuffer   = 64 << 10
	tcpWriteBuffer  = 1 << 20
	tcpFirstRequest = 10 * time.Second
	tcpMaxConns     = 4096
)

// socketBuffer is the receive buffer asked for the media socket, and the
// send buffer of the socket that sends for it.
const socketBuffer = 4 << 20

// Config is what the WebRTC engine needs. cmd/ fills it from the node's
// configuration.
type Config struct {
	// UDPPort is the one UDP port all peers' media uses (ICE UDP mux).
	UDPPort int
	// TCPPort is the TCP port clients whose UDP is blocked reach the node's
	// media on (ICE-TCP, RFC 6544: passive candidates, RFC 4571 framing);
	// 0 offers no TCP candidates. Trunks between nodes never use it.
	TCPPort int
	// BindAddress is the IP the UDP port listens on.
	BindAddress net.IP
	// AnnounceAddresses are the IPs put into ICE candidates; empty means BindAddress.
	AnnounceAddresses []net.IP
	// IncludeLoopback makes loopback addresses usable as candidates (tests, local nodes).
	IncludeLoopback bool
}

func (c *Config) announce() []net.IP {
	if len(c.AnnounceAddresses) > 0 {
		return c.AnnounceAddresses
	}
	return []net.IP{c.BindAddress}
}

// Engine owns the pion APIs shared by every peer connection of the node and
// the one UDP socket they all use. A participant's two connections have
// different jobs, so they get different interceptors: the publisher
// connection only receives media, the subscriber connection only sends it.
type Engine struct {
	pub *webrtc.API // for publisher connections: the node receives
	// Subscriber connections (the node sends) get an API each, built from
	// these, so that each has its own DTLS hooks (newSubscriber).
	subME *webrtc.MediaEngine
	subIR *interceptor.Registry
	// Federation trunks (trunk.go) both send and receive, between two
	// nodes; they get an API each too, built from these.
	trunkME *webrtc.MediaEngine
	trunkIR *interceptor.Registry
	se      webrtc.SettingEngine
	mux     ice.UDPMux
	tcpMux  ice.TCPMux // nil without Config.TCPPort
	tcpLn   net.Listener
	conn    net.PacketConn
	batch   *batchConn
	log     zerolog.Logger
	// sealed holds buffers for packets sealed on their own (retransmissions).
	sealed sync.Pool
}

// NewEngine opens the node's media UDP port and builds the webrtc.APIs
// from explicit MediaEngines, interceptor registries and one
// SettingEngine, the way pion builds itself (api.go), with one UDP port for
// every peer. Close closes the port.
func NewEngine(cfg Config, log zerolog.Logger) (*Engine, error) {
	// One address family per socket, so sendmmsg gets addresses of its own family.
	network := "udp6"
	if cfg.BindAddress.To4() != nil {
		network = "udp4"
	}
	udp, err := listenMedia(network, &net.UDPAddr{IP: cfg.BindAddress, Port: cfg.UDPPort})
	if err != nil {
		return nil, fmt.Errorf("listen on udp port %d: %w", cfg.UDPPort, err)
	}
	// Every publisher's packets and every subscriber's feedback arrive on
	// this one socket: with the kernel's default buffer (208 KiB) a few
	// milliseconds without a processor lose incoming packets, and each lost
	// one is lost for every subscriber (seen in bench/compare.sh runs on a
	// busy machine: up to 2 %, with the socket's drop counter rising).
	// The kernel caps the size at net.core.rmem_max; LiveKit's deployment
	// guide asks for at least 5 MB there too.
	if err := udp.SetReadBuffer(socketBuffer); err != nil {
		log.Warn().Err(err).Msg("media socket receive buffer not enlarged")
	} else if got := readBufferSize(udp); got > 0 && got < socketBuffer {
		log.Info().Int("bytes", got).Int("wanted", socketBuffer).
			Msg("media socket receive buffer capped by net.core.rmem_max; raise it to avoid losing packets under load")
	}
	batch := newBatchConn(udp)
	conn := net.PacketConn(batch)
	lf := newPionLoggerFactory(log)
	mux := webrtc.NewICEUDPMux(lf.NewLogger("ice-mux"), conn)

	pubME, subME, trunkME := &webrtc.MediaEngine{}, &webrtc.MediaEngine{}, &webrtc.MediaEngine{}
	for _, me := range []*webrtc.MediaEngine{pubME, subME, trunkME} {
		if err := registerCodecs(me); err != nil {
			_ = conn.Close()
			return nil, err
		}
		// NACKs towards publishers come from the generator below; NACKs
		// from subscribers are answered from our own packet cache
		// (media.DownTrack.AnswerNack), so no responder interceptor is registered.
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
		me.RegisterFeedback(webrtc.RTCPFeedback{Type: "ccm", Parameter: "fir"}, webrtc.RTPCodecTypeVideo)
		if me != trunkME {
			me.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, webrtc.RTPCodecTypeVideo)
		}
	}
	// The publisher connection: NACKs for what we lost, receiver reports,
	// and transport-wide congestion control feedback so browsers' bandwidth
	// estimation ramps up to send all simulcast layers. Each of these runs
	// a ticker goroutine per connection, so none is registered where it has
	// nothing to do, and each starts only with the first stream it acts on
	// (lazyinterceptor.go): most publisher connections receive nothing.
	pubIR := &interceptor.Registry{}
	gen, err := nack.NewGeneratorInterceptor()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	pubIR.Add(&lazyFactory{inner: gen, wants: wantsNACK})
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	pubIR.Add(&lazyFactory{inner: rr, wants: anyStream})
	tw, err := twcc.NewSenderInterceptor()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	pubIR.Add(&lazyFactory{inner: tw, wants: wantsTWCC})
	// A trunk receives what the far node forwards as a publisher
	// connection does, so it NACKs what it lost and sends receiver reports;
	// what it sends is answered from the down tracks' caches, as for a
	// subscriber. The far node's congestion control is not fed (no
	// transport-cc): it forwards what its publishers send.
	trunkIR := &interceptor.Registry{}
	trunkIR.Add(&lazyFactory{inner: gen, wants: wantsNACK})
	trunkIR.Add(&lazyFactory{inner: rr, wants: anyStream})
	// The subscriber connection has no interceptor: sender reports are
	// written by the room through Transport.SendSenderReports from the down tracks' own
	// counters, so nothing runs per packet besides SRTP.
	subIR := &interceptor.Registry{}

	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEUDPMux(mux)
	udpType, tcpType := webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4
	if network == "udp6" {
		udpType, tcpType = webrtc.NetworkTypeUDP6, webrtc.NetworkTypeTCP6
	}
	var tcpMux ice.TCPMux
	var tcpLn net.Listener
	if cfg.TCPPort != 0 {
		tcpLn, err = net.ListenTCP("tcp"+network[3:], &net.TCPAddr{IP: cfg.BindAddress, Port: cfg.TCPPort})
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("listen on tcp port %d: %w", cfg.TCPPort, err)
		}
		// The mux frames ICE and media over each accepted connection (RFC
		// 4571) and hands it to the connection whose ICE username its first
		// STUN request names. A connection that sends no binding request
		// within tcpFirstRequest is closed, so idle sockets do not pile up.
		// Each accepted connection holds a socket until its first
		// request or the timeout: at most tcpMaxConns at once, so a flood
		// of connections cannot take every file descriptor.
		tcpMux = ice.NewTCPMuxDefault(ice.TCPMuxParams{
			Listener: netutil.LimitListener(tcpLn, tcpMaxConns), Logger: lf.NewLogger("ice-tcp-mux"), ReadBufferSize: tcpReadBuffer,
			WriteBufferSize: tcpWriteBuffer, FirstStunBindTimeout: tcpFirstRequest, AliveDurationForConnFromStun: tcpFirstRequest,
		})
		se.SetICETCPMux(tcpMux)
		se.SetNetworkTypes([]webrtc.NetworkType{udpType, tcpType})
	} else {
		se.SetNetworkTypes([]webrtc.NetworkType{udpType})
	}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback || cfg.BindAddress.IsLoopback())
	se.SetReceiveMTU(receiveMTU)
	se.SetSCTPMaxMessageSize(maxDataMessage)
	// Data channels are read by our own loop with a small buffer (datachannel.go).
	se.DetachDataChannels()
	announce := make([]string, 0, len(cfg.announce()))
	for _, ip := range cfg.announce() {
		announce = append(announce, ip.String())
	}
	if !cfg.BindAddress.IsUnspecified() || len(cfg.AnnounceAddresses) > 0 {
		se.SetNAT1To1IPs(announce, webrtc.ICECandidateTypeHost)
	}
	se.SetSRTPProtectionProfiles(
		// Prefer AES-GCM: cheaper per packet than AES-CM + HMAC-SHA1.
		dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80,
	)

	e := &Engine{
		pub:     webrtc.NewAPI(webrtc.WithMediaEngine(pubME), webrtc.WithInterceptorRegistry(pubIR), webrtc.WithSettingEngine(se)),
		subME:   subME,
		subIR:   subIR,
		trunkME: trunkME,
		trunkIR: trunkIR,
		se:      se,
		mux:     mux,
		tcpMux:  tcpMux,
		tcpLn:   tcpLn,
		conn:    conn,
		batch:   batch,
		log:     log,
	}
	e.sealed.New = func() any { b := make([]byte, batchSlot); return &b }
	return e, nil
}

// UDPAddr is the address the media port listens on.
func (e *Engine) UDPAddr() string { return e.conn.LocalAddr().String() }

// TCPAddr is the address the ICE-TCP port listens on, "" without one.
func (e *Engine) TCPAddr() string {
	if e.tcpLn == nil {
		return ""
	}
	return e.tcpLn.Addr().String()
}

// newSubscriber makes a subscriber peer connection whose DTLS handshake
// tells the returned secrets the node's SRTP keys, for direct sends
// (direct.go). RTP header encryption (RFC 9335 cryptex) is not offered:
// forwarded packets carry no header extensions to protect, and the direct
// path's SRTP contexts do not do it.
func (e *Engine) newSubscriber() (*webrtc.PeerConnection, *dtlsSecrets, error) {
	secrets := &dtlsSecrets{}
	se := e.se
	se.SetDTLSKeyLogWriter(secrets)
	se.SetDTLSServerHelloMessageHook(secrets.serverHello)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(e.subME), webrtc.WithInterceptorRegistry(e.subIR), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{RTPHeaderEncryptionPolicy: webrtc.RTPHeaderEncryptionPolicyDisable})
	if err != nil {
		return nil, nil, err
	}
	return pc, secrets, nil
}

// A trunk's liveness (newTrunkConnection).
const (
	trunkDisconnectedAfter = 3 * time.Second
	trunkFailedAfter       = 40 * time.Second
	trunkKeepalive         = time.Second
	trunkSCTPRTOMax        = time.Second
)

// newTrunkConnection makes a federation trunk's peer connection, on the
// node's one UDP port like every other. Both ends are full ICE agents,
// whatever the clients' settings: two lite agents cannot connect (RFC 8445
// section 2.5), and the offerer controls (pion's SetRemoteDescription picks
// the role so when neither is lite). The answerer is the DTLS client, so
// the offerer, as DTLS server, learns its SRTP keys and may send directly
// (dtlskeys.go); the answerer sends through pion.
func (e *Engine) newTrunkConnection() (*webrtc.API, *webrtc.PeerConnection, *dtlsSecrets, error) {
	secrets := &dtlsSecrets{}
	se := e.se
	se.SetLite(false)
	// Nodes reach each other over UDP: a trunk offers no TCP candidates
	// (ICE-TCP is for clients behind firewalls that drop UDP).
	se.SetNetworkTypes(e.udpOnly())
	if err := se.SetAnsweringDTLSRole(webrtc.DTLSRoleClient); err != nil {
		return nil, nil, nil, err
	}
	se.SetDTLSKeyLogWriter(secrets)
	se.SetDTLSServerHelloMessageHook(secrets.serverHello)
	// A trunk outlives a cut link: interrupted after a few quiet seconds
	// (the owner hides the far node's participants), resumed as soon as
	// packets come back, failed only after trunkFailedAfter more. Both ends
	// send media all along, so the first packets through a healed path
	// resume it; consent checks go every second besides. The control
	// channel's retransmissions back off to a second at most, so that what
	// waited during the cut crosses within a second of the path healing
	// (pion's default ceiling is 60 s).
	se.SetICETimeouts(trunkDisconnectedAfter, trunkFailedAfter, trunkKeepalive)
	se.SetSCTPRTOMax(trunkSCTPRTOMax)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(e.trunkME), webrtc.WithInterceptorRegistry(e.trunkIR), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{RTPHeaderEncryptionPolicy: webrtc.RTPHeaderEncryptionPolicyDisable})
	if err != nil {
		return nil, nil, nil, err
	}
	return api, pc, secrets, nil
}

// udpOnly is the UDP network type of the media port's address family.
func (e *Engine) udpOnly() []webrtc.NetworkType {
	if a, ok := e.conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		return []webrtc.NetworkType{webrtc.NetworkTypeUDP6}
	}
	return []webrtc.NetworkType{webrtc.NetworkTypeUDP4}
}

// Close closes the media ports. Call it after every transport is closed
// (media.SFU.Close).
func (e *Engine) Close() error {
	_ = e.mux.Close()
	if e.tcpMux != nil {
		_ = e.tcpMux.Close() // closes the listener and every connection on it
	}
	return e.conn.Close()
}

// registerCodecs registers what Element Call and the LiveKit SDKs send: Opus,
// VP8 and H.264, with the header extensions simulcast and audio levels need.
func registerCodecs(me *webrtc.MediaEngine) error {
	codecs := []struct {
		c webrtc.RTPCodecParameters
		t webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, PayloadType: 125}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"}, PayloadType: 108}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		if err := me.RegisterCodec(c.c, c.t); err != nil {
			return fmt.Errorf("register codec %s: %w", c.c.MimeType, err)
		}
	}
	exts := []struct {
		uri string
		t   webrtc.RTPCodecType
	}{
		{extMid, webrtc.RTPCodecTypeAudio}, {extMid, webrtc.RTPCodecTypeVideo},
		{extRID, webrtc.RTPCodecTypeVideo}, {extRepairedRID, webrtc.RTPCodecTypeVideo},
		{extAudioLevel, webrtc.RTPCodecTypeAudio},
		{extTransportCC, webrtc.RTPCodecTypeVideo},
	}
	for _, x := range exts {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: x.uri}, x.t); err != nil {
			return fmt.Errorf("register header extension %s: %w", x.uri, err)
		}
	}
	return nil
}

// pionLoggerFactory routes pion's logs into zerolog, at debug and above only
// for warnings, so per-packet chatter never reaches the log.
type pionLoggerFactory struct{ log zerolog.Logger }

func newPionLoggerFactory(log zerolog.Logger) logging.LoggerFactory {
	return &pionLoggerFactory{log: log}
}

func (f *pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With().Str("pion", scope).Logger()}
}

type pionLogger struct{ log zerolog.Logger }

func (l *pionLogger) Trace(string)              {}
func (l *pionLogger) Tracef(string, ...any)     {}
func (l *pionLogger) Debug(msg string)          { l.log.Trace().Msg(msg) }
func (l *pionLogger) Debugf(f string, a ...any) { l.log.Trace().Msgf(f, a...) }
func (l *pionLogger) Info(msg string)           { l.log.Debug().Msg(msg) }
func (l *pionLogger) Infof(f string, a ...any)  { l.log.Debug().Msgf(f, a...) }
func (l *pionLogger) Warn(msg string)           { l.log.Debug().Msg(msg) }
func (l *pionLogger) Warnf(f string, a ...any)  { l.log.Debug().Msgf(f, a...) }
func (l *pionLogger) Error(msg string)          { l.log.Warn().Msg(msg) }
func (l *pionLogger) Errorf(f string, a ...any) { l.log.Warn().Msgf(f, a...) }
