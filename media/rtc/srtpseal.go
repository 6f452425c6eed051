package rtc

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
// srtpOverhead) and returning the packet. roc is the rollover counter the
// packet is sent under (RFC 3711 section 3.3.1): the down track keeps it
// (sendWindow), since it alone knows which numbers it used, so a sealer
// never guesses it from the order packets come in. It is used by one
// goroutine at a time (the down track's lock).
type rtpSealer interface {
	seal(buf []byte, h *rtp.Header, payload []byte, roc uint32) ([]byte, error)
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

func (s *gcmSealer) seal(buf []byte, h *rtp.Header, payload []byte, roc uint32) ([]byte, error) {
	hl := h.MarshalSize()
	if hl+len(payload)+s.aead.Overhead() > len(buf) {
		return nil, errPacketTooLarge
	}
	if _, err := h.MarshalTo(buf[:hl]); err != nil {
		return nil, err
	}
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
// packet is marshalled and encrypted in place, under the rollover counter
// set just before (srtp.Context.SetROC makes the next packet of the SSRC
// use it as it is).
type contextSealer struct {
	ctx     *srtp.Context
	scratch rtp.Header // the header as srtp reads it back
}

func (c *contextSealer) seal(buf []byte, h *rtp.Header, payload []byte, roc uint32) ([]byte, error) {
	hl := h.MarshalSize()
	n := hl + len(payload)
	if n+srtpOverhead > len(buf) {
		return nil, errPacketTooLarge
	}
	if _, err := h.MarshalTo(buf[:hl]); err != nil {
		return nil, err
	}
	copy(buf[hl:n], payload)
	c.ctx.SetROC(h.SSRC, roc)
	return c.ctx.EncryptRTP(buf[:n], buf[:n], &c.scratch)
}
