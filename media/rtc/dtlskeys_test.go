package rtc

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
)

// TestDTLSSecretsMatchPionsExporter runs real DTLS handshakes with pion's
// dtls package and checks that the keys dtlsSecrets derives from the
// server's hooks are the server's half of what pion's own exporter gives
// (the one pion/webrtc feeds its SRTP session), for each cipher suite and
// SRTP profile pion offers.
func TestDTLSSecretsMatchPionsExporter(t *testing.T) {
	suites := []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	}
	profiles := []dtls.SRTPProtectionProfile{
		dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80, dtls.SRTP_AEAD_AES_256_GCM,
	}
	cert, err := selfsign.GenerateSelfSigned()
	require.NoError(t, err)
	for _, suite := range suites {
		for _, profile := range profiles {
			t.Run(fmt.Sprintf("%s/%d", dtls.CipherSuiteName(suite), profile), func(t *testing.T) {
				secrets := &dtlsSecrets{}
				server := &dtls.Config{
					Certificates: []tls.Certificate{cert}, CipherSuites: []dtls.CipherSuiteID{suite},
					SRTPProtectionProfiles: []dtls.SRTPProtectionProfile{profile},
					KeyLogWriter:           secrets, ServerHelloMessageHook: secrets.serverHello,
				}
				client := &dtls.Config{
					Certificates: []tls.Certificate{cert}, CipherSuites: []dtls.CipherSuiteID{suite},
					SRTPProtectionProfiles: []dtls.SRTPProtectionProfile{profile}, InsecureSkipVerify: true,
				}
				state := dtlsHandshake(t, server, client)

				key, salt, got, err := secrets.localKeys()
				require.NoError(t, err)
				require.Equal(t, srtp.ProtectionProfile(profile), got)
				keyLen, err := got.KeyLen()
				require.NoError(t, err)
				saltLen, err := got.SaltLen()
				require.NoError(t, err)
				m, err := state.ExportKeyingMaterial(srtpExporterLabel, nil, 2*(keyLen+saltLen))
				require.NoError(t, err)
				require.Equal(t, m[keyLen:2*keyLen], key, "server write key")
				require.Equal(t, m[2*keyLen+saltLen:], salt, "server write salt")
			})
		}
	}
}

// dtlsHandshake runs a DTLS handshake over two loopback UDP sockets and
// returns the server's state.
func dtlsHandshake(t *testing.T, server, client *dtls.Config) dtls.State {
	t.Helper()
	sc, cc := loopbackUDP(t), loopbackUDP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := dtls.Server(sc, cc.LocalAddr(), server)
	require.NoError(t, err)
	defer srv.Close()
	cli, err := dtls.Client(cc, sc.LocalAddr(), client)
	require.NoError(t, err)
	defer cli.Close()
	done := make(chan error, 1)
	go func() { done <- cli.HandshakeContext(ctx) }()
	require.NoError(t, srv.HandshakeContext(ctx))
	require.NoError(t, <-done)
	state, ok := srv.ConnectionState()
	require.True(t, ok)
	return state
}

// TestDTLSSecretsNeedBothHooks: without the ServerHello (the node was the
// DTLS client) or without the key log line, no keys are made up.
func TestDTLSSecretsNeedBothHooks(t *testing.T) {
	s := &dtlsSecrets{}
	_, _, _, err := s.localKeys()
	require.ErrorIs(t, err, errNoDTLSKeys)
	line := "CLIENT_RANDOM " + strings.Repeat("ab", 32) + " " + strings.Repeat("cd", 48) + "\n"
	_, err = s.Write([]byte(line))
	require.NoError(t, err)
	require.True(t, s.logged)
	_, _, _, err = s.localKeys()
	require.ErrorIs(t, err, errNoDTLSKeys)
}

// TestDTLSKeyLogParsing: lines split across writes are joined, and what is
// not a well-formed CLIENT_RANDOM line, or is longer than any such line, is
// ignored without growing the buffer.
func TestDTLSKeyLogParsing(t *testing.T) {
	random, secret := strings.Repeat("0a", 32), strings.Repeat("1b", 48)
	line := "CLIENT_RANDOM " + random + " " + secret + "\n"
	s := &dtlsSecrets{}
	for _, part := range []string{line[:5], line[5:70], line[70:]} {
		n, err := s.Write([]byte(part))
		require.NoError(t, err)
		require.Equal(t, len(part), n)
	}
	require.True(t, s.logged)
	require.Equal(t, byte(0x0a), s.client[31])
	require.Len(t, s.master, 48)

	for _, bad := range []string{
		"CLIENT_RANDOM zz" + random[2:] + " " + secret + "\n",
		"CLIENT_RANDOM " + random[2:] + " " + secret + "\n",
		"SERVER_RANDOM " + random + " " + secret + "\n",
		"CLIENT_RANDOM " + random + "\n",
		"CLIENT_RANDOM " + random + " " + secret[1:] + "\n",
		strings.Repeat("x", 10*maxKeyLogLine) + "\n",
	} {
		s := &dtlsSecrets{}
		_, err := s.Write([]byte(bad))
		require.NoError(t, err)
		require.False(t, s.logged, "%.40q", bad)
		require.LessOrEqual(t, len(s.partial), maxKeyLogLine)
	}
	s = &dtlsSecrets{}
	for i := 0; i < 100; i++ {
		_, _ = s.Write([]byte(strings.Repeat("y", 100)))
	}
	require.LessOrEqual(t, len(s.partial), maxKeyLogLine)
}

// FuzzDTLSKeyLog: nothing written to the key log panics or grows memory
// past one line.
func FuzzDTLSKeyLog(f *testing.F) {
	f.Add([]byte("CLIENT_RANDOM " + strings.Repeat("0a", 32) + " " + strings.Repeat("1b", 48) + "\n"))
	f.Add([]byte("CLIENT_RANDOM\n\n\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		s := &dtlsSecrets{}
		n, err := s.Write(p)
		if err != nil || n != len(p) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if len(s.partial) > maxKeyLogLine {
			t.Fatalf("kept %d bytes of a line", len(s.partial))
		}
	})
}
