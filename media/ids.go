package media

import (
	"crypto/rand"
)

const idAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// newID returns prefix followed by 12 random characters, the shape of
// LiveKit sids (PA_…, TR_…, RM_…).
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, len(prefix), len(prefix)+len(b))
	copy(out, prefix)
	for _, c := range b {
		out = append(out, idAlphabet[int(c)%len(idAlphabet)])
	}
	return string(out)
}
