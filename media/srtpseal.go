package media

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// rtpSealer turns one outgoing stream's RTP packets into SRTP, writing
// header h and payload into buf (which has room for the packet and
// srtpOverhead) and returning the packet. It is used by one goroutine at a
// time (the down track's lock).
type rtpSealer interface {
	seal(buf []byte, h *rtp.Header, payload []byte) ([]byte, error)
}

// newSealer is an SRTP sealer for one stream with the given master key,
// salt and profile: our own for AES-GCM, pion's context for the others.
func newSealer(key, salt []byte, profile srtp.ProtectionProfile) (rtpSealer, error) {
	switch profile {
	case srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAeadAes256Gcm:
		return newGCMSealer(key, salt)
	}
	ctx, err := srtp.CreateContext(key, salt, profile)
	if err != nil {
		return nil, err
	}
	return &contextSealer{ctx: ctx}, nil
}

// gcmSealer is RFC 7714 AEAD_AES_128_GCM / AEAD_AES_256_GCM for one
// outgoing RTP stream. It does what pion's srtp.Context does for a sender
// (srtp_cipher_aead_aes_gcm.go), without its per-packet SSRC map lookup,
// header re-parse and in-place copy: the payload is encrypted from where
// it was received straight into the send buffer.
type gcmSealer struct {
	aead cipher.AEAD
	salt [12]byte // the session salt
	iv   [12]byte
	// The rollover counter (RFC 3711 section 3.3.1), kept from the highest
	// sequence number sent.
	roc     uint32
	highest uint16
	started bool
}

// SRTP key derivation labels (RFC 3711 section 4.3.2).
const (
	labelSRTPEncryption = 0x00
	labelSRTPSalt       = 0x02
)

func newGCMSealer(masterKey, masterSalt []byte) (*gcmSealer, error) {
	if len(masterSalt) != 12 {
		return nil, fmt.Errorf("aes-gcm srtp: master salt of %d bytes, want 12", len(masterSalt))
	}
	key, err := srtpKDF(labelSRTPEncryption, masterKey, masterSalt, len(masterKey))
	if err != nil {
		return nil, err
	}
	salt, err := srtpKDF(labelSRTPSalt, masterKey, masterSalt, 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &gcmSealer{aead: aead}
	copy(s.salt[:], salt)
	return s, nil
}

// srtpKDF is the AES-CM key derivation of RFC 3711 section 4.3.3 with a
// key derivation rate of 0, as RFC 7714 section 11 uses it for AES-GCM:
// the master salt XOR the label at byte 7 is the counter block's prefix.
func srtpKDF(label byte, masterKey, masterSalt []byte, n int) ([]byte, error) {
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, err
	}
	var in [aes.BlockSize]byte
	copy(in[:], masterSalt)
	in[7] ^= label
	out := make([]byte, (n+aes.BlockSize-1)/aes.BlockSize*aes.BlockSize)
	for i := 0; i < len(out); i += aes.BlockSize {
		binary.BigEndian.PutUint16(in[14:], uint16(i/aes.BlockSize))
		block.Encrypt(out[i:i+aes.BlockSize], in[:])
	}
	return out[:n], nil
}

// rolloverCounter is the ROC a packet with sequence number seq is sent
// under. Packets are sent in order except retransmissions, which are
// older than the highest sent: one more than half the sequence space
// behind it means the counter wrapped since.
func (s *gcmSealer) rolloverCounter(seq uint16) uint32 {
	if !s.started {
		s.started, s.highest = true, seq
		return s.roc
	}
	switch d := int(seq) - int(s.highest); {
	case d > 0 && d <= 0x8000:
		s.highest = seq
	case d < -0x8000: // wrapped forward
		s.roc++
		s.highest = seq
	case d > 0x8000: // sent before the last wrap
		return s.roc - 1
	}
	return s.roc
}

func (s *gcmSealer) seal(buf []byte, h *rtp.Header, payload []byte) ([]byte, error) {
	hl := h.MarshalSize()
	if hl+len(payload)+s.aead.Overhead() > len(buf) {
		return nil, errPacketTooLarge
	}
	if _, err := h.MarshalTo(buf[:hl]); err != nil {
		return nil, err
	}
	roc := s.rolloverCounter(h.SequenceNumber)
	// RFC 7714 section 8.1: 00 00 || SSRC || ROC || SEQ, XOR the salt.
	s.iv = [12]byte{}
	binary.BigEndian.PutUint32(s.iv[2:], h.SSRC)
	binary.BigEndian.PutUint32(s.iv[6:], roc)
	binary.BigEndian.PutUint16(s.iv[10:], h.SequenceNumber)
	for i := range s.iv {
		s.iv[i] ^= s.salt[i]
	}
	// The header is the associated data; the payload is encrypted into buf
	// after it, with the tag appended.
	return buf[:hl+len(s.aead.Seal(buf[hl:hl], s.iv[:], payload, buf[:hl]))], nil
}

// contextSealer is pion's SRTP context, for the AES-CM profiles: the
// packet is marshalled and encrypted in place.
type contextSealer struct {
	ctx     *srtp.Context
	scratch rtp.Header // the header as srtp reads it back
}

func (c *contextSealer) seal(buf []byte, h *rtp.Header, payload []byte) ([]byte, error) {
	hl := h.MarshalSize()
	n := hl + len(payload)
	if n+srtpOverhead > len(buf) {
		return nil, errPacketTooLarge
	}
	if _, err := h.MarshalTo(buf[:hl]); err != nil {
		return nil, err
	}
	copy(buf[hl:n], payload)
	return c.ctx.EncryptRTP(buf[:n], buf[:n], &c.scratch)
}
