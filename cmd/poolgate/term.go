package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// term returns s, a string the admin API sent, as it may be written to
// the operator's terminal: as it is when every character is printable,
// else Go-quoted ("alice\x1b[31m"), so that no byte from the server (a
// user name, a node's health message) can move the cursor, recolour or
// retitle the terminal, or split a table column with a tab.
func term(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// termAll is term for each of ss.
func termAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = term(s)
	}
	return out
}

// termJSON returns indented JSON (as json.Indent wrote it: whitespace
// outside strings is only '\n' and ' ') with every other character that
// is not printable written as a \u escape, which means the same JSON: a
// raw DEL or C1 control (which JSON allows in strings), a bidi override
// or a byte that is not UTF-8 (as U+FFFD) never reaches the terminal.
func termJSON(b []byte) string {
	var out strings.Builder
	out.Grow(len(b))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == '\n' || r == ' ' || (r != utf8.RuneError && strconv.IsPrint(r)):
			out.Write(b[:size])
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
		b = b[size:]
	}
	return out.String()
}
