// Package names checks the names people type (display names, room names)
// and makes guest identities, the same way for the join page and the
// Matrix bridge. It imports only the standard library.
package names

import (
	"crypto/rand"
	"strings"
	"unicode"
	"unicode/utf8"
)

// GuestPrefix starts every guest identity, so a guest can never take a
// Matrix user's identity (those are hashes or start with '@').
const GuestPrefix = "guest-"

// Printable reports whether s is 1..limit runes of printable, valid UTF-8.
// Printable excludes control and format characters (bidi overrides,
// zero-width joiners), which would let a name pass for another.
func Printable(s string, limit int) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	n := 0
	for _, c := range s {
		if !unicode.IsPrint(c) {
			return false
		}
		n++
	}
	return n <= limit
}

// GuestIdentity returns GuestPrefix and ten random lowercase base32
// characters (50 bits): two guests of one room never collide in practice.
func GuestIdentity() string {
	return GuestPrefix + strings.ToLower(rand.Text()[:10])
}
