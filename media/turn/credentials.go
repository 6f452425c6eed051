package turn

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the TURN REST API's HMAC; SHA-1 is what clients and servers share.
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxUsername bounds the usernames the server accepts and mints, well
// under STUN's limit on USERNAME (RFC 8489 section 14.3: 509 bytes).
const maxUsername = 256

// maxIdentity is the longest identity put into a username as it is;
// longer ones, or ones with characters that clients may mangle, are
// replaced by a digest.
const maxIdentity = 128

// Credentials mints and checks TURN REST API credentials with a secret that
// never leaves the node.
type Credentials struct {
	secret   []byte
	lifetime time.Duration
}

// NewCredentials returns Credentials with a fresh random secret, whose
// credentials are valid for lifetime.
func NewCredentials(lifetime time.Duration) (*Credentials, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("%w: credential lifetime %s", ErrConfig, lifetime)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("turn: secret: %w", err)
	}
	return &Credentials{secret: secret, lifetime: lifetime}, nil
}

// Mint returns a username and password for identity, valid until now plus
// the lifetime.
func (c *Credentials) Mint(identity string, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(c.lifetime).Unix(), 10) + ":" + usernameIdentity(identity)
	return username, c.password(username)
}

// Lifetime is how long minted credentials are valid.
func (c *Credentials) Lifetime() time.Duration { return c.lifetime }

// Check returns the password for username when the node minted it, and
// when it has not expired at now unless allowExpired (ErrExpired; the
// password is returned with it). It never compares a password itself: TURN
// proves the password through MESSAGE-INTEGRITY, which the server checks
// with the key derived from what Check returns.
func (c *Credentials) Check(username string, now time.Time, allowExpired bool) (string, error) {
	expiry, err := parseUsername(username)
	if err != nil {
		return "", err
	}
	password := c.password(username)
	if !allowExpired && now.Unix() > expiry {
		return password, ErrExpired
	}
	return password, nil
}

// Verify reports whether password is the one minted for username and
// username is unexpired at now (for callers that hold both, such as tests
// of a client's configuration).
func (c *Credentials) Verify(username, password string, now time.Time) error {
	want, err := c.Check(username, now, false)
	if err != nil {
		return err
	}
	if !hmac.Equal([]byte(want), []byte(password)) {
		return ErrBadPassword
	}
	return nil
}

func (c *Credentials) password(username string) string {
	mac := hmac.New(sha1.New, c.secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername reads the expiry of "<unix seconds>:<identity>".
func parseUsername(username string) (int64, error) {
	if len(username) > maxUsername {
		return 0, fmt.Errorf("%w: %d bytes", ErrMalformedUsername, len(username))
	}
	ts, id, ok := strings.Cut(username, ":")
	if !ok || id == "" || ts == "" || len(ts) > 12 {
		return 0, ErrMalformedUsername
	}
	expiry, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || expiry <= 0 {
		return 0, ErrMalformedUsername
	}
	return expiry, nil
}

// usernameIdentity is identity when it is short printable ASCII, else a
// digest of it: a STUN username must survive SASLprep (RFC 8265) in
// clients, and the identity is only there for the operator to read.
func usernameIdentity(identity string) string {
	ok := identity != "" && len(identity) <= maxIdentity
	for i := 0; ok && i < len(identity); i++ {
		ok = identity[i] > ' ' && identity[i] < 0x7f
	}
	if ok {
		return identity
	}
	sum := sha256.Sum256([]byte(identity))
	return "sha256-" + hex.EncodeToString(sum[:12])
}
