package username

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonical(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		err      string // part of the error; "" when accepted
	}{
		{"alice", "alice", ""},
		{"Alice", "alice", ""},
		{"ALICE", "alice", ""},
		{"a", "a", ""},
		{"_x", "_x", ""},
		{"A1", "a1", ""},
		{"1a", "1a", ""},
		{"alice.smith", "alice.smith", ""},
		{"Alice.Smith@Contoso.com", "alice.smith@contoso.com", ""},
		{"svc-1", "svc-1", ""},
		{"a.", "a.", ""},
		{strings.Repeat("A", MaxLen), strings.Repeat("a", MaxLen), ""},

		{"", "", "empty"},
		{strings.Repeat("a", MaxLen+1), "", "65 bytes long, more than 64"},
		{".", "", `starts with '.'`},
		{"..", "", `starts with '.'`},
		{".hidden", "", `starts with '.'`},
		{"../etc", "", `starts with '.'`},
		{"-oProxyCommand", "", `starts with '-'`},
		{"@x", "", `starts with '@'`},
		{"a/b", "", `character '/' at position 2 is not allowed`},
		{`a\b`, "", `character '\\' at position 2`},
		{"alice+node-3", "", `character '+' at position 6`},
		{"a b", "", `character ' ' at position 2`},
		{" alice", "", `character ' ' at position 1`},
		{"alice ", "", `character ' ' at position 6`},
		{"alice\n", "", `character '\n' at position 6`},
		{"\x1b[31malice", "", `character '\x1b' at position 1`},
		{"alice\x00", "", `character '\x00' at position 6`},
		{"a\x7fb", "", `character '\x7f' at position 2`},
		{"a\u009bb", "", `character '\u009b' at position 2`},
		{"a\u202eb", "", `character '\u202e' at position 2`},
		{"jürgen", "", `character '\u00fc' at position 2`},
		{"\u212Aate", "", `character '\u212a' at position 1`}, // Kelvin sign: strings.ToLower would make it "k"
		{"a\xffb", "", `byte 0xff (not UTF-8) at position 2`},
		{"a$", "", `character '$' at position 2`},
		{"a:b", "", `character ':' at position 2`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Canonical(tt.in)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Canonical(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				if !Valid(got) {
					t.Fatalf("Valid(%q) = false for Canonical's answer", got)
				}
				if Valid(tt.in) != (tt.in == tt.want) {
					t.Fatalf("Valid(%q) = %v", tt.in, Valid(tt.in))
				}
				return
			}
			if got != "" || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Canonical(%q) = %q, %v; want ErrInvalid saying %q", tt.in, got, err, tt.err)
			}
			if Valid(tt.in) {
				t.Fatalf("Valid(%q) = true", tt.in)
			}
		})
	}
}

// TestErrorNeverEchoesTheName: the error is safe to log and to send back
// whatever the name held.
func TestErrorNeverEchoesTheName(t *testing.T) {
	name := "ok\x1b]0;owned\x07" + strings.Repeat("x", 20)
	_, err := Canonical(name)
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\x07") || strings.Contains(err.Error(), "owned") {
		t.Fatalf("error %q", err)
	}
}

func TestCanonicalAllocatesOnlyToFold(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = Canonical("alice.smith") }); n != 0 {
		t.Fatalf("%v allocations for a name already canonical", n)
	}
}

// FuzzCanonical: no input panics; an accepted name is valid, equal to
// the input but for the case of ASCII letters, and its own canonical
// form; an error wraps ErrInvalid and holds no control character.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"alice", "Alice", "ALICE+node-3", "../etc", "a/b", "\x1b[31m", "jürgen", "\u212Aate", "a\xff", "", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Canonical(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || out != "" {
				t.Fatalf("Canonical(%q) = %q, %v", in, out, err)
			}
			for _, r := range err.Error() {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
					t.Fatalf("error for %q holds %q: %q", in, r, err)
				}
			}
			return
		}
		if !Valid(out) || len(out) != len(in) || !strings.EqualFold(in, out) || out != strings.ToLower(out) {
			t.Fatalf("Canonical(%q) = %q", in, out)
		}
		if again, err := Canonical(out); err != nil || again != out {
			t.Fatalf("Canonical(%q) = %q, %v: not idempotent", out, again, err)
		}
		if strings.ContainsAny(out, "/\\+ \t\r\n:") || out == "." || out == ".." || len(out) > MaxLen {
			t.Fatalf("accepted unsafe name %q", out)
		}
	})
}

func BenchmarkCanonical(b *testing.B) {
	for _, name := range []string{"alice.smith", "Alice.Smith"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Canonical(name)
			}
		})
	}
}
