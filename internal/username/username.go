package username

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest user name, in bytes: room for a directory
// user's fully qualified name (alice@corp.example.com) and more than
// the 32 of useradd.
const MaxLen = 64

// ErrInvalid is wrapped by every error Canonical returns.
var ErrInvalid = errors.New("invalid user name")

// allowed says, for error messages, what a user name may hold.
const allowed = "ASCII letters, digits and _ . @ - may appear"

// Canonical returns the canonical form of name: name with ASCII letters
// in lower case. It fails, wrapping ErrInvalid, when the result is not a
// valid user name; the error names the first problem (quoting one
// character at most, never the whole name) so that it is safe to log
// and to show to whoever sent the name.
//
// It is idempotent: a name it returns, it returns unchanged; Valid is
// true exactly for the names it returns.
func Canonical(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(name) > MaxLen {
		return "", fmt.Errorf("%w: %d bytes long, more than %d", ErrInvalid, len(name), MaxLen)
	}
	upper := false
	for i := 0; i < len(name); i++ {
		ch := name[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '_':
		case ch >= 'A' && ch <= 'Z':
			upper = true
		case ch == '.' || ch == '@' || ch == '-':
			if i == 0 {
				return "", fmt.Errorf("%w: starts with %q", ErrInvalid, ch)
			}
		default:
			return "", fmt.Errorf("%w: %s at position %d is not allowed; only %s", ErrInvalid, quoteAt(name, i), i+1, allowed)
		}
	}
	if !upper {
		return name, nil // the common case: no copy
	}
	return strings.ToLower(name), nil // ASCII only here, so byte for byte
}

// Valid reports whether name is a valid user name in canonical form:
// what Canonical returns.
func Valid(name string) bool {
	c, err := Canonical(name)
	return err == nil && c == name
}

// quoteAt describes the character that starts at name[i]: quoted, in
// ASCII with Go escapes for the rest ('\x1b', '\u212a' for the Kelvin
// sign that looks like a K), or the byte when it starts no UTF-8
// sequence.
func quoteAt(name string, i int) string {
	r, size := utf8.DecodeRuneInString(name[i:])
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("byte %#02x (not UTF-8)", name[i])
	}
	return fmt.Sprintf("character %+q", r)
}
