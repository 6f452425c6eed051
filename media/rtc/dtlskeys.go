package rtc

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
)

// dtlsSecrets learns one subscriber connection's SRTP keys from its own
// DTLS handshake, so the node can encrypt and send RTP itself (direct.go)
// instead of through pion's layered write path. pion/webrtc exports neither
// the DTLS connection nor its keying material, but its SettingEngine takes
// two hooks that together reveal what RFC 5764's exporter needs:
//
//   - the ServerHello the node builds when it is the DTLS server: the server
//     random, the cipher suite (whose hash the TLS 1.2 PRF uses) and the
//     SRTP protection profile chosen;
//   - the NSS key log line pion writes once the master secret is known:
//     the client random and the master secret.
//
// When the node is the DTLS client it builds no ServerHello, the server
// random stays unknown and the connection keeps pion's write path.
type dtlsSecrets struct {
	mu      sync.Mutex
	hello   bool
	server  [handshake.RandomLength]byte
	suite   uint16
	profile srtp.ProtectionProfile
	logged  bool
	client  [handshake.RandomLength]byte
	master  []byte
	partial []byte // a key log line not yet ended by a newline
}

// errNoDTLSKeys means the handshake did not reveal the SRTP keys to us.
var errNoDTLSKeys = errors.New("dtls keys unknown")

const (
	keyLogLabel = "CLIENT_RANDOM"
	// maxKeyLogLine bounds what is kept of one key log line: the label, a
	// 32-byte random and a 48-byte master secret in hex, with separators.
	maxKeyLogLine = 256
	// srtpExporterLabel is RFC 5764 section 4.2's exporter label.
	srtpExporterLabel = "EXTRACTOR-dtls_srtp"
)

// serverHello is the DTLS ServerHello hook: it records, and sends the
// message unchanged.
func (s *dtlsSecrets) serverHello(m handshake.MessageServerHello) handshake.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hello = false
	if m.CipherSuiteID == nil {
		return &m
	}
	for _, e := range m.Extensions {
		u, ok := e.(*extension.UseSRTP)
		if !ok || len(u.ProtectionProfiles) != 1 || len(u.MasterKeyIdentifier) != 0 {
			continue
		}
		s.server = m.Random.MarshalFixed()
		s.suite = *m.CipherSuiteID
		s.profile = srtp.ProtectionProfile(u.ProtectionProfiles[0])
		s.hello = true
	}
	return &m
}

// Write takes pion's key log (one "CLIENT_RANDOM <random> <secret>" line
// per handshake, in hex) and keeps the last complete line's values.
func (s *dtlsSecrets) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(s.partial)+len(p) > maxKeyLogLine {
				s.partial = s.partial[:0]
				return n, nil
			}
			s.partial = append(s.partial, p...)
			return n, nil
		}
		line := p[:i]
		if len(s.partial) > 0 {
			if len(s.partial)+len(line) <= maxKeyLogLine {
				line = append(s.partial, line...)
			} else {
				line = nil
			}
			s.partial = s.partial[:0]
		}
		s.keyLogLine(line)
		p = p[i+1:]
	}
	return n, nil
}

func (s *dtlsSecrets) keyLogLine(line []byte) {
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[0]) != keyLogLabel || hex.DecodedLen(len(f[1])) != handshake.RandomLength {
		return
	}
	var client [handshake.RandomLength]byte
	if _, err := hex.Decode(client[:], f[1]); err != nil {
		return
	}
	master := make([]byte, hex.DecodedLen(len(f[2])))
	if _, err := hex.Decode(master, f[2]); err != nil || len(master) == 0 {
		return
	}
	s.client, s.master, s.logged = client, master, true
}

// localKeys derives the node's SRTP master key and salt as the DTLS
// server, the way pion does (srtp keying.go ExtractSessionKeysFromDTLS over
// dtls state.go ExportKeyingMaterial): the exporter output is the client's
// key, the server's key, the client's salt and the server's salt.
func (s *dtlsSecrets) localKeys() (key, salt []byte, profile srtp.ProtectionProfile, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hello || !s.logged {
		return nil, nil, 0, errNoDTLSKeys
	}
	h := prfHash(dtls.CipherSuiteID(s.suite))
	if h == nil {
		return nil, nil, 0, fmt.Errorf("%w: cipher suite %#04x", errNoDTLSKeys, s.suite)
	}
	keyLen, err := s.profile.KeyLen()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w: %w", errNoDTLSKeys, err)
	}
	saltLen, err := s.profile.SaltLen()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w: %w", errNoDTLSKeys, err)
	}
	seed := make([]byte, 0, len(srtpExporterLabel)+2*handshake.RandomLength)
	seed = append(append(append(seed, srtpExporterLabel...), s.client[:]...), s.server[:]...)
	m, err := prf.PHash(s.master, seed, 2*(keyLen+saltLen), h)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w: %w", errNoDTLSKeys, err)
	}
	key = m[keyLen : 2*keyLen]
	salt = m[2*keyLen+saltLen : 2*(keyLen+saltLen)]
	return key, salt, s.profile, nil
}

// prfHash is the TLS 1.2 PRF hash of a cipher suite: SHA-384 for the
// suites named so, SHA-256 for the others pion offers (dtls cipher_suite.go
// cipherSuiteForID, each suite's HashFunc); nil for unknown suites.
func prfHash(id dtls.CipherSuiteID) func() hash.Hash {
	switch id {
	case dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		return sha512.New384
	case dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, dtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, dtls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8:
		return sha256.New
	}
	return nil
}
